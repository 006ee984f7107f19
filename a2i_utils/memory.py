"""Memory helpers shared by every part: this process's resident memory, and freeing a large model for good.

Full mode holds one large model at a time (issue 12): a notebook computes and caches the ImageBind embeddings
it needs, then frees ImageBind before the U-Net pipeline loads. ``del model`` alone proves nothing: another
name, a closure, a list, or IPython's output history (``_``, ``Out[3]``) may still hold it, and then its
gigabytes stay. :func:`free` deletes the names it is given, collects, and checks with weak references that
the objects are gone; if one is not, it raises :class:`StillReferencedError` naming what still holds it.

A leaf module: it imports nothing of the parts, and torch only when torch is already in use.
"""

from __future__ import annotations

import gc
import resource
import sys
import weakref
from collections.abc import Iterable, MutableMapping
from typing import Any


class StillReferencedError(RuntimeError):
    """An object that was to be freed is still referenced; the message names what holds it."""


# ----------------------------------------------------------------------------------------------------------
# Resident memory of this process (Linux: /proc; elsewhere: resource / psutil)
# ----------------------------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Resident memory of this process now, in bytes."""
    kib = _proc_status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (since start or :func:`reset_peak_rss`), in bytes."""
    kib = _proc_status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def reset_peak_rss() -> bool:
    """Reset the peak to the current resident memory (Linux ``/proc/self/clear_refs``); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def available_memory_bytes() -> int | None:
    """Memory the system can give new work without swapping (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available


# ----------------------------------------------------------------------------------------------------------
# Freeing a model and proving it is gone
# ----------------------------------------------------------------------------------------------------------
def tensor_bytes(obj: Any) -> int:
    """Bytes of the distinct tensor storages of a module (or of the modules an object holds as attributes)."""
    seen, total = set(), 0
    for module in _modules_of(obj):
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_meta:
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def _modules_of(obj: Any) -> list:
    """``obj`` if it is a torch module, else the torch modules among its attributes (an Embedder's ``model``)."""
    nn = sys.modules.get("torch.nn")
    if nn is None:
        return []
    if isinstance(obj, nn.Module):
        return [obj]
    return [v for v in getattr(obj, "__dict__", {}).values() if isinstance(v, nn.Module)]


def _weak_refs(obj: Any) -> list[weakref.ref]:
    """Weak references to ``obj`` and to the modules it holds (the memory that must go)."""
    refs = []
    for target in [obj, *(m for m in _modules_of(obj) if m is not obj)]:
        try:
            refs.append(weakref.ref(target))
        except TypeError:  # an object without weak reference support: check what it holds
            continue
    return refs


def _describe_referrers(obj: Any, ignore: Iterable[int]) -> list[str]:
    """Short descriptions of what refers to ``obj`` (dict keys such as IPython's ``_3``, lists, objects)."""
    ignore = set(ignore)
    out = []
    for ref in gc.get_referrers(obj):
        if id(ref) in ignore or type(ref).__name__ == "frame":
            continue
        if isinstance(ref, dict):
            keys = []  # (a loop, not a comprehension: a comprehension's closure cell would be one more referrer)
            for k, v in ref.items():
                if v is obj and len(keys) < 3:
                    keys.append(repr(k))
            out.append(f"a dict under key {', '.join(keys)}" if keys else "a dict")
        elif isinstance(ref, (list, tuple, set)):
            out.append(f"a {type(ref).__name__} of {len(ref)} item(s)")
        else:
            out.append(f"a {type(ref).__name__} object")
    return out


def free(holder: MutableMapping[str, Any] | Any, *names: str) -> int:
    """Delete ``names`` from ``holder`` (a dict such as ``globals()``, or an object's attributes), prove them gone.

    Returns the bytes of tensors that were freed. Raises :class:`StillReferencedError` naming what still holds
    an object (another variable, a list, IPython's ``_``/``Out``), so a notebook never loads the next large
    model on top of one it believes freed. Empties the CUDA cache when CUDA is in use.
    """
    refs, freed = {}, 0
    for name in names:
        obj = holder[name] if isinstance(holder, MutableMapping) else getattr(holder, name)
        freed += tensor_bytes(obj)
        refs[name] = _weak_refs(obj)
        if isinstance(holder, MutableMapping):
            del holder[name]
        else:
            delattr(holder, name)
        del obj
    gc.collect()
    alive = {name: [r() for r in rs if r() is not None] for name, rs in refs.items()}
    alive = {name: objs for name, objs in alive.items() if objs}
    if alive:
        lines = []
        for name, objs in alive.items():
            for obj in objs:
                held_by = _describe_referrers(obj, ignore=[id(objs), id(alive)]) or ["an unknown referrer"]
                lines.append(f"{name} ({type(obj).__name__}) is still referenced by: {'; '.join(held_by)}")
        raise StillReferencedError(
            "could not free " + ", ".join(alive) + ":\n  " + "\n  ".join(lines)
            + "\ndelete those references too (in a notebook, IPython's output history keeps the value of a cell "
            "that ended with it: `%reset -f out`), then call free() again or restart the kernel"
        )
    _empty_cuda_cache()
    return freed


def _empty_cuda_cache() -> None:
    """Give cached CUDA blocks back to the driver, if torch and CUDA are in use."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def is_referenced(ref: weakref.ref) -> bool:
    """Whether the object behind ``ref`` is still alive after a full garbage collection."""
    gc.collect()
    return ref() is not None
