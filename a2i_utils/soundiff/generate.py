"""The generation core: recordings (or their embeddings) -> images, for any SounDiff pipeline.

Image ``j`` of every recording is drawn with its own ``torch.Generator`` seeded ``seed + j`` (initial latents and
the embedding noise alike), so the same recording and seed give the same image whatever the batch it is drawn in,
to within one intensity level (float32 round-off of the batch's matrix products; measured: 1 of 19,968 values).
The notebooks, the evaluation and the comparison CLI build on :func:`generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from a2i_utils.config import Config

BAR_INTERVAL_S = 1.0


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
    for k in tqdm(range(0, len(jobs), batch_size), desc="generating", disable=not progress,
                  mininterval=BAR_INTERVAL_S):
        chunk = jobs[k : k + batch_size]
        gens = [torch.Generator(device=device).manual_seed(seed + j) for _, j in chunk]
        emb = embeds[[i for i, _ in chunk]].to(device, pipe.unet.dtype)  # (b, D)
        images = pipe(image_embeds=emb, prompt=[prompt] * len(chunk), generator=gens, num_inference_steps=steps,
                      guidance_scale=guidance, noise_level=noise_level, height=size, width=size,
                      output_type="np").images  # (b, H, W, 3) float in [0, 1]
        for (i, j), img in zip(chunk, images):
            out[i, j] = np.round(img * 255).astype(np.uint8)
    return out


def generate_for_recordings(cfg: Config, pipe, embedder, audio_paths: Sequence[str | Path], prompt: str = "",
                            n: int = 1, seed: int | None = None, progress: bool = False) -> np.ndarray:
    """Recordings -> uint8 images (N, n, H, W, 3): ImageBind audio embeddings at ``imagebind.audio_scale``."""
    from a2i_utils.imagebind.cache import embed_files, scale_audio

    audio = embed_files(embedder, audio_paths, "audio", cfg, progress=progress)  # (N, D)
    sc = cfg.soundiff
    return generate(pipe, scale_audio(audio, cfg.imagebind.audio_scale), prompt, n, cfg.seed if seed is None else seed,
                    sc.sample_steps, sc.guidance_scale, sc.noise_level, progress=progress)
