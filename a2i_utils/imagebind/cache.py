"""The per-file embedding cache and the audio scale option.

Each embedding is one small safetensors file, ``cfg.embeddings_dir / <model identity> / <run key> /
<modality> / <hash[:2]> / <hash>.safetensors``, keyed by the SHA-256 of the file's bytes (of the UTF-8 string
for text), the identity of the model (the checkpoint's hash for ``imagebind_huge``, the config+data key for
the miniature) and the run key ``emb-v<PREPROCESS_VERSION>-<hash of the dtype>`` (:func:`run_key`). So a
re-run only hashes files; a changed file has a new hash and is embedded again; a retrained model has a new
identity; the same weights run in bfloat16 instead of float32, or fed by changed preprocessing, get their
own entries. Entries are written to a temporary file and renamed, so an interrupted
run leaves no half-written entry (the temporary files of killed runs are deleted when a later run writes into
their folder); an unreadable entry is treated as missing and rewritten. Two processes filling the cache at
once need no lock: an entry's bytes depend only on its key, so whichever rename comes last stores the same
embedding (an item both processes miss is computed twice).

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

from a2i_utils.config import Config
from a2i_utils.devices import cpu_threads
from a2i_utils.imagebind.preprocess import load_audio_inputs, load_vision_inputs
from a2i_utils.io import atomic_write, cache_key, remove_stale_temps, sha256_file

AUDIO_SCALES = ("imagebind", "unit")
FILE_MODALITIES = ("audio", "vision")


@dataclass
class EmbedStats:
    """What one call did: cache hits, embeddings computed, copies of files with identical bytes, seconds.

    A ``_k`` pair's recording is a byte copy of its base id's: it is computed once, and the copy counts in
    ``duplicates``, not in ``computed``.
    """

    hits: int = 0
    computed: int = 0
    duplicates: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        total = self.hits + self.computed + self.duplicates
        text = f"{total} embeddings: {self.hits} from the cache, {self.computed} computed"
        if self.duplicates:
            copies = "copy of an identical file" if self.duplicates == 1 else "copies of identical files"
            text += f", {self.duplicates} {copies}"
        return text


file_hash = sha256_file  # SHA-256 hex digest of a file's bytes (the cache key of a file)


def text_hash(text: str) -> str:
    """SHA-256 hex digest of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_key(embedder) -> str:
    """What else decides an embedding besides the weights: the preprocessing version and the model's dtype."""
    from a2i_utils.imagebind import preprocess

    dtype = str(embedder.dtype).removeprefix("torch.")
    return cache_key("emb", preprocess.PREPROCESS_VERSION, {"dtype": dtype})


class EmbeddingCache:
    """Per-item embeddings of one model under ``root / identity / run``, one safetensors file each."""

    def __init__(self, root: str | Path, identity: str, run: str = "") -> None:
        self.root = Path(root) / identity / run if run else Path(root) / identity

    @classmethod
    def of(cls, embedder, cfg: Config) -> EmbeddingCache:
        """The cache of ``embedder`` (its identity and :func:`run_key`) under ``cfg.embeddings_dir``."""
        return cls(cfg.embeddings_dir, embedder.identity, run_key(embedder))

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
        return load_audio_inputs(paths)
    return load_vision_inputs(paths)


def _load_each(modality: str, chunk: list[tuple[str, Path]], bad: dict[str, str]):
    """Model inputs of the files of ``chunk`` that their reader accepts, one file at a time, and those items;
    each refused file's reason goes into ``bad`` under its key. Each file is decoded once, here."""
    inputs, ok = [], []
    for k, p in chunk:
        try:
            inputs.append(_load_inputs(modality, [p]))  # (1, ...)
            ok.append((k, p))
        except (ValueError, OSError) as err:  # AudioError and ImageError are ValueErrors naming the file
            bad[k] = str(err)
    return (torch.cat(inputs) if inputs else None), ok


