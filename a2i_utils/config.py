"""One configuration for the whole course: named presets, one cache root, seed and device.

Pick a preset with the environment variable ``A2I_MODE`` (``demo``, the default, ``full``, or ``full-smoke``: the full
architectures with random weights and a few steps, to check a GPU box in minutes) or by
name in a notebook's parameters cell::

    cfg = get_config()                                    # A2I_MODE or "demo"
    cfg = get_config("demo", {"transformer.steps": 50})   # a preset with dotted overrides

``demo`` runs on a 2-core CPU with no network, on a synthetic ADVANCE-shaped dataset and small models of
the same classes. ``full`` uses the real ADVANCE data and the real pretrained weights on a GPU.
Both go through the same code; only these numbers differ.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODE_ENV = "A2I_MODE"
CACHE_ENV = "A2I_CACHE"
DEVICE_ENV = "A2I_DEVICE"
DATA_ROOT_ENV = "A2I_DATA_ROOT"  # an ADVANCE-shaped folder of your own (sets data.root)
OVERRIDES_ENV = "A2I_OVERRIDES"  # JSON of dotted overrides on top of the preset, e.g. '{"soundiff.image_size": 64}'
PAPER_SEED = 42
SECTIONS = ("data", "features", "transformer", "imagebind", "soundiff")  # in the order of the course


# ----------------------------------------------------------------------------------------------------------
# Sections, one per concern. Each module reads only its own section.
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how the synthetic one is made."""

    source: str = "synthetic"  # "synthetic" (made by a2i_utils.data.synth) or "advance" (downloaded); unused if root
    root: str = ""  # an ADVANCE-shaped folder you already have, used in place (never modified); "" = source's own
    per_class: int = 64  # synthetic pairs per scene class (64: 672 places, 135 test recordings to measure on)
    image_size: int = 128  # side of the synthetic JPEGs (ADVANCE: 512)
    sample_rate: int = 22_050  # rate the synthetic WAVs are written at
    duration_s: float = 10.0  # length of every recording
    # The split by base id (place), per class: val_fraction to validation (settings are chosen there), test_fraction
    # to test (every reported number), the rest to train. The paper: 90/10 train/validation, nothing held back.
    val_fraction: float = 0.1
    test_fraction: float = 0.2


@dataclass(frozen=True)
class FeatureConfig:
    """FFT features of the pixel transformer (paper §3.2): 500 sections x 220 bins."""

    sample_rate: int = 22_050
    duration_s: float = 10.0
    n_sections: int = 500
    n_bins: int = 220
    log_eps: float = 1e-4  # F = log(|rFFT| + log_eps); bin 0 (DC) is the one dropped (a2i_utils.transformer.features)


@dataclass(frozen=True)
class TransformerConfig:
    """The encoder-decoder pixel transformer with local 1D self-attention (paper §3.2, §4.1)."""

    image_size: int = 16  # images are image_size x image_size grayscale, 256 intensity classes (paper: 32)
    d_model: int = 64
    n_heads: int = 2
    n_enc_layers: int = 2
    n_dec_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.0
    token_dropout: float = 0.0  # share of input pixels hidden by a mask token in training (paper: none)
    block_len: int = 32  # query block of the local attention (demo: 2 rows of 16 pixels)
    mem_len: int = 32  # preceding positions each block may also attend to
    attention: str = "local"  # decoder self-attention: "local" (Image Transformer 1D) or "causal" (full)
    batch_size: int = 10
    # Learning-rate schedule (a2i_utils.transformer.training.lr_factor): Adam, linear warm-up to `lr` over
    # `warmup_steps`, then decay by `lr_decay`. OURS, not the paper's: the paper warms up "to 1e-7 in 300
    # batch steps" and "decays proportionally afterwards"; a peak of 1e-7 barely moves Adam's weights, so we
    # use a usual transformer peak (demo 1e-2 for a tiny model, full 3e-4) and the paper's 300 warm-up steps
    # in full mode. lr_decay="inverse" (lr ~ 1/step) is the closest reading of "proportionally".
    lr: float = 1e-2
    warmup_steps: int = 30
    lr_decay: str = "inverse_sqrt"  # "inverse_sqrt" (Vaswani et al., ours) or "inverse" (1/step)
    grad_clip: float = 1.0
    overfit_pairs: int = 20  # the paper's overfitting experiment: 20 pairs of one scene
    overfit_steps: int = 250  # demo: the loss is ~0 by then (notebook 03 prints how many images it redraws)
    steps: int = 300  # training on the whole training split (notebook 03 prints whether the held-out loss flattened)


