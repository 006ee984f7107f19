"""The one place that makes Meta's ImageBind importable with today's torch (FACTS §1).

``imagebind-unofficial`` imports ``pytorchvideo`` 0.1.5, which imports
``torchvision.transforms.functional_tensor``, a module torchvision renamed to ``_functional_tensor``.
We register the new module under the old name before importing, without touching site-packages.
The package's ``__init__`` imports ``imagebind.data`` and so torchaudio, which a2i does not need: we import the
models without it (:func:`_register_imagebind_package`).
Importing :mod:`a2i_utils` never imports ImageBind; call :func:`import_imagebind` when you need it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import importlib.util
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


def _register_imagebind_package() -> None:
    """Register the ``imagebind`` package without running its ``__init__``.

    That ``__init__`` imports ``imagebind.data``, which imports torchaudio at module level; torchaudio has no release
    for torch >= 2.12 (and an older one fails to load its library with a newer torch). The models do not need it, so
    the package's submodules are imported on demand instead (``imagebind.data`` too, by :func:`import_imagebind_data`).
    """
    if "imagebind" in sys.modules:
        return
    spec = importlib.util.find_spec("imagebind")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("no package named 'imagebind'", name="imagebind")
    sys.modules["imagebind"] = importlib.util.module_from_spec(spec)  # its __init__ is not executed


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
        _register_imagebind_package()
        return importlib.import_module("imagebind.models.imagebind_model")
    except ImportError as err:
        raise ImageBindImportError(
            f"could not import ImageBind ({err}); install 'imagebind-unofficial==0.1.1' "
            "(the PyPI name 'imagebind' is an empty placeholder)"
        ) from err


def import_imagebind_data() -> ModuleType:
    """Import and return ``imagebind.data`` (ImageBind's own preprocessing), after the same fixes.

    ``imagebind.data`` imports torchaudio, which a2i does not need (there is none for torch >= 2.12): only the
    cross-checks against ImageBind's own loader call this. a2i's text path uses :func:`imagebind_tokenizer`.
    """
    import_imagebind()
    try:
        return importlib.import_module("imagebind.data")
    except (ImportError, OSError) as err:  # OSError: a torchaudio whose compiled library does not fit this torch
        raise ImageBindImportError(
            f"imagebind.data (ImageBind's own loaders) needs a working torchaudio ({type(err).__name__}: {err}); "
            "a2i itself does not: install the torchaudio of your torch release to run these cross-checks"
        ) from err


@functools.lru_cache(maxsize=1)
def imagebind_tokenizer():
    """ImageBind's BPE text tokenizer, as ``imagebind.data.load_and_transform_text`` builds it (without torchaudio)."""
    import_imagebind()
    preprocessors = importlib.import_module("imagebind.models.multimodal_preprocessors")
    vocab = importlib.resources.files("imagebind") / "bpe" / "bpe_simple_vocab_16e6.txt.gz"
    return preprocessors.SimpleTokenizer(bpe_path=str(vocab))
