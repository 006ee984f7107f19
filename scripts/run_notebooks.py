"""Build, store and run the course notebooks.

The notebooks' source of truth is ``notebooks/NN_name.py`` (jupytext percent format: readable diffs).
``notebooks/NN_name.ipynb`` is the same notebook with the outputs of a demo-mode run, which nbval re-runs
and compares in the tests.

    python scripts/run_notebooks.py store [NAMES...]   # .py -> executed .ipynb in notebooks/ (demo mode)
    python scripts/run_notebooks.py run --out DIR      # execute every notebook into DIR, print times
    python scripts/run_notebooks.py check              # every .py has an .ipynb with the same cells
    python scripts/run_notebooks.py smoke --out DIR    # full-smoke: every notebook at full size, random weights
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
CELL_TIMEOUT_S = 1800


def sources(names: list[str] | None = None, nb_dir: Path = NB_DIR) -> list[Path]:
    """The notebook sources ``NN_*.py`` in ``nb_dir``, in order, optionally filtered by name prefix."""
    paths = sorted(nb_dir.glob("[0-9][0-9]_*.py"))
    if names:
        paths = [p for p in paths if any(p.stem.startswith(n) or p.name == n for n in names)]
        if not paths:
            raise SystemExit(f"no notebook in {nb_dir} matches {names}")
    return paths


def read_source(path: Path) -> nbformat.NotebookNode:
    """Read a jupytext percent script as a notebook with the project's kernel."""
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, mode: str = "demo", env: dict[str, str] | None = None,
            peak: dict | None = None, allow_errors: bool = False) -> float:
    """Execute ``nb`` in place in a kernel with ``A2I_MODE=mode`` (and ``env``); return the wall time in seconds.

    ``peak``, if given, receives the kernel's peak resident memory in bytes under ``"rss"`` (Linux), read just
    before the kernel is shut down, also when a cell failed. ``allow_errors``: go on after a failing cell (its
    error is in its outputs) and record each cell's timing."""
    saved = dict(os.environ)
    os.environ.update(env or {})
    os.environ["A2I_MODE"] = mode  # the kernel inherits this process's environment
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # CurveZMQ-encrypted sockets: no "Kernel is running over TCP without encryption" warning before every notebook.
    km = KernelManager(kernel_name="python3", transport_encryption="auto")
    client = NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
        record_timing=allow_errors, allow_errors=allow_errors,
        store_widget_state=False,  # JupyterLab does not restore it: dead weight (issue 22)
    )
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        if peak is not None:
            peak["rss"] = kernel_peak_rss(km)
        if km.has_kernel:
            km.shutdown_kernel(now=False)  # the client does not shut down a kernel it was given
        os.environ.clear()
        os.environ.update(saved)
    return time.perf_counter() - start


def kernel_peak_rss(km: KernelManager) -> int | None:
    """The kernel process's peak resident memory in bytes (``VmHWM`` of /proc), or None where unknown."""
    process = getattr(getattr(km, "provisioner", None), "process", None)
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
    except (AttributeError, OSError):
        return None
    kib = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(kib.group(1)) * 1024 if kib else None


PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's text: "  0%|          | 0/300 [00:00<?, ?it/s]"


def drop_progress_widgets(nb: nbformat.NotebookNode) -> int:
    """Remove tqdm widget outputs from cells nbval does not compare; return how many were removed.

    A notebook executed headless stores a progress widget without its state, so every viewer shows its first
    text, "0%| 0/300", for a bar that in fact finished: better no bar than a wrong one.
    """
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.source.startswith("# NBVAL_CHECK_OUTPUT"):
            continue
        keep = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            is_bar = "application/vnd.jupyter.widget-view+json" in data and PROGRESS_BAR.search(
                "".join(data.get("text/plain", "")))
            removed += bool(is_bar)
            if not is_bar:
                keep.append(out)
        cell.outputs = keep
    return removed


