"""The systems compared in notebook 06 and by ``a2i generate`` / ``a2i evaluate``, thin over ``a2i_utils.soundiff``.

- ``baseline``: the pretrained UnCLIP (demo: the miniature, trained on vision embeddings only) fed ImageBind audio
  embeddings zero-shot, the paper's ImageBind + UnCLIP baseline;
- ``soundiff-l``: its U-Net fine-tuned on all training pairs, no prompt (SounDiff-L);
- ``soundiff-s``: fine-tuned on the train-station pairs with the "satellite image" prompt (SounDiff-S);
- a folder: any saved fine-tune (``unet/`` or ``lora/``, as ``a2i train soundiff`` writes it).

Each of the paper's columns is a system with or without the "satellite image" prompt (``soundiff.prompt_s``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from a2i_utils.config import Config
from a2i_utils.evaluation import NAMED

LABELS = {"baseline": "baseline", "soundiff-l": "SounDiff-L", "soundiff-s": "SounDiff-S"}


@dataclass
class System:
    """A loaded pipeline with its name and the prompt it was trained with."""

    name: str
    pipe: object
    trained_prompt: str


class Loader:
    """Loads (or trains, through SounDiff's train-or-load functions) the dataset, ImageBind and each system once."""

    def __init__(self, cfg: Config, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self._dataset = self._embedder = self._base = None
        self._systems: dict[str, System] = {}

    @property
    def dataset(self):
        """The prepared dataset of the preset."""
        if self._dataset is None:
            from a2i_utils.data import prepare_dataset

            self._dataset = prepare_dataset(self.cfg, progress=self.progress)
        return self._dataset

    @property
    def embedder(self):
        """The preset's ImageBind."""
        if self._embedder is None:
            from a2i_utils.imagebind.embedder import load_imagebind

            self._embedder = load_imagebind(self.cfg, progress=self.progress)
        return self._embedder

    @property
    def base(self):
        """The pretrained pipeline (demo: the miniature UnCLIP, pretrained if needed)."""
        if self._base is None:
            if self.cfg.soundiff.model == "mini":
                from a2i_utils.soundiff.mini import load_or_pretrain_mini

                self._base = load_or_pretrain_mini(self.cfg, self.dataset, self.embedder, progress=self.progress)
            else:
                from a2i_utils.soundiff.pipeline import load_pipeline

                self._base = load_pipeline(self.cfg, progress=self.progress)
            self._base.set_progress_bar_config(disable=True)
        return self._base

    def system(self, name: str) -> System:
        """``baseline``, ``soundiff-l``, ``soundiff-s`` or the folder of a saved fine-tune."""
        if name not in self._systems:
            self._systems[name] = self._load(name)
        return self._systems[name]

    def _load(self, name: str) -> System:
        from a2i_utils.soundiff.training import load_finetuned, load_or_finetune, variant_of

        if name == "baseline":
            return System("baseline", self.base, "")
        if name in NAMED:
            variant = variant_of(self.cfg, NAMED[name])
            pipe, _ = load_or_finetune(self.cfg, variant, self.base, self.dataset, self.embedder,
                                       progress=self.progress)
            return System(LABELS[name], pipe, variant.prompt)
        folder = Path(name)
        if not folder.is_dir():
            raise ValueError(f"--model {name!r}: not one of {', '.join(NAMED)} and not a folder with a saved fine-tune")
        return System(folder.name, load_finetuned(self.base, folder), "")

    def audio_embeddings(self, paths, skipped: list | None = None) -> torch.Tensor:
        """Raw ImageBind audio embeddings (N, D) of the files (cached by content); ``skipped``: as in ``embed_files``
        (unreadable files listed there and left out, instead of raising)."""
        from a2i_utils.imagebind.cache import embed_files

        return embed_files(self.embedder, paths, "audio", self.cfg, progress=False, skipped=skipped)

    def unet_input(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio embeddings at the scale handed to the U-Net (``imagebind.audio_scale``)."""
        from a2i_utils.imagebind.cache import scale_audio

        return scale_audio(audio, self.cfg.imagebind.audio_scale)


def draw(loader: Loader, system: System, audio: torch.Tensor, prompt: str = "", n: int = 1, seed: int | None = None,
         steps: int | None = None, guidance: float | None = None, noise_level: int | None = None) -> np.ndarray:
    """uint8 images (N, n, H, W, 3) of one system for raw audio embeddings (N, D); preset defaults where None
    (cached: :func:`a2i_utils.soundiff.generate.generate_cached`)."""
    from a2i_utils.soundiff.generate import generate_cached

    sc, cfg = loader.cfg.soundiff, loader.cfg
    return generate_cached(cfg, system.pipe, loader.unet_input(audio), prompt, n=n,
                           seed=cfg.seed if seed is None else seed, steps=steps or sc.sample_steps,
                           guidance=sc.guidance_scale if guidance is None else guidance,
                           noise_level=sc.noise_level if noise_level is None else noise_level)


def table1_columns(cfg: Config, systems=("baseline", "soundiff-l", "soundiff-s")) -> list[tuple[str, str, str]]:
    """The paper's Table 1 columns: (label, system, prompt), each system without and with the satellite prompt."""
    p = cfg.soundiff.prompt_s
    return [(f"{LABELS.get(s, s)}{' + prompt' if prompt else ''}", s, prompt) for s in systems for prompt in ("", p)]


def pixel_transformer_samples(cfg: Config, dataset, pairs, seed: int | None = None,
                              progress: bool = False) -> tuple[np.ndarray, dict]:
    """Grayscale samples (N, s, s) uint8 of notebook 03's transformer (train split) for ``pairs``, and its history.

    Loaded the way notebook 03 trains it (``train_or_load`` with the same name, data and config: found in the cache
    after notebook 03, trained here otherwise); sampled at temperature 1 with one generator seeded ``seed``.
    """
    from a2i_utils.transformer.features import FeatureNormalizer, features_for_pairs
    from a2i_utils.transformer.training import build_pixel_dataset, heldout_eval_every, train_or_load

    norm = FeatureNormalizer().fit(features_for_pairs(dataset.train, cfg, progress=progress))  # train statistics
    train_set = build_pixel_dataset(dataset.train, cfg, norm, progress=progress)
    val_set = build_pixel_dataset(dataset.val, cfg, norm, progress=progress)
    steps = cfg.transformer.steps  # the very run of notebook 03, held-out evaluations included (same cache entry)
    model, hist = train_or_load(cfg, train_set, "train-split", steps=steps, progress=progress, val_set=val_set,
                                eval_every=heldout_eval_every(steps))
    feats = build_pixel_dataset(list(pairs), cfg, norm, progress=progress).features  # (N, 500, 220)
    device = cfg.resolved_device()
    gen = torch.Generator(device=device).manual_seed(cfg.seed if seed is None else seed)
    return model.sample(feats.to(device), temperature=1.0, generator=gen).cpu().numpy(), hist
