"""The latent pass of fine-tuning at 768 px: its peak memory does not grow with the number of pairs.

    .venv/bin/python bench/bench_latents.py                       # 2 and 16 images (8x), batch 2, this CPU
    .venv/bin/python bench/bench_latents.py --sizes 1,8 --batch 1
    .venv/bin/python bench/bench_latents.py --smoke               # 64 px, a tiny VAE: checks the script runs

A VAE of the real SD 2.1 (UnCLIP) architecture (``a2i_utils.soundiff.reference.CONFIGS["vae"]``: 83.7 M
parameters, random weights: the pass's memory and time do not depend on their values) encodes synthetic 768 px
PNGs through :func:`a2i_utils.soundiff.latents.cache_latents`, as ``prepare_training_data`` calls it (one view,
``--batch`` images at a time, latents written to a throw-away cache). Each dataset size runs in a fresh child
process, which reports its peak resident set (``ru_maxrss``: it includes the Python, torch and VAE baseline)
and the seconds of the pass (VAE built and images written beforehand). The ratios of the largest to the
smallest size are printed: memory about 1 (<= 1.2), seconds about the ratio of the sizes.
With ``--out FILE`` the report is also written there (bench/results/bench_latents.txt is this script's output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` synthetic RGB PNGs of ``size`` px (smooth random fields plus noise, so they compress like photos)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, (size // 32, size // 32, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        arr = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3)), 0, 255)
        path = folder / f"{i:04d}.png"
        Image.fromarray(arr.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def build_vae(smoke: bool):
    """The SD 2.1 VAE architecture with random weights (``--smoke``: a tiny one of the same class)."""
    import torch
    from diffusers import AutoencoderKL

    from a2i_utils.soundiff.reference import CONFIGS

    torch.manual_seed(0)
    config = {k: v for k, v in CONFIGS["vae"].items() if not k.startswith("_")}
    if smoke:
        config |= {"block_out_channels": [8, 8], "down_block_types": ["DownEncoderBlock2D"] * 2,
                   "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 8, "layers_per_block": 1}
    return AutoencoderKL(**config).eval().requires_grad_(False)


def child(args) -> dict:
    """One dataset size in this (fresh) process: build the VAE, encode the images, report peak RSS and seconds."""
    import torch

    from a2i_utils.soundiff.latents import cache_latents

    torch.set_num_threads(args.threads)
    paths = sorted(Path(args.images).glob("*.png"))[: args.n]
    vae = build_vae(args.smoke)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    with tempfile.TemporaryDirectory(prefix="a2i-bench-latents-") as cache:
        start = time.perf_counter()
        files = cache_latents(vae, paths, args.size, 1, cache, batch=args.batch, progress=False)
        seconds = time.perf_counter() - start
        mean, _ = files.read(torch.tensor([0]), torch.tensor([0]))  # (1, 4, h, w)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"images": len(paths), "seconds": round(seconds, 1), "peak_rss_gib": round(peak, 3),
            "rss_before_pass_gib": round(rss_before, 3), "latent_shape": list(mean.shape[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2,16", help="dataset sizes (images), comma-separated")
    parser.add_argument("--batch", type=int, default=2, help="images encoded at once (soundiff.latent_batch)")
    parser.add_argument("--size", type=int, default=768, help="image side, px")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--smoke", action="store_true", help="64 px, tiny VAE, sizes 1,4: checks the script runs")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.size, args.sizes, args.batch = 64, "1,4", 1
    if args.child:
        print(json.dumps(child(args)))
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    lines = [f"# bench_latents  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {args.size} px"
             f"{' (smoke: tiny VAE)' if args.smoke else ', SD 2.1 VAE architecture (random weights)'}  "
             f"batch {args.batch}, 1 view, threads {args.threads}  cpu ({platform.machine()}, {os.cpu_count()} cores)",
             "# each size in a fresh process; peak = its peak resident set (Python + torch + VAE included)"]
    print("\n".join(lines), flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="a2i-bench-images-") as tmp:
        write_images(Path(tmp), max(sizes), args.size)
        for n in sizes:
            cmd = [sys.executable, __file__, "--child", "--images", tmp, "--n", str(n), "--size", str(args.size),
                   "--batch", str(args.batch), "--threads", str(args.threads)] + (["--smoke"] if args.smoke else [])
            env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(f"size {n} failed:\n{done.stderr[-3000:]}")
            res = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(res)
            line = (f"{n:>5} images  {res['seconds']:>8.1f} s  peak RSS {res['peak_rss_gib']:>6.3f} GiB  "
                    f"(before the pass {res['rss_before_pass_gib']:.3f} GiB)  latents {res['latent_shape']}")
            print(line, flush=True)
            lines.append(line)
    small, large = results[0], results[-1]
    mem_ratio = large["peak_rss_gib"] / small["peak_rss_gib"]
    time_ratio = large["seconds"] / max(small["seconds"], 1e-9)
    lines.append(f"ratio {large['images']}/{small['images']} images = {large['images'] / small['images']:.0f}x: "
                 f"peak memory {mem_ratio:.3f}x, seconds {time_ratio:.2f}x")
    lines.append(json.dumps({"size": args.size, "batch": args.batch, "smoke": args.smoke, "results": results,
                             "memory_ratio": round(mem_ratio, 3), "time_ratio": round(time_ratio, 2)}))
    print("\n".join(lines[-2:]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
