"""``a2i doctor``: what this machine and cache hold for a mode, and what to do about each problem found.

It reports the versions (Python, torch, CUDA), the device (the GPU, its free memory, and which fine-tuning
options of the measured table fit in it: :data:`a2i_utils.preflight.FINETUNE_MEASURED`), the cache root (its
size and the free disk) and the files full mode needs: the ImageBind-huge checkpoint with its ``.verified.json``
stamp, the SD 2.1 UnCLIP weights (the configured source, a hub mirror or a folder, and what of it is cached), and
the ADVANCE dataset's ``.extracted-<md5>`` markers. Nothing is downloaded and the network is not probed
(``a2i preflight`` does that).

Policy: a file counts as *verified* when its proof is there and still fits the file: the stamp's size and
modification time for ImageBind-huge, the ``.extracted-<md5>`` marker written after an md5-checked download for
ADVANCE, the SHA-256 recorded at the last verified load for the UnCLIP weights (the U-Net's must be Stability's
pinned one); ``--verify`` hashes the UnCLIP weights again now (slow: GBs).
What the chosen mode does not use is reported as a note, never as a problem: only what the mode needs (in demo
mode: nothing downloaded) is a problem, listed with what to do, and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from a2i_utils.config import Config, get_config
from a2i_utils.preflight import (
    CUDA_CONTEXT_GIB,
    FINETUNE_MEASURED,
    GB,
    OPTION_SETTINGS,
    Machine,
    _disk_free_gb,
    detect,
    finetune_option,
    finetune_peak_gib,
    preflight,
)


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``status`` is "ok", "info" or "problem"; a problem has a ``fix``."""

    section: str
    status: str
    what: str
    fix: str = ""
    needed: bool = False  # a problem that stops the chosen mode (every "problem" is one)


def _ok(section: str, what: str) -> Finding:
    return Finding(section, "ok", what)


def _info(section: str, what: str) -> Finding:
    return Finding(section, "info", what)


def _problem(section: str, what: str, fix: str, needed: bool) -> Finding:
    """A problem when the mode needs the thing; else an info line (demo mode downloads nothing)."""
    if needed:
        return Finding(section, "problem", what, fix, True)
    return _info(section, f"{what} (not used in this mode)")


# ----------------------------------------------------------------------------------------------------------
# Versions, device, cache
# ----------------------------------------------------------------------------------------------------------
def versions() -> list[Finding]:
    """Python, torch, CUDA (as torch was built for it) and the libraries that load the weights."""
    import torch

    from a2i_utils import __version__

    cuda = torch.version.cuda or "none (a CPU build of torch)"
    cuda += "; a CUDA GPU is visible" if torch.cuda.is_available() else "; no CUDA GPU visible"
    found = [_info("versions", f"a2i {__version__}, Python {platform.python_version()}, torch {torch.__version__}, "
                               f"CUDA {cuda}")]
    libs = []
    for name in ("diffusers", "transformers", "safetensors"):
        try:
            libs.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            libs.append(f"{name} missing")
    found.append(_info("versions", ", ".join(libs)))
    return found


def device_findings(cfg: Config, m: Machine) -> list[Finding]:
    """The device, and which fine-tuning options of the measured table fit its free memory."""
    if not m.cuda:
        cpu = f"; {m.cpu_available_gb:.1f} GB CPU memory available" if m.cpu_available_gb else ""
        peaks = ", ".join(f"{o} {FINETUNE_MEASURED[o][1][0]:.1f} GiB" for o in FINETUNE_MEASURED)
        return [_info("device", f"device {m.device}: no CUDA GPU{cpu}"),
                _info("device", f"fine-tuning the full-size U-Net needs a CUDA GPU (measured peaks, batch 1: {peaks})")]
    found = [_info("device", m.describe())]
    budget = m.gpu_free_gib - CUDA_CONTEXT_GIB
    chosen, batch = finetune_option(cfg), cfg.soundiff.batch_size
    for option in FINETUNE_MEASURED:
        peak, exact = finetune_peak_gib(option, batch)
        kind = "measured" if exact else "estimated"
        mark = " (the configured option)" if option == chosen else ""
        line = (f"fine-tuning {option} at batch {batch}: {peak:.1f} GiB ({kind}) "
                f"{'fits' if peak <= budget else 'does not fit'} in {m.gpu_free_gib:.1f} GiB free{mark}")
        found.append(_ok("device", line) if peak <= budget else _info("device", line + f"; {OPTION_SETTINGS[option]}"))
    return found