def store(names: list[str] | None, nb_dir: Path = NB_DIR) -> None:
    """Execute each source in demo mode and store it, with outputs, as ``notebooks/NN_name.ipynb``."""
    for src in sources(names, nb_dir):
        nb = read_source(src)
        seconds = execute(nb, nb_dir)
        drop_progress_widgets(nb)
        target = src.with_suffix(".ipynb")
        tmp = target.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(target)  # atomic: an interrupted run never leaves half a notebook
        print(f"stored {target.name} ({seconds:.0f} s)", flush=True)


def run(out: Path, mode: str) -> None:
    """Execute every notebook (from its source) into ``out``, printing each notebook's time."""
    out.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for src in sources():
        nb = read_source(src)
        print(f"running {src.stem} ...", flush=True)
        seconds = execute(nb, NB_DIR, mode)
        drop_progress_widgets(nb)
        total += seconds
        nbformat.write(nb, out / f"{src.stem}.ipynb")
        print(f"  {src.stem}: {seconds:.0f} s", flush=True)
    print(f"all notebooks: {total:.0f} s; executed copies in {out}")


# What `make smoke` lowers on a CPU, and nothing else: the models stay full size (FACTS §9). 64 px images give
# 8 x 8 latents (one LoRA step of the full U-Net: ~2 s); LoRA, gradient checkpointing and batch 2 are what a
# Colab user would pick to fit 12.7 GB of RAM. Notebook 03's kernel (the paper-size transformer, batch 16) grew
# past 13 GB here before it was stopped; at batch 2 it stayed near 7 GB, and its 32 x 32 images (1,024 pixels
# drawn one at a time, 1,024 decoder positions per training pass) took 17 min on this CPU: 16 x 16 keeps every
# layer at the paper's size and cuts the decoder's work 4x. SounDiff in float32, as full mode loads it on a CPU
# (`load_pretrained_pipeline`): this CPU (AVX2, no native bfloat16) runs bf16 matrix products 8x slower than float32
# and NCHW bf16 convolutions on a reference kernel (`bench/results/bench_cpu_bf16.txt`); with
# `--dtype bfloat16` notebook 05 alone ran past 25 min at 11.6 GB. `--dtype bfloat16` stays the check of a GPU's
# dtype on a machine that has one (or time to spare).
SMOKE_CPU = {"soundiff.image_size": 64, "soundiff.lora": True, "soundiff.grad_checkpointing": True,
             "soundiff.batch_size": 2, "transformer.batch_size": 2, "transformer.image_size": 16,
             "soundiff.dtype": "float32"}


def smoke(out: Path, dtype: str | None, native: bool, names: list[str] | None = None, nb_dir: Path = NB_DIR) -> int:
    """Run every notebook in ``full-smoke`` into ``out`` (outputs kept there only); print times and peak memory.

    On a CPU the image size is lowered and SounDiff runs in float32 (:data:`SMOKE_CPU`) unless ``native``; ``dtype``
    overrides ``soundiff.dtype`` (``bfloat16``, the preset's and full mode's on a GPU: a cell's dtype mistake then
    fails here, slowly on a CPU without native bfloat16).
    Every cell runs; a cell that raises fails the smoke test (returns 1), except an ``AssertionError`` in a cell
    tagged ``trained-claim``: with random weights a notebook's claims about trained models (a fine-tune beats the
    baseline, ...) cannot hold, so those are listed, not failed. Any other failing assertion (a hand-built piece
    against the package, a shape, a round trip) fails the smoke test. The executed copies, with their errors, are
    left in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    overrides = {} if native else dict(SMOKE_CPU)
    if dtype:
        overrides["soundiff.dtype"] = dtype
    env = {"A2I_OVERRIDES": json.dumps(overrides), "MPLBACKEND": "Agg"}
    print(f"full-smoke with {env['A2I_OVERRIDES']}", flush=True)
    total, peak_all, failed = 0.0, 0, []
    for src in sources(names, nb_dir):
        nb, peak = read_source(src), {}
        seconds = execute(nb, nb_dir, "full-smoke", env, peak, allow_errors=True)
        total += seconds
        peak_all = max(peak_all, peak.get("rss") or 0)
        nbformat.write(nb, out / f"{src.stem}.ipynb")
        gb = f"{peak['rss'] / 1e9:.1f} GB" if peak.get("rss") else "unknown"
        print(f"  {src.stem}: {seconds:.0f} s, peak resident memory {gb}; slowest cells: "
              + ", ".join(f"#{i} {s:.0f} s" for i, s in slowest_cells(nb)), flush=True)
        for i, ename, evalue in cell_errors(nb):
            claim = ename == "AssertionError" and TRAINED_CLAIM in cell_tags(nb, i)
            print(f"    cell #{i}: {ename}: {evalue[:300]}"
                  + ("  [a claim about trained weights: not checked with random weights]" if claim else ""))
            if not claim:
                failed.append(f"{src.stem} cell #{i}")
    print(f"full-smoke: all notebooks in {total:.0f} s; peak resident memory {peak_all / 1e9:.1f} GB; "
          f"executed copies in {out}")
    if failed:
        print("FAILED: " + ", ".join(failed))
    return 1 if failed else 0


def cell_errors(nb: nbformat.NotebookNode) -> list[tuple[int, str, str]]:
    """(code cell number from 1, exception name, its message) of every cell that raised."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    return [(i, out.ename, out.evalue) for i, c in enumerate(code, 1) for out in c.get("outputs", [])
            if out.output_type == "error"]


