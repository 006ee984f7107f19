"""bfloat16 convolutions on a CPU without native bfloat16: NCHW against channels-last (the CPU smoke test's case).

``make smoke`` runs notebook 05 with ``soundiff.dtype = "bfloat16"`` on the CPU, so that a cell feeding float32 to a
bf16 model fails here and not on a user's GPU. On a CPU whose oneDNN has no bfloat16 kernels (AVX2 only:
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is False) an NCHW bf16 convolution runs on PyTorch's slow
reference kernel; with channels-last weights it takes oneDNN's path. This script times, from one run:

- one 512-channel 3x3 convolution on a batch of 2 at 64x64 (the VAE decoder's widest layer);
- SD 2.1 UnCLIP's VAE (full size, random weights) decoding 2 latents of 8x8 (64 px images);
- SD 2.1 UnCLIP's U-Net (full size, random weights), one forward pass on 2 latents of 8x8;

each in float32, bfloat16 NCHW and bfloat16 channels-last, and prints the ratios to float32. What it motivates:
:func:`a2i_utils.devices.cpu_channels_last`, applied to the dry-run pipeline's U-Net and VAE.

    .venv/bin/python bench/bench_cpu_bf16.py    # 5-10 minutes on 2 cores; writes bench/results/bench_cpu_bf16.txt
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_time  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_cpu_bf16.txt"
ARMS = (("float32", torch.float32, False), ("bf16_nchw", torch.bfloat16, False), ("bf16_channels_last",
                                                                                   torch.bfloat16, True))


def conv_case(dtype: torch.dtype, channels_last: bool):
    conv = torch.nn.Conv2d(512, 512, 3, padding=1).to(dtype)
    x = torch.randn(2, 512, 64, 64, dtype=dtype)  # (B, C, H, W)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    return lambda: conv(x)


def vae_case(dtype: torch.dtype, channels_last: bool):
    from a2i_utils.soundiff.pipeline import full_size_modules

    vae = full_size_modules("cpu", dtype, names=("vae",))["vae"]
    if channels_last:
        vae.to(memory_format=torch.channels_last)
    z = torch.randn(2, 4, 8, 8, dtype=dtype)  # (B, 4, H/8, W/8) latents of 64 px images
    return lambda: vae.decode(z).sample


def unet_case(dtype: torch.dtype, channels_last: bool):
    from a2i_utils.soundiff.pipeline import full_size_modules

    unet = full_size_modules("cpu", dtype, names=("unet",))["unet"]
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    z = torch.randn(2, 4, 8, 8, dtype=dtype)  # (B, 4, h, w)
    text = torch.randn(2, 77, 1024, dtype=dtype)  # (B, tokens, D) the prompt's hidden states
    labels = torch.randn(2, 2048, dtype=dtype)  # (B, 2 * 1024) noised embedding + its noise-level embedding
    t = torch.tensor([500, 500])
    return lambda: unet(z, t, encoder_hidden_states=text, class_labels=labels).sample


def main() -> None:
    torch.manual_seed(0)
    cases = {"conv_512x64x64": (conv_case, 2), "vae_decode_64px": (vae_case, 1), "unet_forward_8x8": (unet_case, 2)}
    seconds: dict[str, dict[str, float]] = {}
    for case, (make, repeats) in cases.items():
        seconds[case] = {}
        for arm, dtype, channels_last in ARMS:
            fn = make(dtype, channels_last)
            with torch.no_grad():
                fn()  # warm-up (oneDNN picks and caches its kernels)
                seconds[case][arm] = best_time(fn, repeats)
            print(f"{case:18s} {arm:20s} {seconds[case][arm]:8.3f} s", flush=True)
            del fn
    lines = [
        f"# bench_cpu_bf16  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}",
        f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"oneDNN bf16 native: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}",
        "# seconds per call (best of the repeats after a warm-up) and the ratio to float32",
    ]
    for case, arms in seconds.items():
        for arm, s in arms.items():
            lines.append(f"{case:18s} {arm:20s} {s:8.3f} s   x {s / arms['float32']:7.1f} vs float32")
        speedup = arms["bf16_nchw"] / arms["bf16_channels_last"]
        lines.append(f"{case:18s} channels-last speed-up in bf16: x {speedup:.1f}")
    lines.append(json.dumps({"bench": "bench_cpu_bf16", "seconds": seconds}))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(RESULTS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