def tree_size(folder: Path) -> tuple[int, int]:
    """Bytes and number of files under ``folder`` (links not followed)."""
    total = files = 0
    stack = [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            else:
                try:
                    total += e.stat(follow_symlinks=False).st_size
                    files += 1
                except OSError:
                    pass
    return total, files


def cache_findings(cfg: Config, m: Machine) -> list[Finding]:
    """The cache root, its size and the free disk."""
    root = Path(cfg.cache_dir)
    free = m.disk_free_gb.get(str(root))
    disk = f", {free if free is not None else _disk_free_gb(root):.1f} GB free on its disk"
    if not root.exists():
        return [_info("cache", f"cache root {root}: not created yet{disk} (set A2I_CACHE to put it elsewhere)")]
    size, files = tree_size(root)
    amount = f"{size / GB:.2f} GB" if size >= GB else f"{size / 1e6:.1f} MB"
    return [_info("cache", f"cache root {root}: {amount} in {files} files{disk}")]


# ----------------------------------------------------------------------------------------------------------
# Weights and data
# ----------------------------------------------------------------------------------------------------------
def imagebind_findings(cfg: Config) -> list[Finding]:
    """The ImageBind-huge checkpoint and whether its stamp still fits it."""
    from a2i_utils.imagebind.huge import HUGE_URL, huge_checkpoint_path, read_stamp

    needed = cfg.imagebind.model == "huge"
    path = huge_checkpoint_path(cfg)
    if not path.is_file():
        part = path.with_name(path.name + ".part")
        partial = f" ({part.stat().st_size / GB:.2f} GB of an interrupted download, resumed next time)" \
            if part.is_file() else ""
        return [_problem("weights", f"ImageBind-huge: {path} is missing{partial}",
                         f"it is downloaded (4.8 GB) from {HUGE_URL} on first use (notebook 04, `a2i embed`); "
                         f"without network, copy imagebind_huge.pth to {path}", needed)]
    st, stamp = path.stat(), read_stamp(path)
    if stamp is None:
        return [_info("weights", f"ImageBind-huge: {path} is present ({st.st_size / GB:.2f} GB), not verified yet: "
                                 "verified (names, shapes) and hashed on its first load, refused if it fails")]
    if stamp["size"] != st.st_size:
        return [_problem("weights", f"ImageBind-huge: {path} has {st.st_size} bytes, {stamp['size']} when verified: "
                                    "changed or corrupt", f"delete {path} and its .verified.json to download it again",
                         needed)]
    if stamp["mtime_ns"] != st.st_mtime_ns:
        return [_info("weights", f"ImageBind-huge: {path} was replaced since it was verified (same size, new "
                                 "modification time): verified and hashed again on its next load")]
    return [_ok("weights", f"ImageBind-huge: {path}, verified (SHA-256 {stamp['sha256'][:12]}..., "
                           f"{stamp.get('tensors', '?')} tensors)")]


def unclip_findings(cfg: Config, verify: bool = False) -> list[Finding]:
    """SD 2.1 UnCLIP: the configured source, which of its weight files are cached, whether their hashes match.

    Without ``verify`` the hashes are those recorded at the last verified load (size and modification time must
    still fit); with it every weight file is hashed now (slow: GBs). The U-Net is compared with Stability's pin.
    """
    from a2i_utils.soundiff import weights  # (a part: imported only here; it imports no torch)

    needed = cfg.soundiff.model == "sd21-unclip"
    try:
        source, rows = weights.cache_report(cfg, rehash=verify)
    except (ValueError, weights.WeightsError) as err:
        return [_problem("weights", f"UnCLIP: {err}", "fix soundiff.pretrained_id / soundiff.variant", needed)]
    found = [_info("weights", f"UnCLIP source: {source}")]
    size = "~2.6 GB" if cfg.soundiff.variant == "fp16" else "~5.2 GB"
    get = (f"downloaded ({size}) on first use (notebook 05, `a2i train soundiff`); without network, copy "
           f"{Path(cfg.cache_dir) / 'weights'} from a machine that has it, or set soundiff.pretrained_id to a local "
           f"copy (diffusers layout); known mirrors: {', '.join(weights.KNOWN_MIRRORS)}")
    for state, text in rows:
        if state == "ok":
            found.append(_ok("weights", f"UnCLIP {text}"))
        elif state == "info":
            found.append(_info("weights", f"UnCLIP {text}"))
        elif state == "missing":
            found.append(_problem("weights", f"UnCLIP {text}", get, needed))
        else:
            found.append(_problem("weights", f"UnCLIP {text}",
                                  "delete the file (a downloaded one is fetched again on the next load) or replace it "
                                  "with the original; a2i refuses to load it", needed))
    return found


def advance_findings(cfg: Config) -> list[Finding]:
    """The dataset: your own folder (``data.root``), synthetic (made here), or ADVANCE (extracted markers)."""
    d = cfg.data
    if d.root:
        root = Path(d.root).expanduser()
        ok = all((root / sub).is_dir() for sub in ("vision", "sound"))
        if ok:
            return [_ok("data", f"data.root {root}: has vision/ and sound/ (check it with `a2i data check {root}`)")]
        return [_problem("data", f"data.root {root}: no vision/ and sound/ folders there",
                         "point data.root at an ADVANCE-shaped folder, or set it to ''", True)]
    if d.source == "synthetic":
        return [_info("data", "synthetic dataset: made in the cache on first use (nothing to download)")]
    from a2i_utils.data.advance import ARCHIVES

    found = []
    for a in ARCHIVES:
        marker = Path(cfg.datasets_dir) / "advance" / f".extracted-{a.md5}"
        archive = Path(cfg.downloads_dir) / a.name
        if marker.is_file():
            found.append(_ok("data", f"{a.name}: extracted, md5-checked ({marker})"))
        elif archive.is_file():
            found.append(_info("data", f"{a.name}: downloaded, not extracted yet: md5-checked and extracted "
                                       "on first use"))
        else:
            found.append(_problem("data", f"{a.name}: not downloaded",
                                  f"`a2i data fetch --mode {cfg.mode}` (1.5 GB), or copy it (md5 {a.md5}) to "
                                  f"{archive}, or set data.root to an unpacked ADVANCE", True))
    return found


# ----------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------
def diagnose(cfg: Config, machine: Machine | None = None, verify: bool = False) -> list[Finding]:
    """Every finding for ``cfg`` on this machine: versions, device, cache, weights, data, then preflight's problems.

    The preflight problems (GPU, its memory, bf16, CPU memory, disk) are those of the stages ``cfg`` runs with
    full-size models; the network is not probed (missing files are reported above, with what to do).
    """
    m = machine or detect(cfg)
    found = versions() + device_findings(cfg, m) + cache_findings(cfg, m)
    found += imagebind_findings(cfg) + unclip_findings(cfg, verify) + advance_findings(cfg)
    for p in preflight(cfg, machine=m, probe=lambda url: None):
        found.append(_problem("machine", f"[{p.stage}] {p.what}", p.fix, True))
    return found


SECTIONS = ("versions", "device", "cache", "weights", "data", "machine")
MARKS = {"ok": "ok", "info": "  ", "problem": "!!"}


def render(cfg: Config, found: list[Finding]) -> str:
    """The report as text: one block per section, then the problems numbered, each with what to do."""
    lines = [f"a2i doctor ({cfg.mode} mode)"]
    for section in SECTIONS:
        rows = [f for f in found if f.section == section]
        if rows:
            lines.append(f"{section}:")
            lines += [f"  {MARKS[f.status]} {f.what}" for f in rows]
    needed = [f for f in found if f.status == "problem"]
    if needed:
        lines.append(f"problems that stop {cfg.mode} mode, and what to do:")
        for i, f in enumerate(needed, 1):
            lines.append(f"  {i}. {f.what}\n     -> {f.fix}")
    lines.append(f"{cfg.mode} mode: " + ("ready" if not needed else f"{len(needed)} problem(s) to fix first"))
    return "\n".join(lines)


def register(subparsers) -> None:
    """Add the ``doctor`` verb."""
    p = subparsers.add_parser("doctor", help="report versions, GPU, cache, weights and data; what to fix")
    p.add_argument("--mode", default=None, help="preset to check for (default: A2I_MODE or demo)")
    p.add_argument("--verify", action="store_true", help="also hash the UnCLIP weights (slow: several GB)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 1 when something the mode needs is missing or wrong."""
    cfg = get_config(args.mode)
    found = diagnose(cfg, verify=args.verify)
    needed = any(f.needed for f in found)
    if args.json:
        print(json.dumps({"mode": cfg.mode, "ready": not needed, "findings": [asdict(f) for f in found]}, indent=1))
    else:
        print(render(cfg, found))
    sys.stdout.flush()
    return 1 if needed else 0

