"""The generation core: recordings (or their embeddings) -> images, for any SounDiff pipeline.

Image ``j`` of every recording is drawn with its own ``torch.Generator`` seeded ``seed + j`` (initial latents and
the embedding noise alike), so the same recording and seed give the same image whatever the batch it is drawn in,
to within one intensity level (float32 round-off of the batch's matrix products; measured: 1 of 19,968 values).
The notebooks, the evaluation and the comparison CLI build on :func:`generate`.

:func:`generate_cached` keeps what a call drew under the cache root (``generated/``), keyed by everything the
images depend on: the pipeline's identity (``pipe.key``: the weights' hash, or a fine-tune's run key), its
schedulers' configs, the embeddings' values, the prompt, the seeds, steps, guidance, noise level, size, batch size,
device and dtype. The same call again (a test, then the notebook, in ``make test``; a re-run cell) loads the same
images instead of drawing them. A pipeline without a ``key`` (a dry run, ``with_unet``'s ablations) is never cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from a2i_utils.config import Config

BAR_INTERVAL_S = 1.0
GENERATE_VERSION = 1  # bump when generate() draws something else from the same inputs


@torch.no_grad()
def generate(pipe, embeds: torch.Tensor, prompt: str = "", n: int = 1, seed: int = 0, steps: int = 20,
             guidance: float = 10.0, noise_level: int = 0, batch_size: int = 32, size: int | None = None,
             progress: bool = False) -> np.ndarray:
    """Embeddings (N, D) -> uint8 images (N, n, H, W, 3); image j of each embedding uses seed ``seed + j``."""
    device = pipe.unet.device
    jobs = [(i, j) for i in range(len(embeds)) for j in range(n)]
    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    out = np.zeros((len(embeds), n, size, size, 3), dtype=np.uint8)
    pipe.set_progress_bar_config(disable=True)  # our bar counts batches; the pipeline's would count steps
    cond, uncond = prompt_embeddings(pipe, prompt, guidance)  # (1, L, C) each; uncond None without guidance
    for k in tqdm(range(0, len(jobs), batch_size), desc="generating", disable=not progress,
                  mininterval=BAR_INTERVAL_S):
        chunk = jobs[k : k + batch_size]
        gens = [torch.Generator(device=device).manual_seed(seed + j) for _, j in chunk]
        emb = embeds[[i for i, _ in chunk]].to(device, pipe.unet.dtype)  # (b, D)
        b = len(chunk)
        images = pipe(image_embeds=emb, prompt_embeds=cond.repeat(b, 1, 1),  # (b, L, C)
                      negative_prompt_embeds=None if uncond is None else uncond.repeat(b, 1, 1), generator=gens,
                      num_inference_steps=steps, guidance_scale=guidance, noise_level=noise_level, height=size,
                      width=size, output_type="np").images  # (b, H, W, 3) float in [0, 1]
        for (i, j), img in zip(chunk, images):
            out[i, j] = np.round(img * 255).astype(np.uint8)
    return out


def prompt_embeddings(pipe, prompt: str, guidance: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt's text embedding and, with guidance (> 1, as diffusers decides), the unconditional one: (1, L, C)
    each, by the pipeline's own ``encode_prompt``. Encoded once per :func:`generate` call: the pipeline, handed a
    list of b prompts, would run its text encoder on 2b copies of the same two token sequences per batch (SD 2.1's
    is 340 M parameters over 77 tokens each)."""
    guided = guidance > 1.0
    cond, uncond = pipe.encode_prompt(prompt, pipe.unet.device, 1, guided)
    return cond, (uncond if guided else None)


def generation_key(pipe, embeds: torch.Tensor, prompt: str, n: int, seed: int, steps: int, guidance: float,
                    noise_level: int, batch_size: int = 32, size: int | None = None) -> str | None:
    """The cache key of a :func:`generate` call, or None when ``pipe`` has no ``key`` (nothing is cached)."""
    from a2i_utils.io import cache_key

    identity = getattr(pipe, "key", None)
    if identity is None:
        return None
    values = embeds.detach().to("cpu", torch.float32).contiguous().numpy()  # (N, D)
    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor  # as generate() resolves it
    payload = {
        "pipe": identity, "unet_dtype": str(pipe.unet.dtype), "device": pipe.unet.device.type,
        "scheduler": [type(pipe.scheduler).__name__, dict(pipe.scheduler.config)],
        "noising": dict(pipe.image_noising_scheduler.config), "embeds": [values.shape,
                                                                          hashlib.sha256(values.tobytes()).hexdigest()],
        "prompt": prompt, "n": n, "seed": seed, "steps": steps, "guidance": float(guidance),
        "noise_level": int(noise_level), "batch_size": batch_size, "size": size, "torch": torch.__version__,
    }
    return cache_key("generated", GENERATE_VERSION, payload)


def generate_cached(cfg: Config, pipe, embeds: torch.Tensor, prompt: str = "", n: int = 1, seed: int = 0,
                    steps: int = 20, guidance: float = 10.0, noise_level: int = 0,
                    progress: bool = False) -> np.ndarray:
    """:func:`generate`, kept in ``<cache>/generated/<key>.npy``: a repeated call loads its images (N, n, H, W, 3)."""
    from a2i_utils.io import atomic_write

    key = generation_key(pipe, embeds, prompt, n, seed, steps, guidance, noise_level)
    path = cfg.cache_dir / "generated" / f"{key}.npy"
    if key is not None and path.is_file():
        try:
            images = np.load(path, allow_pickle=False)
            if images.dtype == np.uint8 and images.ndim == 5 and images.shape[:2] == (len(embeds), n):
                return images
        except (OSError, ValueError):
            pass  # unreadable: drawn again and replaced below
        print(f"{path}: not a stack of {len(embeds)} x {n} uint8 images; drawing them again")
    images = generate(pipe, embeds, prompt, n, seed, steps, guidance, noise_level, progress=progress)
    if key is not None:
        atomic_write(path, lambda tmp: _save_npy(tmp, images))
    return images


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (given a name, it would add ``.npy`` to a temporary file's)."""
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def generate_for_recordings(cfg: Config, pipe, embedder, audio_paths: Sequence[str | Path], prompt: str = "",
                            n: int = 1, seed: int | None = None, progress: bool = False) -> np.ndarray:
    """Recordings -> uint8 images (N, n, H, W, 3): ImageBind audio embeddings at ``imagebind.audio_scale``."""
    from a2i_utils.imagebind.cache import embed_files, scale_audio

    audio = embed_files(embedder, audio_paths, "audio", cfg, progress=progress)  # (N, D)
    sc = cfg.soundiff
    return generate(pipe, scale_audio(audio, cfg.imagebind.audio_scale), prompt, n, cfg.seed if seed is None else seed,
                    sc.sample_steps, sc.guidance_scale, sc.noise_level, progress=progress)
