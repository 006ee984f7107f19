"""Run the whole demo pipeline once on a tiny configuration and write every stage's results (tests/test_determinism).

    python scripts/determinism_run.py OUT [--seed 42] [--threads 1] [--cache DIR] [--strict]
    python scripts/determinism_run.py OUT --compare OTHER_OUT     # prints the first difference, exit 1 if any

The cache root is ``OUT/cache`` (fresh: nothing is reused) unless ``--cache`` names another. Each stage's
results go, in the course's order, to ``OUT/results.safetensors`` (tensors named ``<stage>/<name>``) and
``OUT/results.json`` (the stage order and the non-tensor results: file hashes, pair ids, scalar metrics);
``--strict`` runs under ``torch.use_deterministic_algorithms(True)``. Two runs with the same seed must write the same
bytes-for-bytes results; :func:`first_difference` names the first stage where two result folders differ.

Stages: ``data`` (the synthetic tree's file hashes and the split), ``features`` (FFT features), ``transformer``
(losses, sampled images), ``imagebind`` (the miniature's losses, audio and vision embeddings), ``unclip`` (the
miniature UnCLIP's VAE and U-Net losses), ``soundiff`` (SounDiff-L's losses, images generated from recordings),
``metrics`` (the scene classifier, then AIS, IIS, AIC, FD and KD of the generated images).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

STAGES = ("data", "features", "transformer", "imagebind", "unclip", "soundiff", "metrics")

# Every model at a size that trains in seconds: the point is identical results, not good ones.
TINY = {
    "device": "cpu",
    "data.per_class": 3, "data.image_size": 32,
    "transformer.image_size": 8, "transformer.d_model": 32, "transformer.n_heads": 2,
    "transformer.n_enc_layers": 1, "transformer.n_dec_layers": 1, "transformer.d_ff": 64,
    "transformer.block_len": 16, "transformer.mem_len": 8, "transformer.dropout": 0.1,  # dropout: its RNG too
    "transformer.batch_size": 4, "transformer.warmup_steps": 2,
    "imagebind.embed_dim": 32, "imagebind.mini_dim": 32, "imagebind.mini_blocks": 1, "imagebind.mini_heads": 2,
    "imagebind.mini_text_dim": 16, "imagebind.mini_vision_epochs": 1, "imagebind.mini_audio_epochs": 2,
    "imagebind.mini_train_batch": 16,
    "soundiff.image_size": 16, "soundiff.mini_vae_channels": (8, 8), "soundiff.mini_unet_channels": (16, 16),
    "soundiff.mini_text_dim": 16, "soundiff.mini_vae_steps": 3, "soundiff.mini_unet_steps": 3,
    "soundiff.mini_batch": 8, "soundiff.batch_size": 4, "soundiff.views": 2, "soundiff.steps": 3,
    "soundiff.checkpoint_every": 2, "soundiff.sample_steps": 2, "soundiff.eval_seeds": 2, "soundiff.clf_steps": 4,
}  # fmt: skip
TRANSFORMER_STEPS = 5  # checkpoints at 3 and 5 (CHECKPOINT_EVERY below): the resumable path is the one run
N_RECORDINGS = 6  # held-out recordings that images are generated from and measured on


def tiny_config(cache: Path, seed: int, threads: int):
    """The demo preset shrunk to TINY, cached in ``cache``, with ``threads`` torch threads wherever it sets them."""
    from a2i_utils.config import get_config

    return get_config("demo", {**TINY, "cache_dir": cache, "seed": seed, "imagebind.cpu_threads": threads,
                               "soundiff.cpu_threads": threads})


def file_hashes(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``, sorted."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def stage_data(cfg, out: dict) -> object:
    from a2i_utils.data import prepare_dataset
    from a2i_utils.data.synth import ensure_synthetic

    ds = prepare_dataset(cfg, progress=False)
    out["files"] = file_hashes(ensure_synthetic(cfg, progress=False))
    out["train"], out["val"] = [p.id for p in ds.train], [p.id for p in ds.val]
    return ds


def stage_features(cfg, ds, out: dict) -> None:
    from a2i_utils.transformer.features import features_for_pairs

    out["train"] = features_for_pairs(ds.train, cfg, progress=False)  # (N, 500, 220)
    out["val"] = features_for_pairs(ds.val, cfg, progress=False)


def stage_transformer(cfg, ds, out: dict) -> None:
    from a2i_utils.transformer.features import FeatureNormalizer, features_for_pairs
    from a2i_utils.transformer.training import build_pixel_dataset, train_or_load

    norm = FeatureNormalizer().fit(features_for_pairs(ds.train, cfg, progress=False))
    train_set = build_pixel_dataset(ds.train, cfg, norm, progress=False)
    val_set = build_pixel_dataset(ds.val, cfg, norm, progress=False)
    model, hist = train_or_load(cfg, train_set, "train-split", steps=TRANSFORMER_STEPS, progress=False,
                                checkpoint_every=3, val_set=val_set, eval_every=TRANSFORMER_STEPS)
    out["losses"] = torch.tensor(hist["losses"], dtype=torch.float64)
    out["evals"] = torch.tensor(hist["evals"], dtype=torch.float64)  # (k, 2): step, held-out bits/dim
    out["weights"] = torch.cat([w.flatten() for w in model.state_dict().values()])
    gen = torch.Generator().manual_seed(cfg.seed)
    out["sampled"] = model.sample(val_set.features[:4], temperature=1.0, generator=gen)  # (4, 8, 8) uint8
    out["greedy"] = model.sample(val_set.features[:2], greedy=True)


def stage_imagebind(cfg, ds, out: dict):
    from a2i_utils.imagebind.cache import embed_files
    from a2i_utils.imagebind.embedder import load_imagebind

    emb = load_imagebind(cfg, progress=False)
    out["vision_loss"] = torch.tensor(emb.info["vision_loss"], dtype=torch.float64)
    out["audio_loss"] = torch.tensor(emb.info["audio_loss"], dtype=torch.float64)
    out["identity"] = emb.identity
    out["audio"] = embed_files(emb, [p.audio_path for p in ds.pairs], "audio", cfg, progress=False)  # (N, D)
    out["vision"] = embed_files(emb, [p.image_path for p in ds.pairs], "vision", cfg, progress=False)
    return emb


def stage_unclip(cfg, ds, emb, out: dict):
    from a2i_utils.soundiff.pipeline import load_pipeline

    pipe = load_pipeline(cfg, progress=False)
    for name in ("vae_loss", "unet_loss"):
        out[name] = torch.tensor(pipe.info[name], dtype=torch.float64)
    out["key"] = pipe.key
    out["unet"] = torch.cat([w.flatten() for w in pipe.unet.state_dict().values()])
    return pipe


def stage_soundiff(cfg, ds, emb, pipe, out: dict):
    from a2i_utils.imagebind.retrieval import one_pair_per_recording
    from a2i_utils.soundiff.generate import generate_for_recordings
    from a2i_utils.soundiff.training import load_or_finetune, variant_of

    tuned, hist = load_or_finetune(cfg, variant_of(cfg, "L"), pipe, ds, emb, progress=False)
    out["loss"] = torch.tensor(hist["loss"], dtype=torch.float64)
    out["lr"] = torch.tensor(hist["lr"], dtype=torch.float64)
    val = one_pair_per_recording(ds.val)[:N_RECORDINGS]
    out["images"] = torch.from_numpy(generate_for_recordings(cfg, tuned, emb, [p.audio_path for p in val], n=2))
    return tuned


def stage_metrics(cfg, ds, emb, tuned, out: dict) -> None:
    from a2i_utils.evaluation.metrics import build_context, evaluate_images
    from a2i_utils.evaluation.scene_classifier import load_or_train_classifier
    from a2i_utils.imagebind.cache import scale_audio
    from a2i_utils.soundiff.generate import generate

    _, info = load_or_train_classifier(cfg, ds, progress=False)
    out["clf_loss"] = torch.tensor(info["loss"], dtype=torch.float64)
    out["clf_val_acc"] = info["val_acc"]
    ctx = build_context(cfg, ds, emb, n_recordings=N_RECORDINGS)
    sc = cfg.soundiff
    images = generate(tuned, scale_audio(ctx.audio, cfg.imagebind.audio_scale), n=sc.eval_seeds, seed=cfg.seed,
                      steps=sc.sample_steps, guidance=sc.guidance_scale, noise_level=sc.noise_level)
    res = evaluate_images(ctx, "SounDiff-L", images)
    for name, values in res.per_recording.items():
        out[name] = torch.from_numpy(np.asarray(values, dtype=np.float64))  # (N,) AIS, IIS, AIC
    out["summary"] = {k: [v[0], list(v[1])] for k, v in res.summary(n_boot=200).items()}  # FD, KD and the rest


def run(out_dir: Path, seed: int, threads: int, strict: bool = False, cache: Path | None = None) -> dict[str, float]:
    """All stages in the course's order; results saved to ``out_dir``; returns the seconds each stage took.

    ``cache``: the cache root (default ``out_dir/cache``; another run's cache: everything is loaded, not made).
    ``strict``: run under ``torch.use_deterministic_algorithms(True)`` (what a GPU run would need; see the README).
    """
    from safetensors.torch import save_file

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(strict)
    cfg = tiny_config(cache or out_dir / "cache", seed, threads)
    results: dict[str, dict] = {s: {} for s in STAGES}
    seconds, t0 = {}, time.perf_counter()

    def done(stage: str) -> None:
        nonlocal t0
        seconds[stage] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()

    ds = stage_data(cfg, results["data"])
    done("data")
    stage_features(cfg, ds, results["features"])
    done("features")
    stage_transformer(cfg, ds, results["transformer"])
    done("transformer")
    emb = stage_imagebind(cfg, ds, results["imagebind"])
    done("imagebind")
    pipe = stage_unclip(cfg, ds, emb, results["unclip"])
    done("unclip")
    tuned = stage_soundiff(cfg, ds, emb, pipe, results["soundiff"])
    done("soundiff")
    stage_metrics(cfg, ds, emb, tuned, results["metrics"])
    done("metrics")
    tensors = {f"{s}/{k}": v.contiguous() for s in STAGES for k, v in results[s].items() if torch.is_tensor(v)}
    plain = {s: {k: v for k, v in results[s].items() if not torch.is_tensor(v)} for s in STAGES}
    save_file(tensors, str(out_dir / "results.safetensors"))
    meta = {"stages": list(STAGES), "seed": seed, "threads": threads, "strict": strict, "seconds": seconds,
            "results": plain}
    (out_dir / "results.json").write_text(json.dumps(meta, indent=1))
    return seconds


# ----------------------------------------------------------------------------------------------------------
# Comparing two runs
# ----------------------------------------------------------------------------------------------------------
def load_results(out_dir: Path) -> tuple[list[str], dict[str, dict]]:
    """(stage order, {stage: {name: tensor or plain value}}) of a finished run."""
    from safetensors.torch import load_file

    meta = json.loads((Path(out_dir) / "results.json").read_text())
    results = {s: dict(meta["results"][s]) for s in meta["stages"]}
    for key, value in load_file(str(Path(out_dir) / "results.safetensors")).items():
        stage, _, name = key.partition("/")
        results[stage][name] = value
    return meta["stages"], results


def _same(a, b) -> bool:
    """Bitwise equality of tensors (dtype, shape and bytes: NaN equals itself, -0.0 does not equal 0.0)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        return a.contiguous().view(torch.uint8).equal(b.contiguous().view(torch.uint8))
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _describe(a, b) -> str:
    """A short account of how two differing values differ."""
    if torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype:
        diff = (a.double() - b.double()).abs()
        return f"{int((diff > 0).sum())} of {a.numel()} values differ, the largest by {float(diff.max()):.3g}"
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in sorted(a.keys() | b.keys()) if not _same(a.get(k), b.get(k))]
        return f"{len(keys)} entries differ, first {keys[0]!r}: {a.get(keys[0])!r} != {b.get(keys[0])!r}"
    return f"{str(a)[:80]} != {str(b)[:80]}"


