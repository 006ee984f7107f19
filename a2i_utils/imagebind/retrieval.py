"""How well audio and images line up: retrieval recall, scene accuracy from audio (notebook 04).

Also used by the evaluation of generated images (notebook 06).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from a2i_utils.config import Config
from a2i_utils.data import CLASSES
from a2i_utils.imagebind.cache import embed_files, embed_texts
from a2i_utils.imagebind.preprocess import class_prompts


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (Na, Nb) between rows of ``a`` (Na, D) and ``b`` (Nb, D)."""
    return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T


def recall_at_k(sim: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Retrieval recall: the fraction of rows i whose match (column i) is among the top k of row i.

    Ties count against the match (pessimistic): a candidate as similar as the true match ranks before it, so
    a collapsed embedder (all similarities equal) scores R@k = k/N at best, never a perfect 1.
    """
    n = sim.shape[0]
    if sim.shape[1] != n:
        raise ValueError(f"recall_at_k needs a square (query x match) matrix, got {tuple(sim.shape)}")
    d = sim.diag().unsqueeze(1)  # (N, 1): the true match's similarity
    rank = (sim > d).sum(dim=1) + (sim == d).sum(dim=1) - 1  # (N,): candidates that beat or tie the match
    return {k: float((rank < k).float().mean()) for k in ks}


def nearest_prototype(emb: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Index (N,) of the most cosine-similar prototype (C, D) for each embedding (N, D)."""
    return cosine_matrix(emb, prototypes).argmax(dim=1)


def class_means(emb: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean unit embedding of each class (C, D); a class with no member gets zeros."""
    unit = torch.nn.functional.normalize(emb, dim=-1)
    out = torch.zeros(n_classes, emb.shape[1])
    out.index_add_(0, labels, unit)
    return out / torch.bincount(labels, minlength=n_classes).clamp(min=1).unsqueeze(1)


def one_pair_per_recording(pairs: Sequence) -> list:
    """One pair per base id (the base pair ``00123`` itself when present, else the first ``_k``), in input order.

    ADVANCE's ``_k`` pairs reuse the recording of their base id with another image, so over all pairs a
    recording has several "right" images and retrieval could never reach R@1 = 1.
    """
    chosen: dict[str, object] = {}
    for p in pairs:
        if p.base_id not in chosen or (p.id == p.base_id and chosen[p.base_id].id != p.base_id):
            chosen[p.base_id] = p
    keep = {id(p) for p in chosen.values()}
    return [p for p in pairs if id(p) in keep]


def evaluate_alignment(embedder, dataset, cfg: Config, progress: bool = False) -> dict[str, float]:
    """Held-out audio-to-image retrieval (R@1, R@5) and scene accuracy from audio, with their chance levels.

    Everything is measured over the distinct validation recordings, one pair per base id
    (:func:`one_pair_per_recording`): ``_k`` pairs share their base id's recording, so they would give one
    recording several right images (capping R@1 below 1) and count it several times in the accuracy.
    ``n_val`` is the number of validation pairs, ``n_recordings`` the number of distinct recordings used.
    Scene accuracy is measured twice: against the text embeddings of the class prompts (zero-shot, as with
    ImageBind) and against the mean image embedding of each class over the training pairs.
    """
    n_val = len(dataset.val)
    val, train = one_pair_per_recording(dataset.val), dataset.train
    audio = embed_files(embedder, [p.audio_path for p in val], "audio", cfg, progress=progress)  # (N, D)
    image = embed_files(embedder, [p.image_path for p in val], "vision", cfg, progress=progress)  # (N, D)
    train_img = embed_files(embedder, [p.image_path for p in train], "vision", cfg, progress=progress)
    labels = torch.tensor([CLASSES.index(p.label) for p in val])
    train_labels = torch.tensor([CLASSES.index(p.label) for p in train])
    text = embed_texts(embedder, class_prompts(CLASSES), cfg)  # (13, D)
    means = class_means(train_img, train_labels, len(CLASSES))  # (13, D)
    recall = recall_at_k(cosine_matrix(audio, image), ks=(1, 5))
    n = len(val)
    return {
        "n_val": n_val,
        "n_recordings": n,
        "R@1": recall[1],
        "R@5": recall[5],
        "scene_acc_text": float((nearest_prototype(audio, text) == labels).float().mean()),
        "scene_acc_means": float((nearest_prototype(audio, means) == labels).float().mean()),
        "chance_R@1": 1 / n,
        "chance_R@5": min(5, n) / n,
        "chance_scene": 1 / len(CLASSES),
    }
