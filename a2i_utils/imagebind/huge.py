"""Full mode: the official ``imagebind_huge``, downloaded once into the cache, verified, then loaded.

Full mode builds ``imagebind_huge(pretrained=False)`` and loads Meta's checkpoint from the cache
(``cfg.downloads_dir / imagebind_huge.pth``), downloading it once with a progress bar; never into
``.checkpoints/`` of the current directory as ``imagebind_huge(pretrained=True)`` would. No hash of that
file is published by Meta, so it is verified by the exact size the server announces, then by the names,
shapes (and kinds of dtype) of every tensor of its state dict against the architecture. The verified size,
modification time and SHA-256 are written next to it (``imagebind_huge.pth.verified.json``). Every later load
compares size and modification time with that stamp: a different size is refused (a corrupt or partly
overwritten file), a different modification time at the same size means the file was replaced, so it is
verified and hashed again. The model's identity (the embedding cache's key) comes from the current hash.
A checkpoint refused right after its download, or whose size changed since it was verified, is deleted with
its stamp (the next run downloads it again); one that was already there and does not fit the model is refused
and kept. The download itself goes through :func:`a2i_utils.downloads.download_file`: ``imagebind_huge.pth.part``,
resumed after an interruption, renamed only when complete, under a lock (two notebooks never download into the same
file).

Loading is memory-lean (issue 12): the model is built with its parameters on the meta device (no memory, no
random initialisation; the few small buffers stay real), the file is read memory-mapped
(``torch.load(mmap=True, weights_only=True)``), each tensor is converted to the target device and dtype one at
a time, and ``load_state_dict(assign=True)`` puts those tensors in the model instead of copying them into a
second, randomly initialised set. So the weights are held once: peak resident memory about 1x the file (the old
way, a built model plus the file's pages, took about 2x; ``bench/bench_load.py`` measures both). On the CPU
in float32 the parameters stay mapped from the file: replace the checkpoint by renaming a new file onto it
(as the download does), never by writing into it, while a loaded model is in use.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from a2i_utils.compat import import_imagebind
from a2i_utils.config import Config
from a2i_utils.devices import torch_dtype
from a2i_utils.downloads import download_file  # (the shared downloader; tests import it from here)
from a2i_utils.imagebind.model import Embedder
from a2i_utils.io import CheckpointError, atomic_write_text, sha256_file

# The address imagebind.models.imagebind_model.imagebind_huge downloads from (read from the package source;
# a test checks it is still there).
HUGE_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
HUGE_FILENAME = "imagebind_huge.pth"


def huge_checkpoint_path(cfg: Config) -> Path:
    """Where the official checkpoint lives in the cache."""
    return Path(cfg.downloads_dir) / HUGE_FILENAME


class ChangedCheckpointError(CheckpointError):
    """A verified checkpoint whose size has changed since: corrupt or partly overwritten."""


def discard(path: Path) -> None:
    """Delete a refused checkpoint and its verification stamp (the next run downloads it again)."""
    Path(path).unlink(missing_ok=True)
    _stamp_path(Path(path)).unlink(missing_ok=True)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True`` (memory-mapped when possible); CheckpointError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001  (torch raises RuntimeError, pickle errors, EOFError...)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, corrupt or truncated ({err})") from err
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]  # a training checkpoint that wraps the weights
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    return sd


def check_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Raise CheckpointError naming ``path`` unless ``sd`` has exactly the model's names and shapes.

    Dtypes must be of the same kind (floating point or not); a float precision difference is allowed, as
    ``load_state_dict`` converts it.
    """
    want = model.state_dict()
    missing = sorted(want.keys() - sd.keys())
    extra = sorted(sd.keys() - want.keys())
    wrong = [
        f"{k}: {tuple(sd[k].shape)} {sd[k].dtype} in the file, model wants {tuple(want[k].shape)} {want[k].dtype}"
        for k in sorted(want.keys() & sd.keys())
        if sd[k].shape != want[k].shape or sd[k].is_floating_point() != want[k].is_floating_point()
    ]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[:3]}")
        if extra:
            parts.append(f"{len(extra)} unexpected tensor(s), e.g. {extra[:3]}")
        if wrong:
            parts.append(f"{len(wrong)} with a wrong shape or dtype, e.g. {wrong[:3]}")
        raise CheckpointError(f"{path}: not a checkpoint of this model: " + "; ".join(parts))


def _stamp_path(path: Path) -> Path:
    """The sidecar JSON that records a verified checkpoint's size and hash."""
    return path.with_name(path.name + ".verified.json")


def read_stamp(path: Path) -> dict | None:
    """The verification stamp of checkpoint ``path``, or None when absent or unreadable (then verified again)."""
    stamp_file = _stamp_path(path)
    if not stamp_file.is_file():
        return None
    try:
        stamp = json.loads(stamp_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        print(f"warning: {stamp_file}: unreadable verification stamp ({err}); verifying {path.name} again")
        return None
    if not _stamp_ok(stamp):
        print(f"warning: {stamp_file}: incomplete or malformed verification stamp; verifying {path.name} again")
        return None
    return stamp


def _stamp_ok(stamp) -> bool:
    """Whether a stamp has an integer size and modification time and a 64-digit hex SHA-256."""
    if not isinstance(stamp, dict) or not {"size", "mtime_ns", "sha256"} <= stamp.keys():
        return False
    ints = all(type(stamp[k]) is int and stamp[k] >= 0 for k in ("size", "mtime_ns"))
    sha = stamp["sha256"]
    return ints and isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)