TRAINED_CLAIM = "trained-claim"  # the tag of a cell whose assertion is about trained weights (the smoke test lists it)


def cell_tags(nb: nbformat.NotebookNode, i: int) -> list[str]:
    """The tags of code cell number ``i`` (from 1)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    return list(code[i - 1].metadata.get("tags", []))


def slowest_cells(nb: nbformat.NotebookNode, k: int = 3) -> list[tuple[int, float]]:
    """The ``k`` slowest code cells (number from 1, seconds), from the timing nbclient records."""
    from datetime import datetime

    times = []
    for i, c in enumerate([c for c in nb.cells if c.cell_type == "code"], 1):
        t = c.metadata.get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            start, end = (datetime.fromisoformat(t[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            times.append((i, (end - start).total_seconds()))
    return sorted(times, key=lambda x: -x[1])[:k]


def check(nb_dir: Path = NB_DIR) -> int:
    """Every source has a stored notebook whose cells are the source's cells, tags included (no drift)."""
    problems = []
    for src in sources(nb_dir=nb_dir):
        stored = src.with_suffix(".ipynb")
        if not stored.exists():
            problems.append(f"{stored.name} missing: run `make notebooks`")
            continue
        want = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in read_source(src).cells]
        have = [(c.cell_type, c.source, c.metadata.get("tags", []))  # tags: nbval and the smoke test read them
                for c in nbformat.read(stored, as_version=4).cells]
        if want != have:
            problems.append(f"{stored.name} differs from {src.name}: run `make notebooks`")
        elif any(c.cell_type == "code" and c.get("execution_count") is None and c.source.strip()
                 for c in nbformat.read(stored, as_version=4).cells):
            problems.append(f"{stored.name} has unexecuted cells: run `make notebooks`")
    for p in problems:
        print(p)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_store = sub.add_parser("store", help="execute sources in demo mode and store the .ipynb")
    p_store.add_argument("names", nargs="*")
    p_run = sub.add_parser("run", help="execute every notebook into a folder")
    p_run.add_argument("--out", type=Path, default=ROOT / "outputs" / "demo")
    p_run.add_argument("--mode", default=os.environ.get("A2I_MODE", "demo"))
    sub.add_parser("check", help="stored notebooks match their sources")
    p_smoke = sub.add_parser("smoke", help="every notebook in full-smoke into a folder (nothing stored)")
    p_smoke.add_argument("names", nargs="*")
    p_smoke.add_argument("--out", type=Path, default=ROOT / "build" / "smoke")
    p_smoke.add_argument("--dtype", default=None, help="soundiff.dtype, e.g. bfloat16")
    p_smoke.add_argument("--native", action="store_true", help="the preset's own image size (a GPU)")
    args = parser.parse_args(argv)
    if args.cmd == "store":
        store(args.names)
    elif args.cmd == "run":
        run(args.out.resolve(), args.mode)
    elif args.cmd == "smoke":
        return smoke(args.out.resolve(), args.dtype, args.native, args.names)
    else:
        return check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
