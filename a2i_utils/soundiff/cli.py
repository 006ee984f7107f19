"""``a2i train soundiff`` (fine-tune SounDiff-L or -S) and ``a2i train mini-unclip`` (pretrain the demo's UnCLIP).

Both run on one CPU or GPU as they are, and on several processes with ``accelerate launch -m a2i_utils.cli ...``
(the first process prepares data, embeddings and the miniature; the others wait, then read them from the cache).
A fine-tune that was interrupted (even killed) continues from its last checkpoint when the same command is run
again (``--resume latest``, the default), and a finished one is not trained again; ``--restart`` starts it afresh
and says which checkpoint it discards. Two commands training the same run do not write it at once: the second
waits for the first (see ``soundiff.training.run_lock``).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def train_subparsers(subparsers) -> argparse._SubParsersAction:
    """The sub-verbs of ``a2i train`` (created here unless another part of the course made the verb first)."""
    parser = subparsers.choices.get("train")
    if parser is None:
        parser = subparsers.add_parser("train", help="train a model of the course (see a2i train -h)")
        parser.set_defaults(train_sub=parser.add_subparsers(dest="what", metavar="MODEL", required=True))
    return parser.get_default("train_sub")


def _common(p: argparse.ArgumentParser) -> None:
    """--mode, --cache and --set, shared by both verbs."""
    p.add_argument("--mode", default=None, help="preset: demo or full (default: A2I_MODE or demo)")
    p.add_argument("--cache", type=Path, default=None, help="cache root (default: A2I_CACHE or ~/.cache/a2i)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config override, e.g. --set soundiff.batch_size=8 (repeatable)")


def register(subparsers) -> None:
    """Add ``train soundiff`` and ``train mini-unclip``."""
    sub = train_subparsers(subparsers)
    p = sub.add_parser("soundiff", help="fine-tune the U-Net on (recording, image) pairs: SounDiff-L or -S",
                       description="Fine-tune the UnCLIP U-Net on ImageBind audio embeddings (VAE, text encoder and "
                       "ImageBind frozen). Demo mode fine-tunes the miniature (pretrained first if needed).")
    p.add_argument("--variant", choices=("L", "S"), default="L",
                   help="L: no prompt, all training pairs; S: the 'satellite image' prompt, train stations")
    p.add_argument("--prompt", default=None, help="override the variant's prompt")
    p.add_argument("--subset", default=None, help="override the variant's class subset ('' = all classes)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (paper: 1e-6)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--grad-accum", type=int, default=None)
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of the whole U-Net")
    p.add_argument("--lora-rank", type=int, default=None)
    p.add_argument("--optimizer", choices=("adamw", "adafactor"), default=None)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--resume", choices=("latest",), default="latest",
                   help="continue the same run from its last checkpoint (the default: a re-run finishes the job)")
    p.add_argument("--restart", action="store_true", help="start the run afresh, discarding its checkpoints")
    _common(p)
    p.set_defaults(func=run_train)
    m = sub.add_parser("mini-unclip", help="pretrain the demo's miniature UnCLIP (VAE, normaliser, U-Net)")
    _common(m)
    m.set_defaults(func=run_pretrain)
    register_export(subparsers)


def register_export(subparsers) -> None:
    """Add ``export`` (a2i_utils.soundiff.export): a finished run as a folder plain diffusers loads, with its card."""
    e = subparsers.add_parser("export", help="a fine-tuned SounDiff as a diffusers folder with a model card (and push)",
                              description="Write a finished fine-tune (L, S or a run folder) as a folder that plain "
                              "diffusers loads (a pipeline, the U-Net alone, or a LoRA file), with a generated model "
                              "card, a sample grid and the evaluation results; optionally upload it to the hub.")
    e.add_argument("run", metavar="RUN_OR_VARIANT", help="L, S, or a run folder checkpoints/soundiff/soundiff-...")
    e.add_argument("--out", type=Path, required=True, help="folder to write (new, empty, or an earlier export)")
    e.add_argument("--what", choices=("auto", "pipeline", "unet", "lora"), default="auto",
                   help="auto: a full run as a whole pipeline, a LoRA run as a LoRA file")
    e.add_argument("--results", type=Path, default=None, help="an a2i evaluate --out folder to put in the card")
    e.add_argument("--push-to-hub", default=None, metavar="REPO", help="then upload to this hub repo (your token)")
    e.add_argument("--private", action="store_true", help="create the hub repo private")
    e.add_argument("--prompt", default=None, help="the --prompt the run was trained with, if any")
    e.add_argument("--subset", default=None, help="the --subset the run was trained with, if any")
    e.add_argument("--steps", type=int, default=None, help="the --steps the run was trained with, if any")
    e.add_argument("--lora", action="store_true", help="the run was trained with --lora")
    e.add_argument("--lora-rank", type=int, default=None)
    _common(e)
    e.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export (and push); print the folder and the files written."""
    from a2i_utils.config import get_config
    from a2i_utils.devices import cpu_threads
    from a2i_utils.soundiff.export import export_run, push_to_hub

    cfg = get_config(args.mode, overrides(args))
    with cpu_threads(cfg.soundiff.cpu_threads if cfg.resolved_device() == "cpu" else 0):
        out = export_run(cfg, args.run, args.out, args.what, args.results, args.prompt, args.subset, args.steps)
    print(f"exported to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    if args.push_to_hub:
        print(f"pushed to {args.push_to_hub}: {push_to_hub(out, args.push_to_hub, private=args.private)}")
    return 0


def parse_set(items: list[str]) -> dict:
    """``["soundiff.lr=1e-4", "data.per_class=3"]`` -> overrides, values read as Python literals when they parse."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def overrides(args: argparse.Namespace) -> dict:
    """Config overrides from the command line."""
    out = parse_set(args.set)
    if args.cache:
        out["cache_dir"] = args.cache
    flags = {"lr": "lr", "batch_size": "batch_size", "grad_accum": "grad_accum", "lora_rank": "lora_rank",
             "optimizer": "optimizer", "mixed_precision": "mixed_precision", "checkpoint_every": "checkpoint_every"}
    for attr, field in flags.items():
        if getattr(args, attr, None) is not None:
            out[f"soundiff.{field}"] = getattr(args, attr)
    for attr in ("lora", "grad_checkpointing", "compile", "channels_last"):
        if getattr(args, attr, False):
            out[f"soundiff.{attr}"] = True
    return out


def run_train(args: argparse.Namespace) -> int:
    """Prepare (first process), fine-tune (every process), save; print where the weights are."""
    from accelerate import PartialState

    from a2i_utils.config import get_config
    from a2i_utils.data import prepare_dataset
    from a2i_utils.imagebind.embedder import load_imagebind
    from a2i_utils.soundiff.pipeline import load_pipeline
    from a2i_utils.soundiff.training import (
        finetune,
        latest_checkpoint,
        prepare_training_data,
        run_dir,
        run_key,
        variant_of,
    )

    cfg = get_config(args.mode, overrides(args))
    state = PartialState(cpu=cfg.resolved_device() == "cpu")
    with state.main_process_first():
        dataset = prepare_dataset(cfg, progress=state.is_main_process)
        embedder = load_imagebind(cfg, progress=state.is_main_process)
        pipe = load_pipeline(cfg, progress=state.is_main_process)
        variant = variant_of(cfg, args.variant, args.prompt, args.subset, args.steps)
        pairs = [p for p in dataset.train if variant.subset is None or p.label == variant.subset]
        key = run_key(cfg, getattr(pipe, "key", cfg.soundiff.pretrained_id), variant, embedder.identity,
                      [p.id for p in pairs])
        folder = run_dir(cfg, key)
        if (folder / "history.json").is_file() and not args.restart:  # a re-run of a finished command
            state.print(f"SounDiff-{variant.name} is already fine-tuned: weights in {folder} "
                        "(--restart trains it again)")
            return 0
        data = prepare_training_data(cfg, pipe, pairs, embedder, progress=state.is_main_process)
    state.print(f"SounDiff-{variant.name}: {len(pairs)} pairs, prompt {variant.prompt!r}, {variant.steps} steps, "
                f"{state.num_processes} process(es) -> {folder}")
    resume = None if args.restart else args.resume
    if resume is None and (ckpt := latest_checkpoint(folder)) is not None:
        state.print(f"starting afresh (--restart): {ckpt.name} is discarded")
    history = finetune(cfg, pipe, data, variant, folder, resume=resume, progress=state.is_main_process)
    state.print(f"done: {len(history['loss'])} steps, last loss {history['loss'][-1]:.4f}, "
                f"{history['samples_per_s']} samples/s; weights in {folder}")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    """Pretrain (or find) the miniature UnCLIP of the preset."""
    from a2i_utils.config import get_config
    from a2i_utils.soundiff.mini import load_or_pretrain_mini, mini_dir

    cfg = get_config(args.mode, overrides(args))
    if cfg.soundiff.model != "mini":
        raise ValueError(f"soundiff.model is {cfg.soundiff.model!r}: only the demo's 'mini' UnCLIP is pretrained here")
    pipe = load_or_pretrain_mini(cfg)
    print(f"miniature UnCLIP {pipe.key}: {mini_dir(cfg, pipe.key)}")
    return 0