@dataclass(frozen=True)
class ImageBindConfig:
    """ImageBind audio embeddings: the real ``imagebind_huge`` or a miniature trained by our code."""

    model: str = "mini"  # "huge" (official weights) or "mini" (trained here)
    embed_dim: int = 1024
    dtype: str = "float32"  # "float32", "bfloat16" or "float16" (GPU)
    batch_size: int = 16
    audio_scale: str = "imagebind"  # scale handed to the U-Net: "imagebind" (norm 20) or "unit" (norm 1)
    # The miniature (model="mini"): an ImageBindModel at these sizes, trained by a2i_utils.imagebind.mini.
    mini_dim: int = 64  # width of the vision and audio trunks
    mini_blocks: int = 2
    mini_heads: int = 4
    mini_text_dim: int = 32
    mini_side_dim: int = 16  # depth / thermal / IMU towers (built by the class, never trained here)
    mini_vision_patch: int = 28  # 224 / 28 = 8 x 8 image patches
    mini_audio_patch: int = 16  # fbank patches, no overlap: 128 x 204 -> 8 x 12
    mini_audio_drop_path: float = 0.1
    mini_vision_epochs: int = 12
    mini_audio_epochs: int = 30
    mini_train_batch: int = 32
    mini_lr: float = 1e-3
    mini_mask_same_recording: bool = True  # InfoNCE: a `_k` view of my recording is not a negative (False: old way)
    # Steps between in-stage checkpoints of the miniature's training (0: none). 150: every 20-40 s of demo CPU work,
    # a 26 MB file written in under 0.1 s. Left out of the repr that notebooks compare and out of the cache key: it
    # changes when files are written, never the weights.
    mini_checkpoint_every: int = field(default=150, repr=False)
    cpu_threads: int = 1  # torch threads for CPU training/embedding (0: torch's default; 1 is fastest when shared)


@dataclass(frozen=True)
class SounDiffConfig:
    """SounDiff (paper §3.3, §4.2): the U-Net of Stable Diffusion 2.1 UnCLIP fine-tuned on ImageBind audio embeddings.

    Full mode loads Stability's pretrained pipeline; demo mode pretrains a miniature UnCLIP of the same classes.
    """

    model: str = "mini"  # "sd21-unclip" (Stability's weights, full), "mini" (pretrained here, demo), "dry-run"
    # Where SD 2.1 UnCLIP comes from: a hub id (Stability withdrew its own repository in Nov 2025; FACTS §8) or a
    # local folder in the diffusers layout. Whatever serves it, the U-Net is pinned by its SHA-256 (soundiff.weights).
    pretrained_id: str = "sd2-community/stable-diffusion-2-1-unclip"
    revision: str = "main"  # a branch, tag or commit of pretrained_id (a commit pins the configs too)
    variant: str | None = None  # None: fp32 weights (U-Net 3.48 GB); "fp16": half the download (U-Net 1.74 GB)
    image_size: int = 768  # pixels of generated/training images (SD 2.1 UnCLIP: native 768; demo: 32)
    dtype: str = "float32"  # weights of the frozen parts and sampling: "float32", "bfloat16", "float16" (GPU)
    # Fine-tuning (paper §4.2): AdamW, lr 1e-6 -> 1e-7 (linear), betas (0.9, 0.999), weight decay 0.01, seed 42.
    lr: float = 1e-6
    lr_end: float = 1e-7
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.01
    batch_size: int = 4  # paper: 4 (SounDiff-L), 2 (SounDiff-S)
    steps: int = 91_400  # paper: 80 epochs of ~4,570 pairs at batch 4 (SounDiff-L)
    steps_s: int = 36_400  # paper: 280 epochs of ~260 train-station pairs at batch 2 (SounDiff-S)
    grad_accum: int = 1
    views: int = 1  # latents cached per training image: 1, or 8 (its flips and quarter turns: demo)
    latent_batch: int = 4  # images the latent pass reads and encodes at once (its memory; not in the run key)
    cond_dropout: float = 0.0  # share of samples whose whole class_labels (and prompt) are dropped (ours; paper: 0)
    noise_level: int = 0  # unCLIP embedding noise level for class_labels, in training and sampling
    prompt_l: str = ""  # SounDiff-L: no prompt
    prompt_s: str = "satellite image"  # SounDiff-S
    subset_s: str = "train station"  # SounDiff-S trains on this class only
    # "auto": bf16 on GPUs that compute it natively (Ampere and later), else fp16 with a gradient scaler (a T4),
    # none on the CPU; or "no", "fp16", "bf16"
    mixed_precision: str = "auto"
    lora: bool = False  # LoRA adapters (peft) on the U-Net's attention instead of a full fine-tune
    lora_rank: int = 8
    # Under LoRA, also train class_embedding (how the U-Net reads the audio) whole. Measured (demo, 135 test
    # recordings, bench/results/bench_lora.txt): AIC 0.387 with it, 0.274 without (= zero-shot), paired +0.113
    # [+0.039, +0.187].
    lora_class_embedding: bool = True
    grad_checkpointing: bool = False
    optimizer: str = "adamw"  # "adamw" or "adafactor" (memory-lean, torch.optim.Adafactor)
    compile: bool = False  # torch.compile the U-Net
    channels_last: bool = False
    checkpoint_every: int = 1000  # steps between checkpoints (0: only the final weights)
    cpu_threads: int = 1
    # Sampling
    sample_steps: int = 20
    guidance_scale: float = 10.0  # the pipeline's default
    eval_seeds: int = 4  # images per held-out recording when measuring scene accuracy
    # The miniature UnCLIP of demo mode (model="mini"): sizes and pretraining, chosen on this CPU (notebook 05)
    mini_vae_channels: tuple = (16, 32, 32)  # x4 downsampling: 32 px -> 8 x 8 x 4 latents
    mini_vae_steps: int = 300
    mini_unet_channels: tuple = (32, 64)
    mini_text_dim: int = 32  # width of the tiny CLIP text encoder (cross-attention dim)
    mini_unet_steps: int = 1200
    mini_batch: int = 64
    mini_lr: float = 2e-3
    mini_ema: float = 0.995  # EMA decay of the pretrained U-Net's weights
    mini_max_noise_level: int = 500  # unCLIP embedding noise augmentation in pretraining: levels 0..this
    mini_cond_dropout: float = 0.1  # pretraining: share of samples with the condition dropped (for guidance)
    # Steps between in-stage checkpoints of the VAE and U-Net pretraining (0: none). 150: every 35-75 s of demo CPU
    # work, a 17 MB file (U-Net) written in 0.2 s. Not in the compared repr nor the cache key (as imagebind's).
    mini_checkpoint_every: int = field(default=150, repr=False)
    # The scene classifier that measures whether an image shows its recording's scene (a2i_utils.evaluation)
    clf_steps: int = 300
    clf_lr: float = 3e-3


