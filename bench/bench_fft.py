"""FFT features per second: one batched rFFT over (B, 500, 441) vs a straightforward per-section loop.

    .venv/bin/python bench/bench_fft.py [--preset demo|full] [--recordings 64] [--repeats 3]

Four ways to turn B recordings of 10 s at 22,050 Hz into (B, 500, 220) log-magnitudes, timed in one run
(best of ``--repeats``), with their ratio to the per-section loop:
  batched       ``fft_features`` on the (B, 220500) batch: one ``torch.fft.rfft`` over (B, 500, 441)
  per_recording ``fft_features`` once per recording: one rFFT over (500, 441) each
  loop_numpy    ``fft_features_loop``: 500 NumPy rFFTs of 441 samples per recording (the reference)
  loop_torch    500 ``torch.fft.rfft`` calls of 441 samples per recording
All four give the same numbers (checked below before timing). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone

import numpy as np
import torch
from _timing import best_time

from a2i_utils.config import get_config
from a2i_utils.transformer.features import fft_features, fft_features_loop, section_length


def loop_torch(waves: np.ndarray, fc) -> torch.Tensor:
    """The per-section loop with torch: one small rFFT call per 441-sample section."""
    length = section_length(fc)
    out = torch.empty(len(waves), fc.n_sections, fc.n_bins)
    for b, wave in enumerate(torch.from_numpy(waves)):
        for s in range(fc.n_sections):
            mag = torch.fft.rfft(wave[s * length : (s + 1) * length]).abs()  # (221,)
            out[b, s] = torch.log(mag[1 : 1 + fc.n_bins] + fc.log_eps)
    return out


def main() -> None:
    """Check the four methods agree, time them, print rates and ratios and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--recordings", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    fc = get_config(args.preset).features
    n = round(fc.sample_rate * fc.duration_s)
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (args.recordings, n)).astype(np.float32)  # (B, 220500)

    methods = {
        "batched": lambda w: fft_features(w, fc).numpy(),
        "per_recording": lambda w: np.stack([fft_features(x, fc).numpy() for x in w]),
        "loop_numpy": lambda w: np.stack([fft_features_loop(x, fc) for x in w]),
        "loop_torch": lambda w: loop_torch(w, fc).numpy(),
    }
    ref = methods["loop_numpy"](waves[:2])
    for name, fn in methods.items():
        np.testing.assert_allclose(fn(waves[:2]), ref, atol=2e-4, rtol=1e-4, err_msg=name)

    loop_count = max(4, args.recordings // 8)  # the loops are slow: time them on fewer recordings
    rates = {}
    for name, fn in methods.items():
        w = waves if name in ("batched", "per_recording") else waves[:loop_count]
        rates[name] = len(w) / best_time(lambda fn=fn, w=w: fn(w), args.repeats)

    print(f"# bench_fft  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}")
    print(f"# {fc.n_sections} sections x {section_length(fc)} samples -> {fc.n_bins} bins; "
          f"{args.recordings} recordings (loops: {loop_count}), best of {args.repeats}")
    base = rates["loop_numpy"]
    for name, rate in rates.items():
        print(f"{name:<14} {rate:10.1f} recordings/s   x{rate / base:7.1f} vs loop_numpy")
    print(json.dumps({"bench": "bench_fft", "preset": args.preset, "recordings_per_s": rates,
                      "speedup_batched_vs_loop_numpy": rates["batched"] / base,
                      "speedup_batched_vs_loop_torch": rates["batched"] / rates["loop_torch"]}))


if __name__ == "__main__":
    main()
