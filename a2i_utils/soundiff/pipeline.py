"""Loading a ``StableUnCLIPImg2ImgPipeline``: SD 2.1 UnCLIP's weights (full), the miniature (demo), or a dry run.

SounDiff always passes ``image_embeds`` (ImageBind audio embeddings), so the pipeline's 632 M-parameter CLIP image
encoder is never called; but ``_encode_image`` reads ``next(self.image_encoder.parameters()).dtype`` even then
(FACTS §1). :class:`ImageEncoderStandIn` answers that question with one zero-size parameter and refuses to encode.
"""

from __future__ import annotations

import torch
from torch import nn

from a2i_utils.config import Config
from a2i_utils.devices import cpu_channels_last, torch_dtype
from a2i_utils.soundiff.assembly import (  # noqa: F401  (re-exported: their old home)
    ImageEncoderStandIn,
    assemble,
    attach_stand_in,
    schedulers_and_normalizer,
)
from a2i_utils.soundiff.reference import CONFIGS

PIPELINE_CLASS = "StableUnCLIPImg2ImgPipeline"


def load_pipeline(cfg: Config, progress: bool = True):
    """The pipeline of ``cfg.soundiff.model``: ``"sd21-unclip"``, ``"mini"`` (trained if needed) or ``"dry-run"``."""
    kind = cfg.soundiff.model
    if kind == "sd21-unclip":
        return load_pretrained_pipeline(cfg, progress=progress)
    if kind == "mini":
        from a2i_utils.soundiff.mini import load_or_pretrain_mini

        return load_or_pretrain_mini(cfg, progress=progress)
    if kind == "dry-run":
        return dry_run_pipeline(cfg.resolved_device(), torch_dtype(cfg.soundiff.dtype), cfg.soundiff.image_size)
    raise ValueError(f"unknown soundiff.model {kind!r}: use 'sd21-unclip', 'mini' or 'dry-run'")


def load_pretrained_pipeline(cfg: Config, progress: bool = True):
    """SD 2.1 UnCLIP from ``soundiff.pretrained_id`` (hub mirror or folder), verified, in ``soundiff.dtype``.

    :func:`a2i_utils.soundiff.weights.ensure_weights` fetches only the files SounDiff loads and checks their
    hashes; each weighted component is loaded from its one safetensors file (its own variant), the tokenizer,
    schedulers and feature extractor from their configs; the image encoder is the stand-in (never downloaded).
    """
    from diffusers import AutoencoderKL, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPTextModel

    from a2i_utils.soundiff.weights import component_variants, ensure_weights, weights_key

    device, dtype = cfg.resolved_device(), torch_dtype(cfg.soundiff.dtype)
    if device == "cpu" and dtype != torch.float32:
        dtype = torch.float32  # reduced precision is for GPUs
    folder, files, stamp = ensure_weights(cfg, progress=progress)
    variants = component_variants(files)
    classes = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
               "image_normalizer": StableUnCLIPImageNormalizer}
    parts = {name: cls.from_pretrained(folder, subfolder=name, variant=variants[name], use_safetensors=True,
                                       dtype=dtype)
             for name, cls in classes.items()}
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(folder, **parts, image_encoder=None, use_safetensors=True,
                                                       dtype=dtype)
    pipe.key = weights_key(files, stamp)  # the same from any mirror: the U-Net's content hash
    return attach_stand_in(pipe.to(device), dtype)


FULL_SIZE_MODULES = ("unet", "vae", "text_encoder", "image_encoder")


def full_size_modules(device: str | torch.device = "meta", dtype: torch.dtype = torch.float32,
                      names: tuple[str, ...] = FULL_SIZE_MODULES) -> dict[str, nn.Module]:
    """The networks ``names`` of SD 2.1 UnCLIP at full size from :data:`CONFIGS`, random weights (meta: no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    def args(name):
        return {k: v for k, v in CONFIGS[name].items() if not k.startswith("_")}

    build = {
        "unet": lambda: UNet2DConditionModel(**args("unet")),
        "vae": lambda: AutoencoderKL(**args("vae")),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**args("text_encoder"))),
        "image_encoder": lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**args("image_encoder"))),
    }
    mods = {}
    for name in names:  # one at a time, each in its dtype before the next is built (peak: one fp32 copy)
        with torch.device(device):
            mods[name] = build[name]().to(dtype)
    return mods


def dry_run_pipeline(device: str = "cpu", dtype: torch.dtype = torch.float32, image_size: int | None = None):
    """The full-size architecture with random weights and no download (for a lent GPU), image encoder excluded
    (never built). ``image_size``: the pipeline's default output size (``soundiff.image_size``; None: native 768)."""
    from a2i_utils.soundiff.mini import offline_tokenizer

    mods = full_size_modules("cpu", dtype, names=("unet", "vae", "text_encoder"))
    for name in ("unet", "vae"):  # bfloat16 on a CPU (the CPU smoke test): NCHW convolutions take minutes
        cpu_channels_last(mods[name], device, dtype)
    size = image_size or CONFIGS["pipeline"]["native_resolution"]
    pipe = assemble(mods["unet"], mods["vae"], mods["text_encoder"], offline_tokenizer(77), embed_dim=1024,
                    image_size=size)
    pipe.unet.register_to_config(sample_size=size // pipe.vae_scale_factor)  # what generate() draws by default
    return pipe.to(device)


def count_params_m(module: nn.Module) -> float:
    """Parameters in millions, rounded to 0.1."""
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)
