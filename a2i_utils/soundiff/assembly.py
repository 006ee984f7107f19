"""Putting a ``StableUnCLIPImg2ImgPipeline`` together from its parts, with a weightless image-encoder stand-in.

SounDiff always passes ``image_embeds`` (ImageBind audio embeddings), so the pipeline's 632 M-parameter CLIP image
encoder is never called; but ``_encode_image`` reads ``next(self.image_encoder.parameters()).dtype`` even then
(FACTS §1). :class:`ImageEncoderStandIn` answers that question with one zero-size parameter and refuses to encode.

Below both the miniature (``soundiff.mini``) and the loader (``soundiff.pipeline``), which use it: it imports
neither, so every import points down.
"""

from __future__ import annotations

import torch
from torch import nn

from a2i_utils.soundiff.reference import CONFIGS


class ImageEncoderStandIn(nn.Module):
    """Takes the image encoder's place: it carries only the dtype the pipeline asks for (0 bytes of weights)."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.marker = nn.Parameter(torch.zeros(0, dtype=dtype), requires_grad=False)

    @property
    def device(self) -> torch.device:
        """Where the pipeline thinks the encoder lives (pipelines ask each component)."""
        return self.marker.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the pipeline casts images to (never used: no images are encoded)."""
        return self.marker.dtype

    def forward(self, *args, **kwargs):
        """Refuse: SounDiff hands the pipeline embeddings, never images."""
        raise RuntimeError("the image encoder is a stand-in (SounDiff passes image_embeds=...): it cannot encode")


def attach_stand_in(pipe, dtype: torch.dtype | None = None):
    """Register an :class:`ImageEncoderStandIn` as ``pipe.image_encoder``; return ``pipe``."""
    dtype = dtype or pipe.unet.dtype
    pipe.register_modules(image_encoder=ImageEncoderStandIn(dtype).to(pipe.unet.device))
    return pipe


def schedulers_and_normalizer(embed_dim: int, scheduler_config: dict | None = None):
    """The DDIM v-prediction sampler, the DDPM embedding-noising scheduler and a normaliser of ``embed_dim``."""
    from diffusers import DDIMScheduler, DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer

    sched = {k: v for k, v in (scheduler_config or CONFIGS["scheduler"]).items() if not k.startswith("_")}
    noising = {k: v for k, v in CONFIGS["image_noising_scheduler"].items() if not k.startswith("_")}
    return DDIMScheduler(**sched), DDPMScheduler(**noising), StableUnCLIPImageNormalizer(embedding_dim=embed_dim)


def assemble(unet, vae, text_encoder, tokenizer, embed_dim: int, image_size: int, scheduler_config=None):
    """A ``StableUnCLIPImg2ImgPipeline`` from its parts, with the image-encoder stand-in."""
    from diffusers import StableUnCLIPImg2ImgPipeline
    from transformers import CLIPImageProcessor

    scheduler, noising, normalizer = schedulers_and_normalizer(embed_dim, scheduler_config)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=image_size, size=image_size), image_encoder=None,
        image_normalizer=normalizer.to(unet.device, unet.dtype), image_noising_scheduler=noising, tokenizer=tokenizer,
        text_encoder=text_encoder, unet=unet, scheduler=scheduler, vae=vae,
    )
    return attach_stand_in(pipe)