@dataclass(frozen=True)
class Config:
    """Everything a notebook or script needs; build with :func:`get_config`."""

    mode: str = "demo"
    seed: int = PAPER_SEED
    device: str = "auto"  # "auto" = cuda > mps > cpu
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    imagebind: ImageBindConfig = field(default_factory=ImageBindConfig)
    soundiff: SounDiffConfig = field(default_factory=SounDiffConfig)

    # --- derived paths: everything downloaded, computed or trained lives under cache_dir -------------------
    @property
    def downloads_dir(self) -> Path:
        return self.cache_dir / "downloads"

    @property
    def datasets_dir(self) -> Path:
        return self.cache_dir / "datasets"

    @property
    def features_dir(self) -> Path:
        return self.cache_dir / "features"

    @property
    def embeddings_dir(self) -> Path:
        return self.cache_dir / "embeddings"

    @property
    def checkpoints_dir(self) -> Path:
        return self.cache_dir / "checkpoints"

    @property
    def figures_dir(self) -> Path:
        return self.cache_dir / "figures" / self.mode

    def resolved_device(self) -> str:
        """The device to use: the configured one, ``A2I_DEVICE``, or cuda > mps > cpu."""
        return resolve_device(self.device)

    def replace(self, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Config:
        """A copy with dotted overrides (``{"transformer.steps": 10}``) and/or top-level fields."""
        return _apply_overrides(dataclasses.replace(self, **kwargs), overrides or {})

    def summary(self) -> str:
        """A short, path-free text for notebooks (stable across machines, so nbval can compare it)."""
        lines = [f"mode={self.mode} seed={self.seed}"]
        for section in SECTIONS:
            values = dataclasses.asdict(getattr(self, section))
            lines.append(f"{section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        return "\n".join(lines)


PRESETS: dict[str, dict[str, Any]] = {
    # Small enough for a 2-core CPU with no network: synthetic data, small models trained here.
    "demo": {
        # The miniature UnCLIP at 32 px; fine-tuning at a larger lr than the paper's 1e-6 (ours, for minutes of CPU).
        "soundiff.image_size": 32,
        "soundiff.lr": 1e-3,
        "soundiff.lr_end": 1e-4,
        "soundiff.batch_size": 64,
        "soundiff.steps": 300,
        "soundiff.steps_s": 100,
        "soundiff.cond_dropout": 0.1,
        "soundiff.views": 8,
        "soundiff.checkpoint_every": 100,
        "soundiff.guidance_scale": 5.0,  # ours: SounDiff-L minus zero-shot +0.17 at 5, +0.10 at 3 (51 recordings)
        "soundiff.sample_steps": 25,
    },
    # The paper's setting: real ADVANCE, real ImageBind-huge, paper-size transformer, on a GPU.
    "full": {
        "data.source": "advance",
        "data.image_size": 512,
        "transformer.image_size": 32,
        "transformer.d_model": 512,
        "transformer.n_heads": 8,
        "transformer.n_enc_layers": 6,
        "transformer.n_dec_layers": 6,
        "transformer.d_ff": 2048,
        "transformer.dropout": 0.1,
        "transformer.block_len": 128,
        "transformer.mem_len": 128,
        "transformer.batch_size": 16,
        "transformer.lr": 3e-4,
        "transformer.warmup_steps": 300,
        "transformer.overfit_steps": 5000,
        "transformer.steps": 100_000,
        "imagebind.model": "huge",
        "imagebind.embed_dim": 1024,
        "imagebind.dtype": "bfloat16",
        "imagebind.batch_size": 64,
        "soundiff.model": "sd21-unclip",
        "soundiff.dtype": "bfloat16",
        "soundiff.batch_size": 4,
        # Guidance 10 extrapolates away from the unconditional branch, so the U-Net must keep seeing it: SD 2.1
        # UnCLIP's own training config dropped the embedding with p 0.25 (FACTS §2). Ours: the paper's is 0.
        "soundiff.cond_dropout": 0.25,
    },
}
# Every full-mode code path in a few minutes on a new GPU box, nothing downloaded: the full architectures and image
# sizes with seeded random weights, the synthetic data, a few training and sampling steps. Its pictures mean nothing.
PRESETS["full-smoke"] = {
    **PRESETS["full"],
    "data.source": "synthetic",
    # Notebook 01 corrupts copies of 5 pairs of one class (4 failed there: 0 usable pairs), and the split needs 3
    # places in every class for a validation and a test place: 5 pairs gave one class 2 places (seed 42), 6 give 4.
    "data.per_class": 6,
    "transformer.overfit_pairs": 4,
    "transformer.overfit_steps": 3,
    "transformer.steps": 3,
    "imagebind.model": "huge-random",
    "soundiff.model": "dry-run",
    "soundiff.steps": 2,
    "soundiff.steps_s": 2,
    "soundiff.checkpoint_every": 1,
    "soundiff.sample_steps": 2,
    "soundiff.eval_seeds": 1,
}


def default_cache_dir() -> Path:
    """``A2I_CACHE`` if set, else the user's cache folder (``~/.cache/a2i`` on Linux); never the notebook's."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("a2i", appauthor=False))


def resolve_device(device: str = "auto") -> str:
    """``A2I_DEVICE`` beats ``auto``; ``auto`` picks cuda > mps > cpu."""
    if device == "auto":
        device = os.environ.get(DEVICE_ENV, "auto")
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def get_config(mode: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The preset ``mode`` (default: ``A2I_MODE`` or ``"demo"``) with optional dotted ``overrides``."""
    mode = mode or os.environ.get(MODE_ENV) or "demo"
    if mode not in PRESETS:
        valid = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown preset {mode!r} (from {MODE_ENV} or the notebook); valid presets: {valid}")
    cfg = _apply_overrides(Config(mode=mode), PRESETS[mode])
    if os.environ.get(DATA_ROOT_ENV):
        cfg = _apply_overrides(cfg, {"data.root": os.environ[DATA_ROOT_ENV]})
    try:
        cfg = _apply_overrides(cfg, env_overrides())
    except KeyError as err:
        raise KeyError(f"{OVERRIDES_ENV}: {err.args[0]}") from None
    return _apply_overrides(cfg, overrides or {})


def env_overrides() -> dict[str, Any]:
    """The dotted overrides of ``A2I_OVERRIDES`` (a JSON object; lists become tuples), or ``{}``.

    ``make smoke`` uses it to lower the image size for a CPU without another preset; a bad value names the variable.
    """
    import json

    text = os.environ.get(OVERRIDES_ENV, "").strip()
    if not text:
        return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{OVERRIDES_ENV} is not JSON ({err}): {text!r}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{OVERRIDES_ENV} must be a JSON object of dotted keys, got {text!r}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Apply ``{"section.field": value, "field": value}`` to a frozen config, refusing unknown keys."""
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        target = getattr(cfg, section, None) if section else cfg
        if not dataclasses.is_dataclass(target) or name not in {f.name for f in dataclasses.fields(target)}:
            raise KeyError(f"unknown config key {key!r}")
        if name == "cache_dir":
            value = Path(value).expanduser()
        new = dataclasses.replace(target, **{name: value})
        cfg = dataclasses.replace(cfg, **{section: new}) if section else new
    return cfg


def seed_everything(seed: int = PAPER_SEED) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (seeds the legacy global generator that libraries still use)
    torch.manual_seed(seed)
