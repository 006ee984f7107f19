"""Devices, dtypes and threads: small torch helpers shared by every part (a leaf module)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (0: leave as is), then restore the previous number.

    Measured on the shared 2-core machine: a training step of the miniature took 0.11 s with 1 thread and
    1.4 s with 2 while other processes were busy, as the two threads wait on each other.
    """
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(device: str, dtype: torch.dtype):
    """Autocast for reduced precision on a GPU, a no-op otherwise."""
    enabled = dtype != torch.float32 and device.startswith("cuda")
    return torch.autocast("cuda", dtype=dtype, enabled=enabled)


def native_bf16() -> bool:
    """Whether the current CUDA GPU computes bfloat16 natively (compute capability 8.0+: A100, L4, H100).

    ``torch.cuda.is_bf16_supported()`` also answers True on a T4 (7.5), which only emulates bfloat16, slowly."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def cpu_channels_last(module: torch.nn.Module, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Channels-last convolution weights for reduced precision on a CPU without native bfloat16 (AVX2 only).

    There PyTorch runs an NCHW bfloat16 convolution on its slow reference kernel. Measured on the 2-core AVX2 machine
    (``bench/results/bench_cpu_bf16.txt``): channels-last made one 512-channel 3x3 convolution at 64x64 33x faster
    in bf16 (still 9x slower than float32), SD 2.1's VAE decoding two 64 px images 12x, its U-Net's forward 2.5x.
    float32 and GPU modules are returned as they are. Returns ``module`` (converted in place)."""
    if device == "cpu" and dtype != torch.float32:
        module.to(memory_format=torch.channels_last)
    return module


def torch_dtype(name: str) -> torch.dtype:
    """"float32" / "bfloat16" / "float16" -> the torch dtype."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]