def embed_files(
    embedder,
    paths: Sequence[str | Path],
    modality: str,
    cfg: Config,
    progress: bool = True,
    stats: EmbedStats | None = None,
    skipped: list[tuple[Path, str]] | None = None,
) -> torch.Tensor:
    """Embeddings (N, D) of audio or image files, from the cache where possible, in ``paths`` order.

    A file whose embedding is cached is only hashed, never decoded; any other is decoded once, to embed it.
    ``skipped``: None (a file that cannot be read raises), or a list that receives ``(path, why)`` for each file
    that is missing or that its reader refuses (``why`` names the file); such files are left out of the result,
    which then has one row per usable file, in ``paths`` order. The reader is the check: no separate pass.
    """
    if modality not in FILE_MODALITIES:
        raise ValueError(f"embed_files: modality must be one of {FILE_MODALITIES}, got {modality!r}")
    stats = stats if stats is not None else EmbedStats()
    t0 = time.time()
    cache = EmbeddingCache.of(embedder, cfg)
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing and skipped is None:
        raise FileNotFoundError(f"{missing[0]}: no such file to embed")
    if skipped is not None:
        skipped += [(p, f"{p}: no such file to embed") for p in missing]
        paths = [p for p in paths if p not in missing]
    keys = [file_hash(p) for p in paths]
    found = {k: e for k in dict.fromkeys(keys) if (e := cache.get(modality, k)) is not None}
    todo = {k: p for k, p in zip(keys, paths) if k not in found}  # one file per distinct content
    stats.hits += len(keys) - sum(1 for k in keys if k in todo)
    items = list(todo.items())
    for folder in {cache.path(modality, k).parent for k in todo}:
        remove_stale_temps(folder)  # what killed runs left where this one writes
    bs = cfg.imagebind.batch_size
    threads = cfg.imagebind.cpu_threads if embedder.device == "cpu" else 0
    bad: dict[str, str] = {}  # key -> why its file was refused (only when `skipped` is given)
    for i in tqdm(range(0, len(items), bs), desc=f"embedding {modality}", disable=not progress or not items):
        chunk = items[i : i + bs]
        if skipped is None:
            inputs = _load_inputs(modality, [p for _, p in chunk])  # raises on the first bad file
        else:
            inputs, chunk = _load_each(modality, chunk, bad)
        if not chunk:
            continue
        with cpu_threads(threads):
            out = embedder.embed(modality, inputs)  # (b, D)
        for (k, p), e in zip(chunk, out):
            cache.put(modality, k, e, source=p.name)
            found[k] = e
    for p, k in zip(paths, keys):
        if k in bad:  # a byte copy of a refused file is refused too, under its own name
            skipped.append((p, bad[k].replace(str(todo[k]), str(p), 1)))
    stats.computed += len(todo) - len(bad)
    stats.duplicates += sum(1 for k in keys if k in todo and k not in bad) - (len(todo) - len(bad))
    stats.seconds += time.time() - t0
    keys = [k for k in keys if k not in bad]
    if not keys:
        return torch.empty(0, embedder.embed_dim)
    return torch.stack([found[k] for k in keys])  # (N, D)


def embed_texts(embedder, texts: Sequence[str], cfg: Config, stats: EmbedStats | None = None) -> torch.Tensor:
    """Text embeddings (N, D), from the cache where possible."""
    stats = stats if stats is not None else EmbedStats()
    cache = EmbeddingCache.of(embedder, cfg)
    keys = [text_hash(t) for t in texts]
    found = {k: e for k in dict.fromkeys(keys) if (e := cache.get("text", k)) is not None}
    todo = [t for t, k in dict(zip(texts, keys)).items() if k not in found]
    for folder in {cache.path("text", text_hash(t)).parent for t in todo}:
        remove_stale_temps(folder)
    if todo:
        for t, e in zip(todo, embedder.embed_text(todo)):
            found[text_hash(t)] = e
            cache.put("text", text_hash(t), e, source=t[:200])
    stats.hits += len(keys) - sum(1 for t in texts if t in todo)
    stats.computed += len(todo)
    stats.duplicates += sum(1 for t in texts if t in todo) - len(todo)
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
