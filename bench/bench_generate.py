"""Generation speed: images/s the way the paper's code sampled against ours, in one run, as a ratio.

1. **paper's way**: fp32, one image at a time, 50 DDIM steps, the recording embedded by ImageBind for every image
   (no embedding cache);
2. **batched**: the same 50 DDIM steps, all images in batches, embeddings from the cache (bf16 autocast on a GPU);
3. **ours**: batched and cached as 2, with DPM-Solver++ (``DPMSolverMultistepScheduler``, the same v-prediction
   config) at fewer steps (``--steps``, default 15).

Demo mode (default, this CPU): the trained miniature (SounDiff-L from the cache, trained first if missing) on
the held-out recordings, one image each, the same seeds in every way; and, because fewer steps are only worth it
if the images stay as good, the scene accuracy (AIC) of ways 1 and 3 with 95% bootstrap intervals and the paired
difference (``a2i_utils.evaluation``).

``--full-dry-run`` (for a lent GPU): the full-size SD 2.1 UnCLIP architecture with random weights at 768 px
(``a2i_utils.soundiff.pipeline.dry_run_pipeline``), random 1024-d embeddings; timing only (random weights make
no meaningful images) and ImageBind-huge is not loaded (its cost per recording is in bench_embed).

    .venv/bin/python bench/bench_generate.py                 # demo, this CPU
    .venv/bin/python bench/bench_generate.py --full-dry-run  # a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from a2i_utils.config import get_config

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: str) -> None:
    """Wait for queued GPU work so that timings are real."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def with_scheduler(pipe, kind: str):
    """A pipeline sharing every component of ``pipe`` with a ``ddim`` or ``dpm`` (DPM-Solver++) sampler."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    cls = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}[kind]
    new = type(pipe)(**pipe.components | {"scheduler": cls.from_config(pipe.scheduler.config)})
    new.set_progress_bar_config(disable=True)
    return new


def timed(fn, device: str) -> tuple[float, object]:
    """(seconds, result) of ``fn()``."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def paper_way(pipe, embed_one, items, steps: int, guidance: float, seed: int) -> np.ndarray:
    """One image at a time, fp32, the embedding recomputed for each: uint8 (N, H, W, 3)."""
    from a2i_utils.soundiff.generate import generate

    out = [generate(pipe, embed_one(x), n=1, seed=seed, steps=steps, guidance=guidance, batch_size=1)[0, 0]
           for x in items]
    return np.stack(out)


def batched_way(pipe, embeds: torch.Tensor, steps: int, guidance: float, seed: int, batch: int,
                device: str) -> np.ndarray:
    """All images in batches from cached embeddings, bf16 autocast on a GPU: uint8 (N, H, W, 3)."""
    from a2i_utils.soundiff.generate import generate

    ctx = torch.autocast("cuda", torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu",
                                                                                                  enabled=False)
    with ctx:
        return generate(pipe, embeds, n=1, seed=seed, steps=steps, guidance=guidance, batch_size=batch)[:, 0]


def demo(args) -> dict:
    """The three ways on the trained miniature, with scene accuracy of ways 1 and 3."""
    from a2i_utils.devices import cpu_threads
    from a2i_utils.evaluation.aic import bootstrap_ci, compare
    from a2i_utils.evaluation.metrics import build_context
    from a2i_utils.evaluation.systems import Loader
    from a2i_utils.imagebind.cache import scale_audio
    from a2i_utils.imagebind.preprocess import load_audio_inputs

    cfg = get_config("demo")
    loader = Loader(cfg, progress=False)
    with cpu_threads(args.threads):
        ctx = build_context(cfg, loader.dataset, loader.embedder, args.n_recordings)
        system = loader.system("soundiff-l")
        sc, emb = cfg.soundiff, loader.embedder
        paths = [p.audio_path for p in ctx.pairs]

        def embed_one(path):
            return scale_audio(emb.embed("audio", load_audio_inputs([path])), cfg.imagebind.audio_scale)  # (1, D)

        ddim, dpm = with_scheduler(system.pipe, "ddim"), with_scheduler(system.pipe, "dpm")
        embeds = loader.unet_input(ctx.audio)
        t1, im1 = timed(lambda: paper_way(ddim, embed_one, paths, 50, sc.guidance_scale, cfg.seed), "cpu")
        t2, _ = timed(lambda: batched_way(ddim, embeds, 50, sc.guidance_scale, cfg.seed, args.batch, "cpu"), "cpu")
        t3, im3 = timed(lambda: batched_way(dpm, embeds, args.steps, sc.guidance_scale, cfg.seed, args.batch, "cpu"),
                        "cpu")
    n = len(paths)
    hits1 = (ctx.judge.predict(im1) == ctx.labels).astype(float)
    hits3 = (ctx.judge.predict(im3) == ctx.labels).astype(float)
    c = compare(hits1, hits3)
    return {"preset": "demo", "device": "cpu", "images": n, "size": int(im1.shape[1]), "system": system.name,
            "paper_images_per_s": round(n / t1, 3), "batched_images_per_s": round(n / t2, 3),
            "ours_images_per_s": round(n / t3, 3), "ours_steps": args.steps, "batch": args.batch,
            "speedup_batched": round(t1 / t2, 2), "speedup_ours": round(t1 / t3, 2), "guidance": sc.guidance_scale,
            "aic_paper": round(float(hits1.mean()), 3), "aic_paper_ci": [round(x, 3) for x in bootstrap_ci(hits1)],
            "aic_ours": round(float(hits3.mean()), 3), "aic_ours_ci": [round(x, 3) for x in bootstrap_ci(hits3)],
            "aic_diff": round(c["diff"], 3), "aic_diff_ci": [round(x, 3) for x in c["diff_ci"]],
            "judge_accuracy": round(ctx.judge_accuracy, 3)}