def first_difference(a: tuple[list[str], dict], b: tuple[list[str], dict]) -> str | None:
    """None when two runs' results are bitwise identical, else ``"<stage>/<name>: how"`` of the first difference."""
    (stages_a, ra), (stages_b, rb) = a, b
    if stages_a != stages_b:
        return f"stages differ: {stages_a} != {stages_b}"
    for stage in stages_a:
        for name in sorted(ra[stage].keys() | rb[stage].keys()):
            if name not in ra[stage] or name not in rb[stage]:
                return f"{stage}/{name}: only in one run"
            if not _same(ra[stage][name], rb[stage][name]):
                return f"{stage}/{name}: {_describe(ra[stage][name], rb[stage][name])}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the cache and the results (created)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the config's cpu_threads too)")
    parser.add_argument("--cache", type=Path, help="cache root (default OUT/cache)")
    parser.add_argument("--strict", action="store_true", help="torch.use_deterministic_algorithms(True)")
    parser.add_argument("--compare", type=Path, help="another run's folder: print its first difference and exit")
    args = parser.parse_args()
    if args.compare:
        diff = first_difference(load_results(args.out), load_results(args.compare))
        print(diff or "identical")
        raise SystemExit(1 if diff else 0)
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(args.out, args.seed, args.threads, args.strict, args.cache)))


if __name__ == "__main__":
    main()
