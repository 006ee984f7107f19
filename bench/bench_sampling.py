"""Pixel transformer speed: cached vs recomputed sampling, and local vs full attention in training.

1. Sampling a full image: images/s with the key/value cache (each new pixel attends over its block and memory
   only) vs re-running the decoder over the whole prefix at every step (what the paper's code did). Same model,
   same seed, and the two must give identical pixels (asserted).
2. Training: tokens/s of a teacher-forced forward + backward + Adam step with local 1D attention vs full causal
   attention, same sizes, same batch.

    .venv/bin/python bench/bench_sampling.py                  # demo size, this CPU
    .venv/bin/python bench/bench_sampling.py --preset full    # the paper's size (a GPU)

Figures are ratios measured in one run; the last line is one JSON object with the same numbers.
On a CPU the default is one torch thread: the demo model's matrices are small, and on a shared 2-core machine a
second thread made every step several times slower (thread hand-offs), which would measure the machine's load,
not the algorithm. Pass ``--threads 2`` to see it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from datetime import datetime, timezone

import torch

from a2i_utils.config import get_config, resolve_device
from a2i_utils.transformer.model import PixelTransformer


def sync(device: str) -> None:
    """Wait for queued GPU work so that timings are real."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_sampling(model: PixelTransformer, features: torch.Tensor, use_cache: bool,
                  seed: int) -> tuple[float, torch.Tensor]:
    """Seconds to sample one batch of images, and the images."""
    device = str(features.device)
    gen = torch.Generator(device=features.device).manual_seed(seed)
    sync(device)
    start = time.perf_counter()
    images = model.sample(features, temperature=1.0, generator=gen, use_cache=use_cache, progress=True)
    sync(device)
    return time.perf_counter() - start, images


def time_training(cfg, attention: str, batch: int, steps: int, device: str, n_sections: int, n_bins: int) -> float:
    """Training tokens (pixels) per second with the given decoder self-attention."""
    torch.manual_seed(0)
    tcfg = dataclasses.replace(cfg.transformer, attention=attention, dropout=0.0)
    model = PixelTransformer(tcfg, n_sections=n_sections, n_bins=n_bins).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    f = torch.randn(batch, n_sections, n_bins, device=device)
    px = torch.randint(0, 256, (batch, model.n_pixels), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(f, px).backward()
        opt.step()

    step()  # warm-up (allocations, kernel choice)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * model.n_pixels * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=["demo", "full"])
    parser.add_argument("--images", type=int, default=4, help="images sampled per batch (both paths)")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (default: the preset's)")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32, help="image side (default 32: the paper's 32x32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default on a CPU: 1, see the note in the docstring)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    cfg = get_config(args.preset, {"transformer.image_size": args.image_size})
    device = resolve_device(cfg.device)
    if args.threads or device == "cpu":
        torch.set_num_threads(args.threads or 1)
    t = cfg.transformer
    S, F = cfg.features.n_sections, cfg.features.n_bins
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else None
    print(f"bench_sampling  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  preset={args.preset}  device={device}"
          f"{' (' + gpu + ')' if gpu else ''}  torch {torch.__version__}  threads={torch.get_num_threads()}"
          f"  {platform.processor() or platform.machine()}")
    print(f"model: d_model={t.d_model} heads={t.n_heads} layers={t.n_enc_layers}+{t.n_dec_layers} d_ff={t.d_ff} "
          f"block_len={t.block_len} mem_len={t.mem_len} pixels={t.image_size}x{t.image_size} audio={S}x{F}")

    torch.manual_seed(args.seed)
    model = PixelTransformer(t, n_sections=S, n_bins=F).to(device).eval()
    print(f"parameters: {model.num_parameters():,}")
    features = torch.randn(args.images, S, F, device=device)

    t_cached, img_cached = time_sampling(model, features, use_cache=True, seed=args.seed)
    t_full, img_full = time_sampling(model, features, use_cache=False, seed=args.seed)
    identical = bool(torch.equal(img_cached, img_full))
    assert identical, "cached and uncached sampling gave different pixels for the same seed"
    ips_cached, ips_full = args.images / t_cached, args.images / t_full
    print(f"sampling {args.images} images of {model.n_pixels} pixels, same model and seed:")
    print(f"  with KV cache:         {t_cached:8.2f} s  {ips_cached:8.3f} images/s")
    print(f"  recomputing prefix:    {t_full:8.2f} s  {ips_full:8.3f} images/s")
    print(f"  identical pixels: {identical}   speed-up: {ips_cached / ips_full:.1f}x")

    batch = args.train_batch or t.batch_size
    tps_local = time_training(cfg, "local", batch, args.train_steps, device, S, F)
    tps_full = time_training(cfg, "causal", batch, args.train_steps, device, S, F)
    print(f"training, batch {batch}, {args.train_steps} timed steps (forward + backward + Adam):")
    print(f"  local 1D attention:    {tps_local:10.0f} tokens/s")
    print(f"  full causal attention: {tps_full:10.0f} tokens/s")
    print(f"  local / full: {tps_local / tps_full:.2f}x")

    result = {
        "bench": "sampling", "preset": args.preset, "device": gpu or device, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "images": args.images, "pixels": model.n_pixels,
        "block_len": t.block_len, "mem_len": t.mem_len, "parameters": model.num_parameters(),
        "cached_images_per_s": round(ips_cached, 4), "uncached_images_per_s": round(ips_full, 4),
        "sampling_speedup": round(ips_cached / ips_full, 2), "identical_pixels": identical,
        "train_batch": batch, "train_tokens_per_s_local": round(tps_local, 1),
        "train_tokens_per_s_full": round(tps_full, 1), "train_local_over_full": round(tps_local / tps_full, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