def full_dry_run(args) -> dict:
    """Timing only: the full-size random pipeline at 768 px on a GPU, fp32 one at a time vs bf16 batched."""
    from a2i_utils.soundiff.pipeline import dry_run_pipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    pipe = dry_run_pipeline(device, torch.float32)
    embeds = torch.randn(args.batch, 1024, device=device) * 20 / 32
    ddim, dpm = with_scheduler(pipe, "ddim"), with_scheduler(pipe, "dpm")
    n_paper = args.paper_images
    batched_way(dpm, embeds[:1], 2, 10.0, 0, 1, device)  # warm-up (kernels, allocator)
    t1, _ = timed(lambda: paper_way(ddim, lambda e: e[None], embeds[:n_paper], 50, 10.0, 0), device)
    pipe_bf16 = dry_run_pipeline(device, torch.bfloat16)
    dpm16 = with_scheduler(pipe_bf16, "dpm")
    batched_way(dpm16, embeds[:2], 2, 10.0, 0, 2, device)
    t3, _ = timed(lambda: batched_way(dpm16, embeds, args.steps, 10.0, 0, args.batch, device), device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"preset": "full-dry-run", "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "size": 768, "paper_images": n_paper, "paper_images_per_s": round(n_paper / t1, 3),
            "ours_images": args.batch, "ours_steps": args.steps, "ours_images_per_s": round(args.batch / t3, 3),
            "speedup_ours": round((t1 / n_paper) / (t3 / args.batch), 2), "peak_gib": round(peak, 1)}


def report(r: dict, threads: int) -> str:
    """The human-readable lines and one JSON line."""
    head = (f"bench_generate  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  preset={r['preset']}  "
            f"device={r['device']}  torch {torch.__version__}  threads={threads}  {platform.machine()}")
    lines = [head]
    if r["preset"] == "demo":
        lines += [
            f"{r['images']} held-out recordings, one {r['size']} px image each, {r['system']}, guidance "
            f"{r['guidance']}, same seeds:",
            f"  1. paper's way (fp32, 1 at a time, 50 DDIM steps, ImageBind per image): {r['paper_images_per_s']:.3f}"
            " images/s",
            f"  2. batched ({r['batch']}), cached embeddings, 50 DDIM steps:           {r['batched_images_per_s']:.3f}"
            f" images/s  ({r['speedup_batched']}x)",
            f"  3. ours: batched, cached, DPM-Solver++ {r['ours_steps']} steps:                "
            f"{r['ours_images_per_s']:.3f} images/s  ({r['speedup_ours']}x)",
            f"scene accuracy (AIC, judge accuracy on the real held-out images {r['judge_accuracy']}):",
            f"  paper's way {r['aic_paper']} {r['aic_paper_ci']}   ours {r['aic_ours']} {r['aic_ours_ci']}   "
            f"ours - paper {r['aic_diff']:+} {r['aic_diff_ci']} (paired bootstrap over recordings)",
        ]
    else:
        lines += [
            f"full-size SD 2.1 UnCLIP architecture, random weights, {r['size']} px, guidance on:",
            f"  paper's way (fp32, 1 at a time, 50 DDIM steps): {r['paper_images_per_s']:.3f} images/s "
            f"({r['paper_images']} images)",
            f"  ours (bf16, batch {r['ours_images']}, DPM-Solver++ {r['ours_steps']} steps): "
            f"{r['ours_images_per_s']:.3f} images/s   speed-up {r['speedup_ours']}x   peak {r['peak_gib']} GiB",
        ]
    return "\n".join(lines + [json.dumps({"bench": "generate", "threads": threads} | r)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full-dry-run", action="store_true", help="full-size random models at 768 px (a GPU)")
    p.add_argument("--steps", type=int, default=15, help="DPM-Solver++ steps of our way")
    p.add_argument("--batch", type=int, default=None, help="batch of our way (demo: 64, dry run: 8)")
    p.add_argument("--n-recordings", type=int, default=None, help="demo: held-out recordings (default: all)")
    p.add_argument("--paper-images", type=int, default=2, help="dry run: images the paper's way (slow)")
    p.add_argument("--threads", type=int, default=1, help="CPU torch threads (the machine is shared)")
    p.add_argument("--out", type=Path, default=None, help="results file (default: bench/results/bench_generate*.txt)")
    args = p.parse_args(argv)
    args.batch = args.batch or (8 if args.full_dry_run else 64)
    torch.set_num_threads(args.threads)
    r = full_dry_run(args) if args.full_dry_run else demo(args)
    text = report(r, args.threads)
    print(text)
    out = args.out or RESULTS / ("bench_generate-dry-run.txt" if args.full_dry_run else "bench_generate.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
