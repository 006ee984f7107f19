"""The interface both ImageBind models are used through: :class:`Embedder`, a model with its identity.

Below the models and their loader: ``imagebind.huge`` and ``imagebind.mini`` build an :class:`Embedder`,
``imagebind.embedder`` (the loader) picks which; this module imports neither, so every import points down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

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
