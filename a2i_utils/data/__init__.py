"""Part 1 of the course (notebook 01): the data.

- ``classes``: the 13 scene classes;
- ``audio``, ``images``: robust readers for recordings and images, with errors that name the file;
- ``dataset``: an ADVANCE-shaped tree -> validated pairs -> the stored train/val/test split by place;
- ``advance``: downloading and extracting the real ADVANCE (full mode);
- ``synth``: the synthetic ADVANCE-shaped soundscape world (demo mode);
- ``cli``: ``a2i data synth|check|fetch``.
"""

from __future__ import annotations

import importlib

# Names of this package and the submodule each lives in: imported on first use (PEP 562), so that `a2i --help`,
# which imports ``a2i_utils.data.cli``, does not pay for torch (``audio`` imports it).
_WHERE = {"ADVANCE_COUNTS": "classes", "CLASSES": "classes", "Dataset": "dataset", "DatasetError": "dataset",
          "Pair": "dataset", "load_tree": "dataset", "prepare_dataset": "dataset", "scan_tree": "dataset",
          "split_by_base_id": "dataset", "ImageError": "images", "load_image": "images", "open_image": "images"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """``from a2i_utils.data import X``: import X's submodule now."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
