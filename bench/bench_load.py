"""Peak resident memory and seconds of loading ImageBind-huge: the old way against the memory-lean one.

    .venv/bin/python bench/bench_load.py [--dir /tmp] [--keep] [--device cpu|cuda] [--model imagebind_huge|linear-stack]

Writes a random-weight ``imagebind_huge`` checkpoint of the real size (1,200.8 M float32 parameters, about
4.8 GB, ``torch.save`` of the state dict as Meta's file is) into a temporary cache under ``--dir``, with its
verification stamp (so both loads below are "later loads"; a first load adds the SHA-256 time printed in the
header). Then each way loads it once, on the CPU in float32, in its own fresh process:

  old   the loader before issue 12 (commit 1365a83): ``imagebind_huge(pretrained=False)`` built with random
        weights, the file read memory-mapped, ``load_state_dict`` copying into the model
  new   ``a2i_utils.imagebind.huge.load_imagebind_huge``: built on the meta device, the mapped file's tensors
        assigned (``assign=True``), converted to the target dtype one by one

Each child reports its resident memory after imports, its peak after loading, after embedding one recording's
audio input, and after touching every weight (a sum over all parameters: what using the whole model costs);
the parent cross-checks the child's peak with ``os.wait4``. The checkpoint is deleted afterwards (``--keep``
keeps it). Needs about 11 GB of free memory (the old way's peak) and 5 GB of disk. The last line is JSON.

``--device cuda`` loads onto the GPU in the full preset's ``imagebind.dtype`` (bfloat16) and also reports the
GPU's peak. ``--model linear-stack`` replaces ImageBind by 286 ``nn.Linear(2048, 2048)`` of the same total size
(4.8 GB), loaded through the same ``load_imagebind_huge`` (its ``builder`` argument): the loading path
without the ``imagebind`` package, for machines that lack it (the embedding step is then skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

GB = 1e9
CHILD = Path(__file__).resolve()


# ----------------------------------------------------------------------------------------------------------
# Children: one process per step, so each peak is its own
# ----------------------------------------------------------------------------------------------------------
def builder_of(model: str):
    """A function that builds the model to benchmark (random weights)."""
    if model == "linear-stack":
        from torch import nn

        return lambda: nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(286)])  # 1,200.2 M parameters
    from a2i_utils.compat import import_imagebind

    return lambda: import_imagebind().imagebind_huge(pretrained=False)


def child_write(cache: Path, model: str = "imagebind_huge") -> dict:
    """Write the random-weight checkpoint where full mode expects it, and its stamp; return sizes and times."""
    import torch

    from a2i_utils.config import get_config
    from a2i_utils.imagebind.huge import huge_checkpoint_path, write_stamp

    torch.set_num_threads(1)
    cfg = get_config("full", {"cache_dir": cache, "device": "cpu"})
    t0 = time.perf_counter()
    sd = builder_of(model)().state_dict()
    t_build = time.perf_counter() - t0
    path = huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.save(sd, path)
    t_save = time.perf_counter() - t0
    n_params = sum(v.numel() for v in sd.values())
    n_tensors = len(sd)
    del sd
    t0 = time.perf_counter()
    write_stamp(path, n_tensors)
    t_hash = time.perf_counter() - t0
    return {"bytes": path.stat().st_size, "params": n_params, "tensors": n_tensors, "build_s": t_build,
            "save_s": t_save, "sha256_s": t_hash}


def old_way_load(cfg, builder):
    """The loader as it was before issue 12 (commit 1365a83), with its verification, on the same helpers."""
    from a2i_utils.devices import torch_dtype
    from a2i_utils.imagebind.embedder import Embedder
    from a2i_utils.imagebind.huge import check_state_dict, huge_checkpoint_path, read_stamp, read_state_dict

    path = huge_checkpoint_path(cfg)
    stamp = read_stamp(path)
    assert stamp is not None and path.stat().st_size == stamp["size"]
    model = builder()  # random init: a first full set of weights
    sd = read_state_dict(path)  # memory-mapped: its pages become resident as they are read
    check_state_dict(sd, model, path)
    model.load_state_dict(sd, strict=True)  # copied into the first set
    del sd
    device = cfg.resolved_device()
    dtype = torch_dtype(cfg.imagebind.dtype) if device.startswith("cuda") else torch_dtype("float32")
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return Embedder(model, f"imagebind_huge-{stamp['sha256'][:16]}", device, dtype)


def child_load(cache: Path, way: str, device: str = "cpu", model: str = "imagebind_huge") -> dict:
    """Load the checkpoint the ``way`` given, embed one input, touch every weight; report RSS at each step."""
    import torch

    from a2i_utils.config import get_config
    from a2i_utils.imagebind.huge import load_imagebind_huge
    from a2i_utils.memory import peak_rss_bytes, rss_bytes

    torch.set_num_threads(1)
    cfg = get_config("full", {"cache_dir": cache, "device": device})
    builder = builder_of(model)  # (imports ImageBind before the baseline)
    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # the CUDA context before the baseline
    base = rss_bytes()
    t0 = time.perf_counter()
    if way == "old":
        emb = old_way_load(cfg, builder)
    else:
        emb = load_imagebind_huge(cfg, progress=False, download=False, builder=builder)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    after_load = peak_rss_bytes()
    torch.manual_seed(0)
    if model == "imagebind_huge":
        out = emb.embed("audio", torch.randn(1, 3, 1, 128, 204))  # one recording: 3 clips of 128 x 204 fbank
    else:
        out = emb.model(torch.randn(1, emb.model[0].in_features, device=device, dtype=emb.dtype)).float()
    after_embed = peak_rss_bytes()
    t0 = time.perf_counter()
    checksum = sum(float(p.double().sum()) for p in emb.model.parameters())
    touch_s = time.perf_counter() - t0
    return {"way": way, "base_rss": base, "load_s": load_s, "peak_after_load": after_load,
            "peak_after_embed": after_embed, "peak_after_touch": peak_rss_bytes(), "touch_s": touch_s,
            "embedding_norm": float(out.norm()), "checksum": checksum,
            "gpu_peak": torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0}


def run_child(step: str, cache: str, flags: list[str]) -> tuple[dict, int]:
    """Run this script as a child for ``step``; return its JSON result and its peak RSS (bytes) from wait4."""
    proc = subprocess.Popen([sys.executable, str(CHILD), *flags, "--child", step, cache], stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench_load: child {step} failed with exit status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss * 1024


# ----------------------------------------------------------------------------------------------------------
# Parent
# ----------------------------------------------------------------------------------------------------------
def preconditions(folder: Path) -> None:
    """Refuse to start without the memory and disk the run needs."""
    from a2i_utils.memory import available_memory_bytes

    avail = available_memory_bytes()
    if avail is not None and avail < 11.5 * GB:
        raise SystemExit(f"bench_load: {avail / GB:.1f} GB of memory available, the old way needs ~11 GB: "
                         "run it when the machine is quieter")
    free = shutil.disk_usage(folder).free
    if free < 6 * GB:
        raise SystemExit(f"bench_load: {folder} has {free / GB:.1f} GB free, the checkpoint needs ~5 GB")


def header(w: dict, device: str = "cpu", model: str = "imagebind_huge") -> list[str]:
    """The first lines: when, where, what was loaded."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    import torch

    target = "CPU float32"
    if device.startswith("cuda"):
        target = f"{torch.cuda.get_device_name(0)}, bfloat16 (the full preset's imagebind.dtype)"
    return [
        f"# bench_load  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}",
        f"# {platform.machine()}, {os.cpu_count()} CPUs (load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}), "
        f"torch {torch.__version__}, {target}, 1 torch thread, file in the page cache (just written)",
        f"# checkpoint: random-weight {model} state dict, {w['params'] / 1e6:,.1f} M parameters in "
        f"{w['tensors']} tensors, {w['bytes'] / GB:.2f} GB (built in {w['build_s']:.0f} s, saved in "
        f"{w['save_s']:.0f} s); a first load also hashes it: SHA-256 {w['sha256_s']:.1f} s",
    ]


