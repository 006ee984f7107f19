"""The conditioning of the U-Net, built exactly as ``StableUnCLIPImg2ImgPipeline`` builds it at sampling.

``class_labels`` (B, 2D): the image (here: audio) embedding, normalised with the pipeline's
``StableUnCLIPImageNormalizer``, noised by its ``image_noising_scheduler`` at ``noise_level``, unnormalised, then
concatenated with a D-dimensional sinusoidal embedding of ``noise_level`` (``noise_image_embeddings``). The
unconditional input of classifier-free guidance is ``torch.zeros_like`` of that whole vector, with the encoded
empty prompt.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_timestep_embedding


def class_labels(pipe, embeds: torch.Tensor, noise_level: int | torch.Tensor = 0,
                 noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, D) embeddings -> (B, 2D) ``class_labels``; ``noise_level`` an int or one level per sample (B,).

    The same operations as ``pipe.noise_image_embeddings``, with per-sample levels allowed (unCLIP's training
    augmentation draws one level per sample).
    """
    b, d = embeds.shape
    if noise is None:
        noise = torch.randn(embeds.shape, generator=generator, dtype=embeds.dtype,
                            device=generator.device if generator is not None else "cpu").to(embeds.device)
    levels = torch.as_tensor(noise_level, device=embeds.device).long().expand(b)  # (B,)
    norm = pipe.image_normalizer
    x = (embeds - norm.mean.to(embeds)) / norm.std.to(embeds)  # normaliser.scale
    x = pipe.image_noising_scheduler.add_noise(x, timesteps=levels, noise=noise)
    x = x * norm.std.to(embeds) + norm.mean.to(embeds)  # normaliser.unscale
    level_emb = get_timestep_embedding(levels, d, flip_sin_to_cos=True, downscale_freq_shift=0)  # (B, D)
    return torch.cat([x, level_emb.to(x.dtype)], dim=1)  # (B, 2D)


def drop_condition(labels: torch.Tensor, prompt_embeds: torch.Tensor, empty_prompt: torch.Tensor,
                   drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the condition of samples where ``drop`` (B,) is True by the pipeline's unconditional input.

    ``labels`` (B, 2D) -> zeros of the whole vector; ``prompt_embeds`` (B, L, C) -> the encoded empty prompt
    ``empty_prompt`` (1, L, C).
    """
    keep = (~drop).to(labels.dtype)
    labels = labels * keep[:, None]  # (B, 2D): zero rows where dropped
    prompt = torch.where(drop[:, None, None], empty_prompt.to(prompt_embeds), prompt_embeds)  # (B, L, C)
    return labels, prompt


@torch.no_grad()
def encode_prompt(pipe, prompt: str, device: str | torch.device | None = None) -> torch.Tensor:
    """The prompt embedding (1, L, C), by the pipeline's own ``encode_prompt`` (the same at training and sampling),
    on ``device`` (default: the text encoder's own: token ids sent elsewhere fail on a GPU)."""
    return pipe.encode_prompt(prompt, device or pipe.text_encoder.device, 1, False)[0]
