"""The one place that makes Meta's ImageBind importable with today's torch (FACTS §1).

``imagebind-unofficial`` imports ``pytorchvideo`` 0.1.5, which imports
``torchvision.transforms.functional_tensor``, a module torchvision renamed to ``_functional_tensor``.
We register the new module under the old name before importing, without touching site-packages.
Importing :mod:`a2i_utils` never imports ImageBind; call :func:`import_imagebind` when you need it.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType


class ImageBindImportError(ImportError):
    """ImageBind could not be imported; the message says what to install."""


def _alias_functional_tensor() -> None:
    """Expose ``torchvision.transforms._functional_tensor`` as ``...functional_tensor``."""
    old = "torchvision.transforms.functional_tensor"
    if old in sys.modules:
        return
    try:
        importlib.import_module(old)
    except ImportError:
        sys.modules[old] = importlib.import_module("torchvision.transforms._functional_tensor")


def import_imagebind() -> ModuleType:
    """Import and return ``imagebind.models.imagebind_model`` (with its ``ModalityType``)."""
    try:
        _alias_functional_tensor()
        import einops  # noqa: F401  (imported by imagebind but not declared by imagebind-unofficial)
        with warnings.catch_warnings():  # "pkg_resources is deprecated": imagebind.data needs it anyway
            warnings.simplefilter("ignore", UserWarning)
            import pkg_resources  # noqa: F401  (keep setuptools<82, which removed it)
    except ImportError as err:
        raise ImageBindImportError(
            f"ImageBind needs {err.name!r}: install the pinned requirements "
            "(pip install -r requirements.txt -c constraints.txt)"
        ) from err
    try:
        return importlib.import_module("imagebind.models.imagebind_model")
    except ImportError as err:
        raise ImageBindImportError(
            f"could not import ImageBind ({err}); install 'imagebind-unofficial==0.1.1' "
            "(the PyPI name 'imagebind' is an empty placeholder)"
        ) from err


def import_imagebind_data() -> ModuleType:
    """Import and return ``imagebind.data`` (ImageBind's own preprocessing), after the same fixes."""
    import_imagebind()
    return importlib.import_module("imagebind.data")
