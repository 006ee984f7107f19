"""Best-of-N reranking, the paper's proposed post-processing: keep the candidate that best matches the recording.

For each recording, N candidates (seeds ``seed .. seed + N - 1``) are drawn; each is embedded with ImageBind's
vision tower and scored by the cosine similarity to the recording's ImageBind audio embedding; the best one is
kept. Compared, at equal compute (N samples per recording drawn in every row):

- **best of N**: the kept candidate's metric;
- **N = 1**: the first candidate alone (what one sample gives);
- **N independent samples**: the mean metric over all N candidates, i.e. what the same compute gives without
  selection (each sample judged on its own).

AIS uses the same ImageBind similarity that picks the candidate, so its gain is partly selection on the measure
itself; AIC uses an independent judge and is the honest test of whether the reranker helps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def audio_image_similarity(cand_emb: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of candidates (N, K, D) to their recording's audio embedding (N, D) -> (N, K)."""
    c = torch.nn.functional.normalize(cand_emb.float(), dim=-1)
    a = torch.nn.functional.normalize(audio.float(), dim=-1)
    return (c * a[:, None, :]).sum(-1)  # (N, K)


def best_index(cand_emb: torch.Tensor, audio: torch.Tensor, k: int | None = None) -> np.ndarray:
    """Index (N,) of the best of the first ``k`` candidates (all when None) of each recording."""
    sim = audio_image_similarity(cand_emb, audio)  # (N, K)
    return sim[:, :k].argmax(1).numpy()


def pick(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Candidates (N, K, ...) and one index per row (N,) -> the chosen ones (N, ...)."""
    return images[np.arange(len(idx)), idx]


def rerank_table(scores: dict, cand_emb: torch.Tensor, audio: torch.Tensor, ks: Sequence[int]) -> list[dict]:
    """Per-recording AIC and AIS for each N in ``ks``: best of N, N = 1, and N independent samples.

    ``scores``: per-candidate metrics {"AIC": (N, K), "AIS": (N, K)} (as ``metrics.image_scores`` returns them).
    Returns rows {"N", "metric", "best_of_n", "first", "independent"}, each value an array (N,) per recording.
    """
    rows = []
    for k in ks:
        idx = best_index(cand_emb, audio, k)  # (N,)
        for metric in ("AIC", "AIS"):
            s = np.asarray(scores[metric], dtype=float)  # (N, K)
            rows.append({"N": k, "metric": metric, "best_of_n": pick(s, idx), "first": s[:, 0],
                         "independent": s[:, :k].mean(axis=1)})
    return rows


def rerank_generate(pipe, embeds: torch.Tensor, audio: torch.Tensor, embedder, k: int, n: int = 1,
                    **gen_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images per recording, each the best of ``k`` candidates: (images (N, n, H, W, 3), similarity (N, n)).

    Output image j is chosen among seeds ``seed + j*k .. seed + j*k + k - 1``; ``embeds`` go to the U-Net (at its
    audio scale), ``audio`` is the raw ImageBind embedding used to score.
    """
    from a2i_utils.evaluation.metrics import embed_images
    from a2i_utils.soundiff.generate import generate

    cands = generate(pipe, embeds, n=n * k, **gen_kwargs)  # (N, n*k, H, W, 3)
    size = cands.shape[-3:]
    cands = cands.reshape(len(embeds), n, k, *size)  # (N, n, k, H, W, 3)
    emb = embed_images(embedder, cands).reshape(len(embeds) * n, k, -1)  # (N*n, k, D)
    sim = audio_image_similarity(emb, audio.repeat_interleave(n, 0))  # (N*n, k)
    idx = sim.argmax(1).numpy()
    flat = cands.reshape(len(embeds) * n, k, *size)
    chosen = pick(flat, idx).reshape(len(embeds), n, *size)
    return chosen, sim.max(1).values.numpy().reshape(len(embeds), n)
