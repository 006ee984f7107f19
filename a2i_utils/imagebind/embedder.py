"""One interface for both ImageBind models: the official ``imagebind_huge`` (full) or the miniature (demo).

:func:`load_imagebind` returns an :class:`Embedder` (``imagebind.model``): the model, its identity (part of every
embedding cache key), device and dtype. ``imagebind.huge`` loads Meta's checkpoint; ``imagebind.mini`` loads the
shipped miniature or trains one. The loader is above the models: it imports them, they import only
``imagebind.model``.
"""

from __future__ import annotations

import torch
from torch import nn

from a2i_utils.config import Config
from a2i_utils.imagebind.model import MODALITIES, Embedder  # noqa: F401  (re-exported: the interface's old home)

IMAGEBIND_MODELS = ("huge", "mini", "huge-random")


def load_imagebind(cfg: Config, progress: bool = True) -> Embedder:
    """The model of ``cfg.imagebind.model``: ``"huge"`` (official weights), ``"mini"`` (trained here) or
    ``"huge-random"`` (the full-size architecture with seeded random weights, for the full-smoke preset)."""
    kind = cfg.imagebind.model
    if kind == "huge":
        from a2i_utils.imagebind.huge import load_imagebind_huge

        return load_imagebind_huge(cfg, progress=progress)
    if kind == "mini":
        from a2i_utils.imagebind.mini import load_or_train_mini

        return load_or_train_mini(cfg, progress=progress)
    if kind == "huge-random":
        return random_imagebind_huge(cfg)
    raise ValueError(f"unknown imagebind.model {kind!r}: use one of {', '.join(IMAGEBIND_MODELS)}")


def random_imagebind_huge(cfg: Config, builder=None) -> Embedder:
    """``imagebind_huge(pretrained=False)`` seeded with ``cfg.seed``: every full-size code path, nothing downloaded.

    Its embeddings mean nothing; it exists so that a new GPU box can run the whole course at full size in minutes
    (``A2I_MODE=full-smoke``). ``builder`` makes the model (tests pass a small ``ImageBindModel``).
    """
    from a2i_utils.compat import import_imagebind
    from a2i_utils.devices import torch_dtype

    device = cfg.resolved_device()
    dtype = torch_dtype(cfg.imagebind.dtype) if device.startswith("cuda") else torch.float32

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's random state is left as it was
            torch.manual_seed(cfg.seed)
            model = (builder or (lambda: import_imagebind().imagebind_huge(pretrained=False)))()
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    return LazyEmbedder(build, f"imagebind_huge-random-seed{cfg.seed}", device, dtype, cfg.imagebind.embed_dim)


class LazyEmbedder(Embedder):
    """An :class:`Embedder` whose model is built when first used: its identity, device and dtype are known before.

    The random ImageBind-huge of full-smoke (4.8 GB in float32) is then never built in a notebook that finds every
    embedding in the cache (notebook 05 after 04): one large model at a time, as on Colab's 12.7 GB.
    """

    def __init__(self, build, identity: str, device: str, dtype: torch.dtype, embed_dim: int) -> None:
        self._build, self._model, self._embed_dim = build, None, embed_dim
        super().__init__(None, identity, device, dtype)

    @property
    def model(self) -> nn.Module:
        """The model, built now if it was not yet."""
        if self._model is None:
            self._model = self._build()
        return self._model

    @model.setter
    def model(self, value) -> None:
        self._model = value

    @property
    def built(self) -> bool:
        """Whether the model exists yet."""
        return self._model is not None

    @property
    def embed_dim(self) -> int:
        """Output dimension of every modality head (known without building the model)."""
        return self._embed_dim

    def __repr__(self) -> str:
        return f"LazyEmbedder({self.identity!r}, device={self.device!r}, dtype={self.dtype}, built={self.built})"
