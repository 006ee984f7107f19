"""ImageBind audio embeddings per second: our preprocessing vs ImageBind's, the demo model, the cache.

    .venv/bin/python bench/bench_embed.py [--preset demo|full] [--recordings 32] [--repeats 3]

Timed in one run (best of ``--repeats``), on ``--recordings`` WAVs of 10 s at 22,050 Hz (16-bit) that the
script writes to a temporary folder:
  ours_1thread      ``load_audio_inputs``: our reader (soundfile + resample) + ImageBind's fbank steps, 1 torch thread
  ours_default      the same with torch's default number of threads
  imagebind         ``imagebind.data.load_and_transform_audio_data`` (its ``torchaudio.load`` swapped for a
                    soundfile reader when torchaudio cannot load without ffmpeg, as here), 1 torch thread
  imagebind_default the same with torch's default number of threads
  (these four are timed in alternation, round after round, so that other load on the machine hits all alike)
  mini_model        the demo miniature ``ImageBindModel`` on ready inputs (B, 3, 1, 128, 204), batch 16
  cache_miss        ``embed_files`` into an empty cache: hash + preprocess + model + write
  cache_hit         ``embed_files`` again: hash + read
On a CUDA GPU it also times ``imagebind_huge`` (random weights) on ready inputs, fp32 vs bf16 autocast.
The two preprocessings are first checked to give the same tensors. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from _timing import best_time

from a2i_utils.compat import import_imagebind, import_imagebind_data
from a2i_utils.config import get_config
from a2i_utils.devices import cpu_threads
from a2i_utils.imagebind.cache import EmbedStats, embed_files
from a2i_utils.imagebind.embedder import Embedder
from a2i_utils.imagebind.mini import build_mini
from a2i_utils.imagebind.preprocess import load_audio_inputs


def write_wavs(folder: Path, n: int, rate: int = 22_050, seconds: float = 10.0) -> list[Path]:
    """``n`` different 16-bit mono WAVs (a chirp in noise)."""
    paths = []
    t = np.arange(int(rate * seconds)) / rate
    for i in range(n):
        rng = np.random.default_rng(i)
        wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i + 200 * t) * t) + 0.05 * rng.standard_normal(t.size)
        p = folder / f"{i:05d}.wav"
        sf.write(p, wave.astype(np.float32), rate, subtype="PCM_16")
        paths.append(p)
    return paths


def interleaved(fns: dict, n: int, repeats: int) -> dict[str, float]:
    """Items per second of each ``fns`` value (best of ``repeats``), timed in alternation so load hits all alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], best_time(fn, 1))
    return {name: n / t for name, t in best.items()}


def imagebind_loader():
    """ImageBind's own audio loader, and whether its torchaudio.load had to be swapped for soundfile."""
    data = import_imagebind_data()
    probe = Path(tempfile.mkdtemp()) / "probe.wav"
    sf.write(probe, np.zeros(16_000, np.float32), 16_000)
    try:
        data.torchaudio.load(str(probe))
        return data.load_and_transform_audio_data, False
    except Exception:  # noqa: BLE001  (torchaudio 2.9 without ffmpeg/torchcodec raises ImportError/RuntimeError)

        def sf_load(path, *args, **kwargs):
            x, r = sf.read(str(path), dtype="float32", always_2d=True)
            return torch.from_numpy(x.T.copy()), r

        data.torchaudio.load = sf_load
        return data.load_and_transform_audio_data, True


def gpu_huge(batch: int, repeats: int) -> dict[str, float]:
    """imagebind_huge (random weights) audio embeddings per second on the GPU, fp32 vs bf16 autocast."""
    model = import_imagebind().imagebind_huge(pretrained=False).cuda().eval()
    x = torch.randn(batch, 3, 1, 128, 204, device="cuda")
    out = {}
    for name, dtype in (("huge_fp32", None), ("huge_bf16", torch.bfloat16)):
        def step(dtype=dtype):
            with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                model({"audio": x})
            torch.cuda.synchronize()

        step()  # warm-up
        out[name] = batch / best_time(step, repeats)
    return out


def main() -> None:
    """Check, time, print rates, ratios and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--recordings", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    cfg = get_config(args.preset, {"cache_dir": tmp / "cache", "imagebind.model": "mini"})
    paths = write_wavs(tmp, args.recordings)
    theirs_fn, swapped = imagebind_loader()
    n, reps = len(paths), args.repeats

    ours = load_audio_inputs(paths)
    theirs = theirs_fn([str(p) for p in paths], "cpu")
    max_diff = (ours - theirs).abs().max().item()
    assert max_diff < 1e-4, f"preprocessings differ by {max_diff}"

    def one_thread(fn):
        """``fn`` run with 1 torch thread."""
        def run():
            with cpu_threads(1):
                fn()
        return run

    rates = interleaved({
        "ours_1thread": one_thread(lambda: load_audio_inputs(paths)),
        "ours_default": lambda: load_audio_inputs(paths),
        "imagebind": one_thread(lambda: theirs_fn([str(p) for p in paths], "cpu")),
        "imagebind_default": lambda: theirs_fn([str(p) for p in paths], "cpu"),
    }, n, reps)

    torch.manual_seed(0)
    emb = Embedder(build_mini(cfg).eval(), identity="bench-mini")
    bs = cfg.imagebind.batch_size
    with cpu_threads(cfg.imagebind.cpu_threads):
        batches = [ours[i : i + bs] for i in range(0, n, bs)]  # each (bs, 3, 1, 128, 204)
        rates["mini_model"] = n / best_time(lambda: [emb.embed("audio", b) for b in batches], reps)
    miss = EmbedStats()
    embed_files(emb, paths, "audio", cfg, progress=False, stats=miss)
    hit = EmbedStats()
    embed_files(emb, paths, "audio", cfg, progress=False, stats=hit)
    assert miss.computed == n and hit.hits == n
    rates["cache_miss"] = n / miss.seconds
    rates["cache_hit"] = n / hit.seconds
    if torch.cuda.is_available():
        rates.update(gpu_huge(64, reps))

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# bench_embed  {now}  {platform.node()}")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs (load average {load}), {threads} torch threads by default, "
          f"torch {torch.__version__}, {gpu}")
    print(f"# {n} WAVs of 10 s at 22,050 Hz -> (3, 1, 128, 204); best of {reps}; ImageBind's torchaudio.load "
          f"{'swapped for soundfile (no ffmpeg)' if swapped else 'used as is'}; max |ours - theirs| = {max_diff:.1e}")
    base = rates["imagebind"]
    for name, r in rates.items():
        print(f"{name:17s} {r:10.1f} recordings/s   x {r / base:6.2f} vs imagebind (1 thread)")
    if not torch.cuda.is_available():
        print("imagebind_huge fp32 vs bf16: skipped (no GPU here; FACTS §6 has H200 figures: 344 vs 1,876 /s)")
    print(json.dumps({"bench": "bench_embed", "preset": args.preset, "recordings": n, "max_diff": max_diff,
                      "recordings_per_s": rates, "cache_hit_vs_miss": rates["cache_hit"] / rates["cache_miss"]}))


if __name__ == "__main__":
    main()
