"""One interface for both ImageBind models: the official ``imagebind_huge`` (full) or the miniature (demo).

:func:`load_imagebind` returns an :class:`Embedder`: the model, its identity (part of every embedding cache
key), device and dtype. ``imagebind.huge`` loads Meta's checkpoint; ``imagebind.mini`` trains the miniature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from a2i_utils.config import Config
from a2i_utils.devices import autocast
from a2i_utils.imagebind.preprocess import load_text_inputs

MODALITIES = ("audio", "vision", "text")


@dataclass
class Embedder:
    """An ImageBind model with its identity (for cache keys), device and dtype."""

    model: nn.Module
    identity: str  # e.g. "imagebind_huge-4f2a..." or "mini-1c9e...": changes whenever the weights change
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    info: dict = field(default_factory=dict)  # training history and metrics of a miniature

    @property
    def embed_dim(self) -> int:
        """Output dimension of every modality head."""
        return self.model.modality_heads["audio"][-1].out_features

    @torch.no_grad()
    def embed(self, modality: str, inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs of one modality -> float32 CPU embeddings (B, D), as ImageBind returns them."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; use one of {MODALITIES}")
        x = inputs.to(self.device)
        x = x if modality == "text" else x.to(self.dtype)  # text inputs are token ids
        with autocast(self.device, self.dtype):
            out = self.model({modality: x})[modality]
        return out.float().cpu()

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> text embeddings (N, D)."""
        return self.embed("text", load_text_inputs(texts))


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

    torch.manual_seed(cfg.seed)
    model = (builder or (lambda: import_imagebind().imagebind_huge(pretrained=False)))()
    device = cfg.resolved_device()
    dtype = torch_dtype(cfg.imagebind.dtype) if device.startswith("cuda") else torch.float32
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return Embedder(model, f"imagebind_huge-random-seed{cfg.seed}", device, dtype)