def table(w: dict, rows: list[dict]) -> list[str]:
    """One line per way: seconds, peak RSS after each step, peak / checkpoint, (peak - RSS before) / checkpoint."""
    size = w["bytes"]
    lines = [f"{'way':<4} {'load s':>7} {'RSS before':>11} {'peak: load':>11} {'+1 embed':>9} {'+all weights':>13}"
             f" {'x checkpoint':>13} {'added x':>8} {'wait4 peak':>11}"]
    for r in rows:
        lines.append(
            f"{r['way']:<4} {r['load_s']:7.1f} {r['base_rss'] / GB:8.2f} GB {r['peak_after_load'] / GB:8.2f} GB"
            f" {r['peak_after_embed'] / GB:6.2f} GB {r['peak_after_touch'] / GB:10.2f} GB"
            f" {r['peak_after_touch'] / size:12.2f}x {(r['peak_after_touch'] - r['base_rss']) / size:7.2f}x"
            f" {r['wait4_peak'] / GB:8.2f} GB" + (f"  GPU peak {r['gpu_peak'] / GB:.2f} GB" if r["gpu_peak"] else "")
        )
    return lines


def main() -> None:
    """Write the checkpoint, load it both ways in fresh processes, print the table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temporary cache goes")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint afterwards")
    parser.add_argument("--device", default="cpu", help="where to load: cpu (float32) or cuda (bfloat16)")
    parser.add_argument("--model", default="imagebind_huge", choices=("imagebind_huge", "linear-stack"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, cache = args.child[0], Path(args.child[1])
        result = child_write(cache, args.model) if step == "write" else child_load(cache, step, args.device, args.model)
        print(json.dumps(result))
        return
    preconditions(args.dir)
    cache = Path(tempfile.mkdtemp(prefix="bench-load-", dir=args.dir))
    try:
        flags = ["--device", args.device, "--model", args.model]
        written, _ = run_child("write", str(cache), flags)
        rows = []
        for way in ("old", "new"):
            r, peak = run_child(way, str(cache), flags)
            rows.append({**r, "wait4_peak": peak})
    finally:
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)
    assert abs(rows[0]["checksum"] - rows[1]["checksum"]) <= 1e-6 * abs(rows[0]["checksum"]) + 1e-3, "weights differ"
    assert abs(rows[0]["embedding_norm"] - rows[1]["embedding_norm"]) < 1e-3, "embeddings differ"
    lines = header(written, args.device, args.model) + table(written, rows)
    ratio = rows[1]["peak_after_touch"] / written["bytes"]
    lines.append(f"new/old peak: {rows[1]['peak_after_touch'] / rows[0]['peak_after_touch']:.2f}; new load "
                 f"{rows[0]['load_s'] / rows[1]['load_s']:.1f}x faster; target <= 1.30x checkpoint: "
                 f"{'met' if ratio <= 1.3 else 'NOT met'} ({ratio:.2f}x); same weights and embedding both ways")
    print("\n".join(lines))
    print(json.dumps({"bench": "bench_load", "checkpoint": written, "ways": rows}))


if __name__ == "__main__":
    main()
