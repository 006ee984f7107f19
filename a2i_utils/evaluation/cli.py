"""``a2i generate AUDIO...`` (images from any recordings) and ``a2i evaluate`` (the metrics table and figures).

``a2i generate`` reads each file with a2i's audio reader (WAV/FLAC/OGG, any rate from 1 to 768 kHz, up to 64 channels,
any length), once: the decode that makes ImageBind's input is the check, and a file whose embedding is cached is not
decoded at all. A file that cannot be used is reported on stderr as ``skipped <file>: <why>``, the others still
generate, and the exit status is 1 when something was skipped (0 when everything generated). A recording longer
than the reader's ``MAX_DECODED_SAMPLES`` (300 s of 48 kHz stereo) is embedded from its start, with a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from a2i_utils.evaluation import NAMED

SKIPPED_STATUS = 1


def _common(p: argparse.ArgumentParser) -> None:
    """--mode, --cache and --set."""
    p.add_argument("--mode", default=None, help="preset: demo or full (default: A2I_MODE or demo)")
    p.add_argument("--cache", type=Path, default=None, help="cache root (default: A2I_CACHE or ~/.cache/a2i)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config override, e.g. --set soundiff.sample_steps=10 (repeatable)")


def register(subparsers) -> None:
    """Add ``generate`` and ``evaluate``."""
    g = subparsers.add_parser(
        "generate", help="images from recordings with the baseline, SounDiff-L/S or a saved fine-tune",
        description="Generate images from audio files (WAV/FLAC/OGG, any rate and length). A file that cannot be "
        "read is reported and skipped; the others still generate; exit status 1 if any was skipped.")
    g.add_argument("audio", nargs="+", type=Path, metavar="AUDIO")
    g.add_argument("--model", default="soundiff-l", help=f"{'|'.join(NAMED)}|PATH (a saved fine-tune folder)")
    g.add_argument("--prompt", default=None, help="text prompt (default: the one the model was trained with)")
    g.add_argument("--seed", type=int, default=None, help="seed of the first image (image j uses seed + j)")
    g.add_argument("--n", type=int, default=1, help="images per recording")
    g.add_argument("--rerank", type=int, default=1, metavar="K",
                   help="draw K candidates per image and keep the one ImageBind matches best to the recording")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: soundiff.sample_steps)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    g.add_argument("--noise-level", type=int, default=None, help="unCLIP embedding noise level (0-999)")
    g.add_argument("--out", type=Path, required=True, help="folder for the PNG images")
    _common(g)
    g.set_defaults(func=run_generate)

    e = subparsers.add_parser(
        "evaluate", help="AIS, IIS, AIC, FD/KD of each system on held-out recordings: table and figures",
        description="Generate images for held-out recordings with each system and write metrics.csv, metrics.md, "
        "metrics.png (means with 95% bootstrap intervals over recordings) and rerank.csv/.md to --out.")
    e.add_argument("--models", nargs="+", default=list(NAMED), help=f"systems: {' '.join(NAMED)} or folders")
    e.add_argument("--prompts", choices=("none", "satellite", "both"), default="both",
                   help="each system without the prompt, with the 'satellite image' prompt, or both (Table 1)")
    e.add_argument("--n-recordings", type=int, default=None,
                   help="held-out test recordings, at least 3 (default: all)")
    e.add_argument("--seeds", type=int, default=None, help="images per recording (default: soundiff.eval_seeds)")
    e.add_argument("--rerank", type=int, default=4, metavar="N", help="best-of-N study on the first model (0: skip)")
    e.add_argument("--out", type=Path, required=True, help="folder for the table and figures")
    _common(e)
    e.set_defaults(func=run_evaluate)


def _config(args: argparse.Namespace):
    """The preset with --cache and --set applied."""
    from a2i_utils.config import get_config
    from a2i_utils.soundiff.cli import parse_set

    ov = parse_set(args.set)
    if args.cache:
        ov["cache_dir"] = args.cache
    return get_config(args.mode, ov)


def embed_each(loader, paths: list[Path]):
    """(embeddings of the usable files (M, D), usable paths, [(path, reason)] of the others).

    Each recording is decoded once, by the reader that makes ImageBind's input (its errors name the file and the
    problem), and not at all when its embedding is cached."""
    bad: list[tuple[Path, str]] = []
    embs = loader.audio_embeddings(list(paths), skipped=bad)  # (M, D)
    refused = {p for p, _ in bad}
    good = [p for p in paths if p not in refused]
    return (embs if good else None), good, bad


def run_generate(args: argparse.Namespace) -> int:
    """Embed each recording, generate, save ``<stem>-<model>-seed<S>.png``; report skipped files."""
    from a2i_utils.devices import cpu_threads

    cfg = _config(args)
    with cpu_threads(cfg.soundiff.cpu_threads if cfg.resolved_device() == "cpu" else 0):
        return _generate(args, cfg)


def _generate(args: argparse.Namespace, cfg) -> int:
    """The work of :func:`run_generate`."""
    from PIL import Image

    from a2i_utils.evaluation.rerank import rerank_generate
    from a2i_utils.evaluation.systems import Loader, draw
    from a2i_utils.io import atomic_write

    if args.n < 1 or args.rerank < 1:
        raise ValueError("--n and --rerank must be at least 1")
    loader = Loader(cfg)
    audio, good, bad = embed_each(loader, list(args.audio))
    for p, why in bad:
        print(f"skipped {why}" if why.startswith(str(p)) else f"skipped {p}: {why}", file=sys.stderr)
    if not good:
        print("nothing generated: no usable recording", file=sys.stderr)
        return SKIPPED_STATUS
    system = loader.system(args.model)
    prompt = system.trained_prompt if args.prompt is None else args.prompt
    seed = cfg.seed if args.seed is None else args.seed
    sc = cfg.soundiff
    kw = {"prompt": prompt, "seed": seed, "steps": args.steps or sc.sample_steps,
          "guidance": sc.guidance_scale if args.guidance is None else args.guidance,
          "noise_level": sc.noise_level if args.noise_level is None else args.noise_level}
    if args.rerank > 1:
        images, _ = rerank_generate(system.pipe, loader.unet_input(audio), audio, loader.embedder, args.rerank,
                                    n=args.n, **kw)
    else:
        images = draw(loader, system, audio, n=args.n, **kw)  # (M, n, H, W, 3)
    tag = system.name.lower().replace(" ", "-")
    for p, imgs in zip(good, images):
        for j, img in enumerate(imgs):
            s = seed + j * args.rerank
            path = args.out / f"{p.stem}-{tag}-seed{s}{f'-best{args.rerank}' if args.rerank > 1 else ''}.png"
            atomic_write(path, lambda tmp, im=img: Image.fromarray(im).save(tmp, format="PNG"))
            print(path)
    print(f"{len(good) * args.n} image(s) from {len(good)} recording(s) with {system.name} (prompt {prompt!r}); "
          f"{len(bad)} file(s) skipped")
    return SKIPPED_STATUS if bad else 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate the systems and write the table, the chart and the reranking study."""
    from a2i_utils.devices import cpu_threads
    from a2i_utils.evaluation.evaluate import evaluate_systems, write_outputs
    from a2i_utils.evaluation.systems import Loader

    if args.n_recordings is not None and args.n_recordings < 3:  # before any image is drawn, not after
        raise ValueError(f"--n-recordings {args.n_recordings}: FD/KD intervals need at least 3 recordings")
    cfg = _config(args)
    loader = Loader(cfg)
    prompts = {"none": ("",), "satellite": (cfg.soundiff.prompt_s,), "both": ("", cfg.soundiff.prompt_s)}[args.prompts]
    with cpu_threads(cfg.soundiff.cpu_threads if cfg.resolved_device() == "cpu" else 0):  # 1 is fastest when shared
        ev = evaluate_systems(loader, args.models, prompts, n_recordings=args.n_recordings, seeds=args.seeds,
                              rerank_n=args.rerank, progress=True)
    for path in write_outputs(ev, args.out):
        print(path)
    return 0
