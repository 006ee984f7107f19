"""The per-file embedding cache, the audio scale option, and the retrieval metrics of notebook 04.

Each embedding is one small safetensors file, ``cfg.embeddings_dir / <model identity> / <modality> /
<hash[:2]> / <hash>.safetensors``, keyed by the SHA-256 of the file's bytes (of the UTF-8 string for
text) and the identity of the model (the checkpoint's hash for ``imagebind_huge``, the config+data key for
the miniature). So a re-run only hashes files; a changed file has a new hash and is embedded again; a
retrained model has a new identity. Entries are written to a temporary file and renamed, so an interrupted
run leaves no half-written entry; an unreadable entry is treated as missing and rewritten.

Embeddings are stored as ImageBind returns them (audio at norm <= 20, vision at norm 1).
:func:`scale_audio` applies ``cfg.imagebind.audio_scale`` afterwards, at the single place where audio
embeddings are handed to the U-Net.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from a2i_utils.imagebind_models import cpu_threads
from a2i_utils.io import atomic_write, sha256_file

AUDIO_SCALES = ("imagebind", "unit")
FILE_MODALITIES = ("audio", "vision")


@dataclass
class EmbedStats:
    """What one call did: cache hits, embeddings computed, seconds."""

    hits: int = 0
    computed: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"{self.hits + self.computed} embeddings: {self.hits} from the cache, {self.computed} computed"


file_hash = sha256_file  # SHA-256 hex digest of a file's bytes (the cache key of a file)


def text_hash(text: str) -> str:
    """SHA-256 hex digest of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Per-item embeddings of one model under ``root / identity``, one safetensors file each."""

    def __init__(self, root: str | Path, identity: str) -> None:
        self.root = Path(root) / identity

    def path(self, modality: str, key: str) -> Path:
        """Where the embedding of ``key`` lives."""
        return self.root / modality / key[:2] / f"{key}.safetensors"

    def get(self, modality: str, key: str) -> torch.Tensor | None:
        """The cached embedding (D,), or None when absent or unreadable."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.path(modality, key)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))["embedding"]
        except (SafetensorError, OSError, KeyError, ValueError):
            return None  # a damaged entry counts as missing and is rewritten

    def put(self, modality: str, key: str, embedding: torch.Tensor, source: str = "") -> Path:
        """Store one embedding (D,) atomically; ``source`` (a file name or text) goes into the metadata."""
        from safetensors.torch import save_file

        tensors = {"embedding": embedding.detach().float().cpu().contiguous()}
        meta = {"source": source}
        return atomic_write(self.path(modality, key), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _load_inputs(modality: str, paths: Sequence[Path]) -> torch.Tensor:
    """Model inputs of files: audio (B, 3, 1, 128, 204) or vision (B, 3, 224, 224)."""
    if modality == "audio":
        from a2i_utils.imagebind_audio import load_audio_inputs

        return load_audio_inputs(paths)
    from a2i_utils.imagebind_models import load_vision_inputs

    return load_vision_inputs(paths)


def embed_files(
    embedder,
    paths: Sequence[str | Path],
    modality: str,
    cfg,
    progress: bool = True,
    stats: EmbedStats | None = None,
) -> torch.Tensor:
    """Embeddings (N, D) of audio or image files, from the cache where possible, in ``paths`` order."""
    if modality not in FILE_MODALITIES:
        raise ValueError(f"embed_files: modality must be one of {FILE_MODALITIES}, got {modality!r}")
    stats = stats if stats is not None else EmbedStats()
    t0 = time.time()
    cache = EmbeddingCache(cfg.embeddings_dir, embedder.identity)
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file to embed")
    keys = [file_hash(p) for p in paths]
    found = {k: e for k in dict.fromkeys(keys) if (e := cache.get(modality, k)) is not None}
    todo = {k: p for k, p in zip(keys, paths) if k not in found}  # one file per distinct content
    stats.hits += len(keys) - sum(1 for k in keys if k in todo)
    items = list(todo.items())
    bs = cfg.imagebind.batch_size
    threads = cfg.imagebind.cpu_threads if embedder.device == "cpu" else 0
    for i in tqdm(range(0, len(items), bs), desc=f"embedding {modality}", disable=not progress or not items):
        chunk = items[i : i + bs]
        with cpu_threads(threads):
            out = embedder.embed(modality, _load_inputs(modality, [p for _, p in chunk]))  # (b, D)
        for (k, p), e in zip(chunk, out):
            cache.put(modality, k, e, source=p.name)
            found[k] = e
    stats.computed += sum(1 for k in keys if k in todo)
    stats.seconds += time.time() - t0
    if not keys:
        return torch.empty(0, embedder.embed_dim)
    return torch.stack([found[k] for k in keys])  # (N, D)


def embed_texts(embedder, texts: Sequence[str], cfg, stats: EmbedStats | None = None) -> torch.Tensor:
    """Text embeddings (N, D), from the cache where possible."""
    stats = stats if stats is not None else EmbedStats()
    cache = EmbeddingCache(cfg.embeddings_dir, embedder.identity)
    keys = [text_hash(t) for t in texts]
    found = {k: e for k in dict.fromkeys(keys) if (e := cache.get("text", k)) is not None}
    todo = [t for t, k in dict(zip(texts, keys)).items() if k not in found]
    if todo:
        for t, e in zip(todo, embedder.embed_text(todo)):
            found[text_hash(t)] = e
            cache.put("text", text_hash(t), e, source=t[:200])
    stats.hits += len(keys) - sum(1 for t in texts if t in todo)
    stats.computed += sum(1 for t in texts if t in todo)
    return torch.stack([found[k] for k in keys]) if keys else torch.empty(0, embedder.embed_dim)


# ----------------------------------------------------------------------------------------------------------
# The scale question (FACTS §2)
# ----------------------------------------------------------------------------------------------------------
def scale_audio(emb: torch.Tensor, scale: str = "imagebind") -> torch.Tensor:
    """Audio embeddings (N, D) at the scale handed to the U-Net.

    ``"imagebind"``: as ImageBind returns them (unit vector x 20, averaged over 3 clips: norm <= 20), what
    Anything2Image feeds Stable UnCLIP. ``"unit"``: L2-normalised to norm 1, the scale of ImageBind's
    vision embeddings.
    """
    if scale == "imagebind":
        return emb
    if scale == "unit":
        return torch.nn.functional.normalize(emb, dim=-1)
    raise ValueError(f"imagebind.audio_scale must be one of {AUDIO_SCALES}, got {scale!r}")


# ----------------------------------------------------------------------------------------------------------
# Retrieval and classification metrics
# ----------------------------------------------------------------------------------------------------------
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


def evaluate_alignment(embedder, dataset, cfg, progress: bool = False) -> dict[str, float]:
    """Held-out audio-to-image retrieval (R@1, R@5) and scene accuracy from audio, with their chance levels.

    Everything is measured over the distinct validation recordings, one pair per base id
    (:func:`one_pair_per_recording`): ``_k`` pairs share their base id's recording, so they would give one
    recording several right images (capping R@1 below 1) and count it several times in the accuracy.
    ``n_val`` is the number of validation pairs, ``n_recordings`` the number of distinct recordings used.
    Scene accuracy is measured twice: against the text embeddings of the class prompts (zero-shot, as with
    ImageBind) and against the mean image embedding of each class over the training pairs.
    """
    from a2i_utils.data import CLASSES
    from a2i_utils.imagebind_models import class_prompts

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
