"""Peak resident memory and seconds of loading ImageBind-huge: the old way against the memory-lean one.

    .venv/bin/python bench/bench_load.py [--dir /tmp] [--keep]

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
def child_write(cache: Path) -> dict:
    """Write the random-weight checkpoint where full mode expects it, and its stamp; return sizes and times."""
    import torch

    from a2i_utils.compat import import_imagebind
    from a2i_utils.config import get_config
    from a2i_utils.imagebind.huge import huge_checkpoint_path, write_stamp

    torch.set_num_threads(1)
    cfg = get_config("full", {"cache_dir": cache, "device": "cpu"})
    t0 = time.perf_counter()
    sd = import_imagebind().imagebind_huge(pretrained=False).state_dict()
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


def old_way_load(cfg):
    """The loader as it was before issue 12 (commit 1365a83), with its verification, on the same helpers."""
    import torch

    from a2i_utils.compat import import_imagebind
    from a2i_utils.imagebind.embedder import Embedder
    from a2i_utils.imagebind.huge import check_state_dict, huge_checkpoint_path, read_stamp, read_state_dict

    path = huge_checkpoint_path(cfg)
    stamp = read_stamp(path)
    assert stamp is not None and path.stat().st_size == stamp["size"]
    model = import_imagebind().imagebind_huge(pretrained=False)  # random init: a first full set of weights
    sd = read_state_dict(path)  # memory-mapped: its pages become resident as they are read
    check_state_dict(sd, model, path)
    model.load_state_dict(sd, strict=True)  # copied into the first set
    del sd
    model = model.to(device="cpu", dtype=torch.float32).eval().requires_grad_(False)
    return Embedder(model, f"imagebind_huge-{stamp['sha256'][:16]}", "cpu", torch.float32)


def child_load(cache: Path, way: str) -> dict:
    """Load the checkpoint the ``way`` given, embed one input, touch every weight; report RSS at each step."""
    import torch

    from a2i_utils.config import get_config
    from a2i_utils.imagebind.huge import load_imagebind_huge
    from a2i_utils.memory import peak_rss_bytes, rss_bytes

    torch.set_num_threads(1)
    cfg = get_config("full", {"cache_dir": cache, "device": "cpu"})
    from a2i_utils.compat import import_imagebind

    import_imagebind()  # imports before the baseline
    base = rss_bytes()
    t0 = time.perf_counter()
    emb = old_way_load(cfg) if way == "old" else load_imagebind_huge(cfg, progress=False, download=False)
    load_s = time.perf_counter() - t0
    after_load = peak_rss_bytes()
    torch.manual_seed(0)
    out = emb.embed("audio", torch.randn(1, 3, 1, 128, 204))  # one recording: 3 clips of 128 x 204 fbank
    after_embed = peak_rss_bytes()
    t0 = time.perf_counter()
    checksum = sum(float(p.double().sum()) for p in emb.model.parameters())
    touch_s = time.perf_counter() - t0
    return {"way": way, "base_rss": base, "load_s": load_s, "peak_after_load": after_load,
            "peak_after_embed": after_embed, "peak_after_touch": peak_rss_bytes(), "touch_s": touch_s,
            "embedding_norm": float(out.norm()), "checksum": checksum}


def run_child(*args: str) -> tuple[dict, int]:
    """Run this script as a child with ``args``; return its JSON result and its peak RSS (bytes) from wait4."""
    proc = subprocess.Popen([sys.executable, str(CHILD), "--child", *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench_load: child {args} failed with exit status {proc.returncode}")
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


def header(w: dict) -> list[str]:
    """The first lines: when, where, what was loaded."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    import torch

    return [
        f"# bench_load  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}",
        f"# {platform.machine()}, {os.cpu_count()} CPUs (load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}), "
        f"torch {torch.__version__}, CPU float32, 1 torch thread, file in the page cache (just written)",
        f"# checkpoint: random-weight imagebind_huge state dict, {w['params'] / 1e6:,.1f} M parameters in "
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
            f" {r['wait4_peak'] / GB:8.2f} GB"
        )
    return lines


def main() -> None:
    """Write the checkpoint, load it both ways in fresh processes, print the table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the temporary cache goes")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint afterwards")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, cache = args.child[0], Path(args.child[1])
        result = child_write(cache) if step == "write" else child_load(cache, step)
        print(json.dumps(result))
        return
    preconditions(args.dir)
    cache = Path(tempfile.mkdtemp(prefix="bench-load-", dir=args.dir))
    try:
        written, _ = run_child("write", str(cache))
        rows = []
        for way in ("old", "new"):
            r, peak = run_child(way, str(cache))
            rows.append({**r, "wait4_peak": peak})
    finally:
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)
    assert abs(rows[0]["checksum"] - rows[1]["checksum"]) <= 1e-6 * abs(rows[0]["checksum"]) + 1e-3, "weights differ"
    assert abs(rows[0]["embedding_norm"] - rows[1]["embedding_norm"]) < 1e-3, "embeddings differ"
    lines = header(written) + table(written, rows)
    ratio = rows[1]["peak_after_touch"] / written["bytes"]
    lines.append(f"new/old peak: {rows[1]['peak_after_touch'] / rows[0]['peak_after_touch']:.2f}; new load "
                 f"{rows[0]['load_s'] / rows[1]['load_s']:.1f}x faster; target <= 1.30x checkpoint: "
                 f"{'met' if ratio <= 1.3 else 'NOT met'} ({ratio:.2f}x); same weights and embedding both ways")
    print("\n".join(lines))
    print(json.dumps({"bench": "bench_load", "checkpoint": written, "ways": rows}))


if __name__ == "__main__":
    main()
