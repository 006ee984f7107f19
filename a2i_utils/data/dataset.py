"""The dataset: an ADVANCE-shaped tree (real or synthetic) -> validated pairs -> a stored 90/10 split.

A tree is ``<root>/vision/<class>/<name>.jpg`` + ``<root>/sound/<class>/<name>.wav``, names ``<5-digit id>``
or ``<id>_<k>``. Pairs are matched by class and file stem (never by position); the split is by the 5-digit
base id (the ``_k`` files reuse the audio of the same place, so a per-file split would leak audio into
validation), stratified by class, seeded, and stored next to the data so every notebook and script sees
the same one.

:func:`prepare_dataset` is the entry point: demo mode synthesises the tree (``a2i_utils.data.synth``) into the
cache, full mode downloads ADVANCE (``a2i_utils.data.advance``). Both come back as a :class:`Dataset`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from a2i_utils.config import Config
from a2i_utils.data import advance, synth
from a2i_utils.data.audio import audio_problem
from a2i_utils.data.classes import CLASSES
from a2i_utils.data.images import ImageError, open_image
from a2i_utils.io import AUDIO_EXTS, IMAGE_EXTS, atomic_write_text

NAME_RE = re.compile(r"^(?P<base>\d+)(?:_(?P<k>\d+))?$")
MANIFEST_NAME = "manifest.json"
SPLIT_NAME = "split.json"
MANIFEST_VERSION = 2  # 2: problems stored relative to the root (ROOT_TOKEN), re-rooted on load
ROOT_TOKEN = "<root>"


class DatasetError(RuntimeError):
    """A tree with nothing usable in it, or a stored split that cannot be read."""


@dataclass(frozen=True)
class Pair:
    """One image + recording of the same place."""

    id: str  # file stem, "00123" or "00123_2"
    base_id: str  # the 5-digit geotag id, "00123"
    label: str  # class name, one of CLASSES
    image_path: Path
    audio_path: Path
    split: str = ""  # "train" or "val" ("" before the split is assigned)

    @property
    def label_index(self) -> int:
        """Position of the label in CLASSES."""
        return CLASSES.index(self.label)


@dataclass
class Dataset:
    """Validated pairs of one tree, each with its split, and the problems met while building it."""

    root: Path
    pairs: list[Pair]
    problems: list[str] = field(default_factory=list)

    @property
    def train(self) -> list[Pair]:
        """Pairs of the training split."""
        return [p for p in self.pairs if p.split == "train"]

    @property
    def val(self) -> list[Pair]:
        """Pairs of the validation split."""
        return [p for p in self.pairs if p.split == "val"]

    def by_class(self, pairs: list[Pair] | None = None) -> dict[str, list[Pair]]:
        """Pairs grouped by class, in CLASSES order (classes with no pair included, empty)."""
        groups: dict[str, list[Pair]] = {c: [] for c in CLASSES}
        for p in self.pairs if pairs is None else pairs:
            groups[p.label].append(p)
        return groups

    def counts(self, pairs: list[Pair] | None = None) -> dict[str, int]:
        """Number of pairs per class."""
        return {c: len(ps) for c, ps in self.by_class(pairs).items()}

    def summary(self) -> str:
        """A short path-free text: pairs, split sizes, per class, number of problems."""
        lines = [
            f"{len(self.pairs)} pairs ({len(self.train)} train / {len(self.val)} val), "
            f"{len({p.base_id for p in self.pairs})} base ids, {len(self.problems)} problem(s)"
        ]
        tr, va = self.counts(self.train), self.counts(self.val)
        lines += [f"  {c:<18} {tr[c] + va[c]:5d}  ({tr[c]} train / {va[c]} val)" for c in CLASSES]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Scanning and validating a tree
# ----------------------------------------------------------------------------------------------------------
def scan_tree(root: Path, validate: bool = True, progress: bool = True) -> tuple[list[Pair], list[str]]:
    """Pair ``vision/`` and ``sound/`` files by (class, stem); return pairs (no split yet) and problems."""
    root = Path(root)
    problems: list[str] = []
    for sub in ("vision", "sound"):
        if not (root / sub).is_dir():
            problems.append(f"{root}: missing folder '{sub}/'")
    images = _files_by_key(root / "vision", IMAGE_EXTS, problems)
    sounds = _files_by_key(root / "sound", AUDIO_EXTS, problems)
    for key in sorted(images.keys() - sounds.keys()):
        problems.append(f"skipped {images[key]}: no recording with the same name in sound/{key[0]}/")
    for key in sorted(sounds.keys() - images.keys()):
        problems.append(f"skipped {sounds[key]}: no image with the same name in vision/{key[0]}/")
    keys = sorted(images.keys() & sounds.keys())
    pairs = []
    for label, stem in tqdm(keys, desc="checking pairs", disable=not (progress and validate), leave=False):
        pair = Pair(stem, NAME_RE.match(stem)["base"], label, images[(label, stem)], sounds[(label, stem)])
        if validate and not _pair_is_usable(pair, problems):
            continue
        pairs.append(pair)
    return pairs, problems


def _files_by_key(folder: Path, exts: tuple[str, ...], problems: list[str]) -> dict[tuple[str, str], Path]:
    """``{(class, stem): path}`` for the files of ``folder/<class>/``; odd folders and names go to problems."""
    found: dict[tuple[str, str], Path] = {}
    if not folder.is_dir():
        return found
    for class_dir in sorted(folder.iterdir()):
        if not class_dir.is_dir():
            continue
        if class_dir.name not in CLASSES:
            problems.append(f"skipped {class_dir}: '{class_dir.name}' is not an ADVANCE class")
            continue
        for path in sorted(class_dir.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in exts:
                continue
            if not NAME_RE.match(path.stem):
                problems.append(f"skipped {path}: name is not '<id>' or '<id>_<k>'")
                continue
            key = (class_dir.name, path.stem)
            if key in found:
                problems.append(f"skipped {path}: duplicate of {found[key].name}")
                continue
            found[key] = path
    return found


def _pair_is_usable(pair: Pair, problems: list[str]) -> bool:
    """Decode both files; record why a pair is left out (or that its recording is silent)."""
    try:
        open_image(pair.image_path).load()
    except ImageError as err:
        problems.append(f"skipped pair {pair.label}/{pair.id}: {err}")
        return False
    reason, silent = audio_problem(pair.audio_path)
    if reason:
        problems.append(f"skipped pair {pair.label}/{pair.id}: {reason}")
        return False
    if silent:
        problems.append(f"warning, kept pair {pair.label}/{pair.id}: {pair.audio_path} is all silent")
    return True


# ----------------------------------------------------------------------------------------------------------
# The split: by base id, stratified by class, seeded
# ----------------------------------------------------------------------------------------------------------
def split_by_base_id(pairs: list[Pair], val_fraction: float = 0.1, seed: int = 42) -> dict[str, str]:
    """``{base_id: "train" | "val"}``: per class, a seeded shuffle of its base ids, ``val_fraction`` to val."""
    labels: dict[str, Counter] = defaultdict(Counter)
    for p in pairs:
        labels[p.base_id][p.label] += 1
    by_class: dict[str, list[str]] = defaultdict(list)
    for base_id in sorted(labels):  # a base id belongs to its most common class (ties: first in CLASSES)
        label = max(sorted(labels[base_id], key=CLASSES.index), key=labels[base_id].__getitem__)
        by_class[label].append(base_id)
    assignment = {}
    for label in CLASSES:
        ids = by_class.get(label, [])
        rng = np.random.default_rng([seed, CLASSES.index(label)])
        order = rng.permutation(len(ids))
        n_val = int(round(val_fraction * len(ids))) if len(ids) > 1 else 0
        n_val = max(n_val, 1) if len(ids) > 1 and val_fraction > 0 else n_val
        for rank, i in enumerate(order):
            assignment[ids[i]] = "val" if rank < n_val else "train"
    return assignment


def load_or_make_split(root: Path, pairs: list[Pair], val_fraction: float, seed: int) -> dict[str, str]:
    """The split stored in ``root/split.json`` if it matches these settings and covers every base id, else a new one."""
    path = Path(root) / SPLIT_NAME
    wanted = {"seed": seed, "val_fraction": val_fraction}
    if path.is_file():
        stored = _read_split(path)
        if stored["settings"] == wanted and {p.base_id for p in pairs} <= stored["assignment"].keys():
            return stored["assignment"]
    assignment = split_by_base_id(pairs, val_fraction, seed)
    atomic_write_text(path, json.dumps({"settings": wanted, "assignment": assignment}, indent=0, sort_keys=True))
    return assignment


def _read_split(path: Path) -> dict[str, Any]:
    """The stored split document; a :class:`DatasetError` naming the file when it is not a readable split."""
    try:
        stored = json.loads(path.read_text())
        ok = (isinstance(stored, dict) and isinstance(stored.get("settings"), dict)
              and isinstance(stored.get("assignment"), dict)
              and set(stored["assignment"].values()) <= {"train", "val"})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: the stored split cannot be read ({err}); delete the file and it will be "
                           "made again from the seed") from err
    if not ok:
        raise DatasetError(f"{path}: not a split file (expected 'settings' and an 'assignment' of base id -> "
                           "train/val); delete the file and it will be made again from the seed")
    return stored


# ----------------------------------------------------------------------------------------------------------
# Manifest: the validated pairs of a tree, cached next to it and rebuilt when the tree changes
# ----------------------------------------------------------------------------------------------------------
def tree_fingerprint(root: Path) -> str:
    """A cheap fingerprint of a tree: every file's relative path, size and modification time."""
    h = hashlib.sha1()
    for sub in ("vision", "sound"):
        for dirpath, dirnames, filenames in sorted(os.walk(Path(root) / sub)):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.stat(os.path.join(dirpath, name))
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build_manifest(root: Path, progress: bool = True) -> tuple[list[Pair], list[str]]:
    """Validated pairs and problems of ``root``, from ``root/manifest.json`` when the tree is unchanged."""
    root = Path(root)
    path = root / MANIFEST_NAME
    fingerprint = tree_fingerprint(root)
    cached = _read_manifest(root, path, fingerprint) if path.is_file() else None
    if cached is not None:
        return cached
    pairs, problems = scan_tree(root, validate=True, progress=progress)
    rows = [_pair_to_row(root, p) for p in pairs]
    doc = {"version": MANIFEST_VERSION, "fingerprint": fingerprint, "pairs": rows,
           "problems": [_problem_to_row(root, line) for line in problems]}
    atomic_write_text(path, json.dumps(doc, indent=0))
    return pairs, problems


