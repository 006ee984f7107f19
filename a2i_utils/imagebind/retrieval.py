"""How well audio and images line up: retrieval recall, scene accuracy from audio (notebook 04).

Also used by the evaluation of generated images (notebook 06).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from a2i_utils.config import Config
from a2i_utils.data import CLASSES
from a2i_utils.imagebind.cache import embed_files, embed_texts
from a2i_utils.imagebind.preprocess import class_prompts


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` itself, or a ValueError counting its NaN/infinite entries (a broken embedder, a corrupt file)."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{what}: {bad} non-finite value(s) (NaN or inf) in a {tuple(x.shape)} tensor; "
                         "the embeddings are broken, so no metric can be computed from them")
    return x


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (Na, Nb) between rows of ``a`` (Na, D) and ``b`` (Nb, D)."""
    return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T


def recall_at_k(sim: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Retrieval recall: the fraction of rows i whose match (column i) is among the top k of row i.

    Ties count against the match (pessimistic): a candidate as similar as the true match ranks before it, so
    a collapsed embedder (all similarities equal) scores R@k = k/N at best, never a perfect 1. Non-finite
    similarities raise ValueError.
    """
    n = sim.shape[0]
    if sim.ndim != 2 or sim.shape[1] != n:
        raise ValueError(f"recall_at_k needs a square (query x match) matrix, got {tuple(sim.shape)}")
    check_finite(sim, "recall_at_k similarities")  # NaN compares False everywhere: it would rank first
    d = sim.diag().unsqueeze(1)  # (N, 1): the true match's similarity
    rank = (sim > d).sum(dim=1) + (sim == d).sum(dim=1) - 1  # (N,): candidates that beat or tie the match
    return {k: float((rank < k).float().mean()) for k in ks}


def nearest_prototype(emb: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Index (N,) of the most cosine-similar prototype (C, D) for each embedding (N, D)."""
    check_finite(emb, "nearest_prototype embeddings")
    check_finite(prototypes, "nearest_prototype prototypes")
    return cosine_matrix(emb, prototypes).argmax(dim=1)


def class_means(emb: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean unit embedding of each class (C, D); a class with no member gets zeros."""
    check_finite(emb, "class_means embeddings")
    unit = torch.nn.functional.normalize(emb, dim=-1)
    out = torch.zeros(n_classes, emb.shape[1])
    out.index_add_(0, labels, unit)
    return out / torch.bincount(labels, minlength=n_classes).clamp(min=1).unsqueeze(1)


def recording_key(pair) -> tuple[str, str]:
    """Which recording a pair uses: (class, base id). Ids are unique per class folder, not across classes."""
    return pair.label, pair.base_id


def one_pair_per_recording(pairs: Sequence) -> list:
    """One pair per recording (class, base id): the base pair ``00123`` when present, else the first ``_k``.

    ADVANCE's ``_k`` pairs reuse the recording of their base id with another image, so over all pairs a
    recording has several "right" images and retrieval could never reach R@1 = 1. The same 5-digit id in
    two class folders is two places with two recordings: both are kept. Pairs come back in input order.
    """
    chosen: dict[tuple[str, str], object] = {}
    for p in pairs:
        key = recording_key(p)
        if key not in chosen or (p.id == p.base_id and chosen[key].id != p.base_id):
            chosen[key] = p
    keep = {id(p) for p in chosen.values()}
    return [p for p in pairs if id(p) in keep]


def within_scene_retrieval(sim: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Does a recording find its own image among the images of its scene? R@1 and pairwise, with chance.

    ``sim`` (N, N) audio x image, ``labels`` (N,) scene of each pair. For query i only the columns of its
    scene count. ``R@1``: the own image ranks first (ties count against it), chance = mean of 1 / (scene
    size). ``pairwise``: the share of (own image, other image of the scene) comparisons the own image wins
    (ties half), chance 0.5: less noisy than R@1 when scenes have few pairs. Scenes of one pair are skipped.
    """
    check_finite(sim, "within_scene_retrieval similarities")
    hits, chance, wins, comparisons = [], [], 0.0, 0
    for i in range(sim.shape[0]):
        same = (labels == labels[i]).nonzero().flatten()  # (n_scene,), includes i
        if len(same) < 2:
            continue
        others = sim[i, same[same != i]]  # (n_scene - 1,)
        own = sim[i, i]
        hits.append(float(bool((others < own).all())))
        chance.append(1 / len(same))
        wins += float((others < own).sum()) + 0.5 * float((others == own).sum())
        comparisons += len(others)
    if not hits:
        raise ValueError("within_scene_retrieval: no scene has two or more pairs")
    return {"R@1": sum(hits) / len(hits), "chance_R@1": sum(chance) / len(chance),
            "pairwise": wins / comparisons, "chance_pairwise": 0.5, "n_queries": len(hits)}


def accuracy_interval(pred: torch.Tensor, labels: torch.Tensor, z: float = 1.96) -> tuple[float, float, float]:
    """Accuracy and its Wilson score interval (95% for z = 1.96): (acc, low, high)."""
    n = len(labels)
    if n == 0:
        raise ValueError("accuracy_interval: no predictions")
    acc = float((pred == labels).float().mean())
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return acc, max(0.0, centre - half), min(1.0, centre + half)


def confusion_matrix(labels: torch.Tensor, pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Counts (C, C): row = true class, column = predicted class."""
    conf = torch.zeros(n_classes, n_classes, dtype=torch.long)
    conf.index_put_((labels, pred), torch.ones(len(labels), dtype=torch.long), accumulate=True)
    return conf


def evaluate_alignment(embedder, dataset, cfg: Config, progress: bool = False) -> dict[str, float]:
    """Held-out audio-to-image retrieval (R@1, R@5) and scene accuracy from audio, with their chance levels.

    Everything is measured over the distinct validation recordings, one pair per (class, base id)
    (:func:`one_pair_per_recording`): ``_k`` pairs share their base id's recording, so they would give one
    recording several right images (capping R@1 below 1) and count it several times in the accuracy.
    ``n_val`` is the number of test pairs (the split every reported number uses; name kept), ``n_recordings``
    the number of distinct recordings used.
    Scene accuracy is measured twice: against the text embeddings of the class prompts (for the miniature
    this is supervised: its vision tower was trained on exactly these prompts) and against the mean image
    embedding of each class over the training pairs (with its 95% Wilson interval). ``within_*`` is
    :func:`within_scene_retrieval`: the own image against the other images of the same scene.
    """
    n_val = len(dataset.test)
    val, train = one_pair_per_recording(dataset.test), dataset.train  # reported on test, never tuned on
    audio = embed_files(embedder, [p.audio_path for p in val], "audio", cfg, progress=progress)  # (N, D)
    image = embed_files(embedder, [p.image_path for p in val], "vision", cfg, progress=progress)  # (N, D)
    train_img = embed_files(embedder, [p.image_path for p in train], "vision", cfg, progress=progress)
    labels = torch.tensor([CLASSES.index(p.label) for p in val])
    train_labels = torch.tensor([CLASSES.index(p.label) for p in train])
    text = embed_texts(embedder, class_prompts(CLASSES), cfg)  # (13, D)
    means = class_means(train_img, train_labels, len(CLASSES))  # (13, D)
    sim = cosine_matrix(audio, image)  # (N, N)
    recall = recall_at_k(sim, ks=(1, 5))
    acc, lo, hi = accuracy_interval(nearest_prototype(audio, means), labels)
    n = len(val)
    out = {
        "n_val": n_val,
        "n_recordings": n,
        "R@1": recall[1],
        "R@5": recall[5],
        "scene_acc_text": float((nearest_prototype(audio, text) == labels).float().mean()),
        "scene_acc_means": acc,
        "scene_acc_means_low": lo,
        "scene_acc_means_high": hi,
        "chance_R@1": 1 / n,
        "chance_R@5": min(5, n) / n,
        "chance_scene": 1 / len(CLASSES),
    }
    if int(torch.bincount(labels).max()) > 1:
        out.update({f"within_{k}": v for k, v in within_scene_retrieval(sim, labels).items()})
    return out