def build_empty(builder: Callable[[], nn.Module]) -> nn.Module:
    """``builder()`` with every parameter on the meta device: no memory, no random init (small buffers stay real)."""
    from accelerate import init_empty_weights  # patches register_parameter only while building

    with init_empty_weights(include_buffers=False):
        return builder()


def convert_state_dict(
    sd: dict[str, torch.Tensor],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | dict[str, torch.dtype] | None = None,
) -> dict[str, torch.Tensor]:
    """Move each tensor to ``device`` (floating ones to ``dtype``) one at a time, emptying ``sd`` as it goes.

    ``dtype`` is one dtype for all floating tensors, or one per name; None keeps the file's. A tensor already
    on that device in that dtype is kept as is (a memory-mapped one stays mapped), so at most one tensor is
    ever held twice.
    """
    out = {}
    for key in list(sd):
        t = sd.pop(key)
        want = dtype.get(key) if isinstance(dtype, dict) else dtype
        out[key] = t.to(device=device, dtype=want if want is not None and t.is_floating_point() else t.dtype)
    return out


def _check_materialised(model: nn.Module, path: Path) -> None:
    """Raise CheckpointError if a parameter or buffer was left on the meta device (nothing loaded into it)."""
    empty = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if empty:
        raise CheckpointError(f"{path}: {len(empty)} tensor(s) of the model got no weights, e.g. {empty[:3]}")


def load_verified_weights(
    model: nn.Module, path: Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> dict:
    """Verify ``path`` against ``model`` (stamp, names, shapes), assign its tensors; return the (current) stamp.

    ``model`` may be built on the meta device (:func:`build_empty`): the file's tensors, converted to
    ``device``/``dtype`` one by one, become the model's tensors (``assign=True``), never a second copy.
    ``dtype=None`` keeps the dtype of each of the model's tensors, as a copying ``load_state_dict`` would.
    The stamp holds size, modification time (ns) and SHA-256: a size change is refused, a modification time
    change (a replaced file of the same size) makes the file be hashed again, so the identity follows it.
    """
    path = Path(path)
    stamp = read_stamp(path)
    st = path.stat() if path.is_file() else None
    if stamp is not None and st is not None and st.st_size != stamp["size"]:
        raise ChangedCheckpointError(
            f"{path}: size {st.st_size} bytes differs from the verified {stamp['size']}: "
            "the file changed or is corrupt since it was verified"
        )
    sd = read_state_dict(path)
    check_state_dict(sd, model, path)
    n_tensors = len(sd)
    target = dtype if dtype is not None else {k: v.dtype for k, v in model.state_dict().items()}
    model.load_state_dict(convert_state_dict(sd, device, target), strict=True, assign=True)
    _check_materialised(model, path)
    if stamp is None or stamp["mtime_ns"] != st.st_mtime_ns:  # new, or replaced by a same-size file: hash again
        stamp = write_stamp(path, n_tensors)
    return stamp


def write_stamp(path: Path, n_tensors: int) -> dict:
    """Hash a verified checkpoint and record its size, modification time and SHA-256 next to it."""
    st = Path(path).stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path), "tensors": n_tensors}
    atomic_write_text(_stamp_path(Path(path)), json.dumps(stamp, indent=1))
    return stamp


def load_imagebind_huge(
    cfg: Config,
    progress: bool = True,
    download: bool = True,
    url: str = HUGE_URL,
    builder: Callable[[], nn.Module] | None = None,
) -> Embedder:
    """``imagebind_huge`` with the official weights from the cache (downloaded once), eval mode, cfg's dtype.

    Built on the meta device and filled from the memory-mapped file (see the module docstring): the weights
    are held once, never as a random model plus a loaded copy.

    ``builder`` makes the (untrained) model; the default is ``imagebind_huge(pretrained=False)``. Tests pass a
    small ``ImageBindModel`` and a ``file://`` URL to run this same path on a checkpoint they wrote.
    """
    path = huge_checkpoint_path(cfg)
    fresh = not path.is_file()
    if fresh:
        if not download:
            raise CheckpointError(f"{path}: no checkpoint in the cache and download=False")
        download_file(url, path, progress=progress)
    builder = builder or (lambda: import_imagebind().imagebind_huge(pretrained=False))
    model = build_empty(builder)  # (parameters on the meta device: the file's tensors are assigned below)
    device = cfg.resolved_device()
    dtype = torch_dtype(cfg.imagebind.dtype) if device.startswith("cuda") else torch.float32
    try:
        stamp = load_verified_weights(model, path, device=device, dtype=dtype)
    except CheckpointError as err:
        if fresh or isinstance(err, ChangedCheckpointError):  # a wrong download, or changed since verified
            discard(path)
            raise CheckpointError(f"{err}\n(deleted it: run again to download it again from {url})") from err
        raise CheckpointError(f"{err}\n(delete {path} to download it again from {url})") from err
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)  # (the buffers; weights already are)
    return Embedder(model, f"imagebind_huge-{stamp['sha256'][:16]}", device, dtype)