def _read_manifest(root: Path, path: Path, fingerprint: str) -> tuple[list[Pair], list[str]] | None:
    """Pairs and problems of a stored manifest of this very tree; None when stale or damaged (then rebuilt)."""
    try:
        stored = json.loads(path.read_text())
        if stored.get("version") != MANIFEST_VERSION or stored.get("fingerprint") != fingerprint:
            return None
        pairs = [_pair_from_row(root, r) for r in stored["pairs"]]
        problems = [_problem_from_row(root, line) for line in stored["problems"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None  # a damaged manifest is only a cache: scan the tree again
    return pairs, problems


def _problem_to_row(root: Path, line: str) -> str:
    """A problem message with the root folder replaced by ROOT_TOKEN (the cache can move)."""
    # the root only where a path starts: at the start or after a space/paren, followed by a separator or ':'
    return re.sub(rf"(?<![^\s(]){re.escape(str(root))}(?=[/\\:])", ROOT_TOKEN, line)


def _problem_from_row(root: Path, row: str) -> str:
    """Inverse of :func:`_problem_to_row`: the message names files under the current root."""
    if not isinstance(row, str):
        raise TypeError(f"problem row {row!r} is not a string")
    return row.replace(ROOT_TOKEN, str(root))


def _pair_to_row(root: Path, pair: Pair) -> dict[str, Any]:
    """A JSON row with paths relative to ``root`` (the cache can move)."""
    row = asdict(pair)
    row["image_path"] = pair.image_path.relative_to(root).as_posix()
    row["audio_path"] = pair.audio_path.relative_to(root).as_posix()
    row.pop("split")
    return row


def _pair_from_row(root: Path, row: dict[str, Any]) -> Pair:
    """Inverse of :func:`_pair_to_row`."""
    return Pair(**{**row, "image_path": root / row["image_path"], "audio_path": root / row["audio_path"]})


def load_tree(root: Path, val_fraction: float = 0.1, seed: int = 42, progress: bool = True) -> Dataset:
    """Manifest + stored split of an ADVANCE-shaped tree, as a :class:`Dataset`."""
    root = Path(root)
    pairs, problems = build_manifest(root, progress=progress)
    if not pairs:
        detail = "\n  ".join(problems[:10]) or "no files found"
        raise DatasetError(f"{root}: no usable image/recording pair\n  {detail}")
    assignment = load_or_make_split(root, pairs, val_fraction, seed)
    pairs = [Pair(**{**asdict(p), "split": assignment[p.base_id]}) for p in pairs]
    return Dataset(root=root, pairs=pairs, problems=list(problems))


def prepare_dataset(cfg: Config, progress: bool = True) -> Dataset:
    """The dataset of ``cfg``: synthetic (made in the cache if missing) or ADVANCE (downloaded if missing)."""
    d = cfg.data
    if d.source == "synthetic":
        root = synth.ensure_synthetic(cfg, progress=progress)
    elif d.source == "advance":
        root = advance.ensure_advance(cfg, progress=progress)
    else:
        raise ValueError(f"unknown data.source {d.source!r}: use 'synthetic' or 'advance'")
    return load_tree(root, val_fraction=d.val_fraction, seed=cfg.seed, progress=progress)
