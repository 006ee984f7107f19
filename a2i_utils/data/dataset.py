"""The dataset: an ADVANCE-shaped tree (real or synthetic) -> validated pairs -> a stored train/val/test split.

A tree is ``<root>/vision/<class>/<name>.jpg`` + ``<root>/sound/<class>/<name>.wav``, names ``<5-digit id>``
or ``<id>_<k>``. Pairs are matched by class and file stem (never by position); the split is by the 5-digit
base id (the ``_k`` files reuse the audio of the same place, so a per-file split would leak audio into
validation), stratified by class, seeded, and stored so every notebook and script sees the same one. Three
splits (:data:`SPLITS`): ``train`` (the models learn from it), ``val`` (settings such as guidance, steps, noise
level and audio scale are chosen on it) and ``test`` (every reported number); ``data.val_fraction`` and
``data.test_fraction`` of each class's places go to val and test, the rest to train. The val places are the
ones the older 90/10 split held out (the same seeded shuffle, val taken first), so that earlier tuning was
done on what is now validation, never on test.

The validated pairs (``manifest.json``) and the split (``split.json``) of a tree live in the cache, in
``<cache>/datasets/manifests/tree-v<N>-<hash>/``, keyed by the tree's fingerprint (every file's relative
path, size and modification time): never inside the tree, which is only read. A changed tree gets a new key,
so it is validated again. Manifests and splits that older versions wrote next to the data are read once if
they still match, and never written.

:func:`prepare_dataset` is the entry point: demo mode synthesises the tree (``a2i_utils.data.synth``) into the
cache, full mode downloads ADVANCE (``a2i_utils.data.advance``), and ``data.root`` points either at a folder
you already have (the unpacked ADVANCE on a shared disk, or your own recordings and images in the same
layout), used where it is. All come back as a :class:`Dataset`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from a2i_utils.config import Config, DataConfig, default_cache_dir
from a2i_utils.data import advance, synth
from a2i_utils.data.audio import audio_problem
from a2i_utils.data.classes import CLASSES
from a2i_utils.data.images import ImageError, open_image
from a2i_utils.io import AUDIO_EXTS, IMAGE_EXTS, atomic_write_text, cache_key

SPLITS = ("train", "val", "test")
NAME_RE = re.compile(r"^(?P<base>\d+)(?:_(?P<k>\d+))?$")
MANIFEST_NAME = "manifest.json"
SPLIT_NAME = "split.json"
MANIFEST_VERSION = 2  # 2: problems stored relative to the root (ROOT_TOKEN), re-rooted on load
ROOT_TOKEN = "<root>"
MANIFESTS_DIR = "manifests"  # under cfg.datasets_dir: one folder per tree fingerprint


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
    split: str = ""  # "train", "val" or "test" ("" before the split is assigned)

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
    index_dir: Path | None = None  # the cache folder holding this tree's manifest.json and split.json

    @property
    def train(self) -> list[Pair]:
        """Pairs of the training split."""
        return [p for p in self.pairs if p.split == "train"]

    @property
    def val(self) -> list[Pair]:
        """Pairs of the validation split (where settings are chosen)."""
        return [p for p in self.pairs if p.split == "val"]

    @property
    def test(self) -> list[Pair]:
        """Pairs of the test split (where every reported number is measured)."""
        return [p for p in self.pairs if p.split == "test"]

    def subset(self, split: str) -> list[Pair]:
        """Pairs of one split by name: ``"train"``, ``"val"`` or ``"test"``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        return [p for p in self.pairs if p.split == split]

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
        sizes = " / ".join(f"{len(self.subset(s))} {s}" for s in SPLITS)
        lines = [f"{len(self.pairs)} pairs ({sizes}), {len({p.base_id for p in self.pairs})} base ids, "
                 f"{len(self.problems)} problem(s)"]
        counts = {s: self.counts(self.subset(s)) for s in SPLITS}
        for c in CLASSES:
            per_split = " / ".join(f"{counts[s][c]} {s}" for s in SPLITS)
            lines.append(f"  {c:<18} {sum(counts[s][c] for s in SPLITS):5d}  ({per_split})")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Scanning and validating a tree
# ----------------------------------------------------------------------------------------------------------
def scan_tree(root: Path, validate: bool = True, progress: bool = True) -> tuple[list[Pair], list[str]]:
    """Pair ``vision/`` and ``sound/`` files by (class, stem); return pairs (no split yet) and problems.

    Nothing in the tree raises: odd folders and names, duplicates, unpaired files, folders named like files,
    dangling links, empty or unreadable files each become a problem line naming the file (bytes of a name that
    are not UTF-8 shown as ``\\xff``), and every other pair is kept. Folders are listed one at a time, so a tree of
    100,000 files is checked in tens of MB (``bench/bench_limits.py``).
    """
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
    return pairs, [_printable(line) for line in problems]


def _printable(line: str) -> str:
    """A problem line that prints anywhere: bytes of a file name that are not UTF-8 shown as ``\\xff``."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _files_by_key(folder: Path, exts: tuple[str, ...], problems: list[str]) -> dict[tuple[str, str], Path]:
    """``{(class, stem): path}`` for the files of ``folder/<class>/``; odd folders and names go to problems."""
    found: dict[tuple[str, str], Path] = {}
    if not folder.is_dir():
        return found
    for class_dir in _listing(folder, problems):
        if not class_dir.is_dir():
            continue
        if class_dir.name not in CLASSES:
            problems.append(f"skipped {class_dir}: '{class_dir.name}' is not an ADVANCE class")
            continue
        for path in _listing(class_dir, problems):
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


def _listing(folder: Path, problems: list[str]) -> list[Path]:
    """The sorted entries of ``folder``; none, and a problem line, when it cannot be listed."""
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        problems.append(f"skipped {folder}: cannot be listed ({err.strerror or err})")
        return []


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
def split_by_base_id(pairs: list[Pair], val_fraction: float = DataConfig.val_fraction, seed: int = 42,
                     test_fraction: float = DataConfig.test_fraction) -> dict[str, str]:
    """``{base_id: "train" | "val" | "test"}``: per class, a seeded shuffle of its base ids; the first
    ``val_fraction`` go to val, the next ``test_fraction`` to test, the rest to train.

    Counts are rounded; a class with at least 2 places has at least one in val, and one with at least 3 at least
    one in test (a class of one place is all train). The defaults are ``DataConfig``'s.
    """
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
        n_val, n_test = _split_counts(len(ids), val_fraction, test_fraction)
        for rank, i in enumerate(order):
            assignment[ids[i]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return assignment


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(places in val, places in test) of a class of ``n`` places; at least one place is left to train."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be >= 0 and sum "
                         "to less than 1 (the rest is train)")
    n_val = max(int(round(val_fraction * n)), 1) if n > 1 and val_fraction > 0 else 0
    n_test = max(int(round(test_fraction * n)), 1) if n - n_val > 1 and test_fraction > 0 else 0
    n_test = min(n_test, n - n_val - 1) if n - n_val > 0 else 0
    return n_val, n_test


def load_or_make_split(
    folder: Path, pairs: list[Pair], val_fraction: float, seed: int, legacy: Path | None = None,
    test_fraction: float = DataConfig.test_fraction,
) -> dict[str, str]:
    """The split in ``folder/split.json`` if it matches these settings and covers every base id, else a new one.

    ``legacy`` is the tree of a split an older version stored next to the data: used when it still fits (so a
    tree keeps its split), ignored when it does not or cannot be read, and never written.
    """
    path = Path(folder) / SPLIT_NAME
    wanted = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    base_ids = {p.base_id for p in pairs}
    if path.is_file():
        stored = _read_split(path)
        if stored["settings"] == wanted and base_ids <= stored["assignment"].keys():
            return stored["assignment"]
    assignment = _legacy_split(Path(legacy) / SPLIT_NAME, wanted, base_ids) if legacy is not None else None
    if assignment is None:
        assignment = split_by_base_id(pairs, val_fraction, seed, test_fraction)
    atomic_write_text(path, json.dumps({"settings": wanted, "assignment": assignment}, indent=0, sort_keys=True))
    return assignment


def _legacy_split(path: Path, wanted: dict[str, Any], base_ids: set[str]) -> dict[str, str] | None:
    """The assignment of an old ``split.json`` next to the data if it fits these settings and ids, else None."""
    if not path.is_file():
        return None
    try:
        stored = _read_split(path)
    except DatasetError:
        return None  # a damaged old file is not ours to fix: the split is made again from the seed
    if stored["settings"] != wanted or not base_ids <= stored["assignment"].keys():
        return None
    return {b: stored["assignment"][b] for b in sorted(base_ids)}


def _read_split(path: Path) -> dict[str, Any]:
    """The stored split document; a :class:`DatasetError` naming the file when it is not a readable split."""
    try:
        stored = json.loads(path.read_text())
        ok = (isinstance(stored, dict) and isinstance(stored.get("settings"), dict)
              and isinstance(stored.get("assignment"), dict)
              and set(stored["assignment"].values()) <= set(SPLITS))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: the stored split cannot be read ({err}); delete the file and it will be "
                           "made again from the seed") from err
    if not ok:
        raise DatasetError(f"{path}: not a split file (expected 'settings' and an 'assignment' of base id -> "
                           "train/val/test); delete the file and it will be made again from the seed")
    stored["settings"].setdefault("test_fraction", 0.0)  # a split of an older version: train/val, no test
    return stored


# ----------------------------------------------------------------------------------------------------------
# Manifest: the validated pairs of a tree, cached in the cache under the tree's fingerprint
# ----------------------------------------------------------------------------------------------------------
def tree_fingerprint(root: Path) -> str:
    """A cheap fingerprint of a tree: every file's relative path, size and modification time."""
    h = hashlib.sha1()
    for sub in ("vision", "sound"):
        for dirpath, dirnames, filenames in sorted(os.walk(Path(root) / sub)):
            dirnames.sort()
            for name in sorted(filenames):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                try:
                    st = os.stat(os.path.join(dirpath, name))
                    line = f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n"
                except OSError:  # a dangling symlink, an entry gone meanwhile: scan_tree reports it, by name
                    line = f"{rel}\0?\n"
                h.update(line.encode("utf-8", "surrogateescape"))  # a name that is not UTF-8 keeps its bytes
    return h.hexdigest()


def index_dir_for(root: Path, cache_dir: Path | None = None, fingerprint: str | None = None) -> Path:
    """The cache folder for the manifest and split of the tree at ``root``: ``<cache>/datasets/manifests/<key>``."""
    datasets_dir = Config(cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir()).datasets_dir
    fingerprint = fingerprint or tree_fingerprint(root)
    return datasets_dir / MANIFESTS_DIR / cache_key("tree", MANIFEST_VERSION, fingerprint)


def build_manifest(
    root: Path, progress: bool = True, index_dir: Path | None = None, fingerprint: str | None = None
) -> tuple[list[Pair], list[str]]:
    """Validated pairs and problems of ``root``, from the cached manifest when the tree is unchanged.

    The manifest is read from and written to ``index_dir`` (default: :func:`index_dir_for` in the default
    cache); one that an older version left next to the data is read if it matches, never written.
    """
    root = Path(root)
    fingerprint = fingerprint or tree_fingerprint(root)
    path = Path(index_dir or index_dir_for(root, fingerprint=fingerprint)) / MANIFEST_NAME
    for candidate in (path, root / MANIFEST_NAME):  # ours, then a legacy one next to the data
        cached = _read_manifest(root, candidate, fingerprint) if candidate.is_file() else None
        if cached is not None:
            if candidate != path:
                _write_manifest(root, path, fingerprint, *cached)
            return cached
    pairs, problems = scan_tree(root, validate=True, progress=progress)
    _write_manifest(root, path, fingerprint, pairs, problems)
    return pairs, problems


def _write_manifest(root: Path, path: Path, fingerprint: str, pairs: list[Pair], problems: list[str]) -> None:
    """Store the validated pairs and problems of the tree at ``root`` in ``path``, relative to the root."""
    rows = [_pair_to_row(root, p) for p in pairs]
    doc = {"version": MANIFEST_VERSION, "fingerprint": fingerprint, "pairs": rows,
           "problems": [_problem_to_row(root, line) for line in problems]}
    atomic_write_text(path, json.dumps(doc, indent=0))


def _read_manifest(root: Path, path: Path, fingerprint: str) -> tuple[list[Pair], list[str]] | None:
    """Pairs and problems of a stored manifest of this very tree; None when stale or damaged (then rebuilt)."""
    try:
        stored = json.loads(path.read_text())
        if stored.get("version") != MANIFEST_VERSION or stored.get("fingerprint") != fingerprint:
            return None
        pairs = [_pair_from_row(root, r) for r in stored["pairs"]]
        problems = [_problem_from_row(root, line) for line in stored["problems"]]
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        # a damaged or tampered manifest is only a cache: said, never trusted, and the tree scanned again
        print(f"{path}: damaged or tampered manifest ({type(err).__name__}: {err}); scanning the tree again")
        return None
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
    """Inverse of :func:`_pair_to_row`; a ValueError for a row that could not have been written by it.

    Refused (the manifest is then rebuilt from the tree): fields other than strings, a label that is not a
    class, an id whose base id differs, and paths other than ``vision|sound/<label>/<id>.<ext>`` (absolute
    ones and ones with ``..`` included), so a tampered manifest never points outside the root.
    """
    keys = ("id", "base_id", "label", "image_path", "audio_path")
    if set(row) != set(keys) or not all(isinstance(row[k], str) for k in keys):
        raise ValueError(f"manifest row {row!r} does not have the fields {keys} as strings")
    match = NAME_RE.match(row["id"])
    if row["label"] not in CLASSES or not match or match["base"] != row["base_id"]:
        raise ValueError(f"manifest row {row!r}: not an ADVANCE class and id")
    for key, sub in (("image_path", "vision"), ("audio_path", "sound")):
        rel = PurePosixPath(row[key])
        if rel.parts[:2] != (sub, row["label"]) or len(rel.parts) != 3 or rel.stem != row["id"]:
            raise ValueError(f"manifest row {row!r}: {key} is not {sub}/{row['label']}/{row['id']}.<ext>")
    return Pair(**{**row, "image_path": root / row["image_path"], "audio_path": root / row["audio_path"]})


def load_tree(
    root: Path, val_fraction: float = DataConfig.val_fraction, seed: int = 42, progress: bool = True,
    cache_dir: Path | None = None, test_fraction: float = DataConfig.test_fraction,
) -> Dataset:
    """Manifest + stored split of an ADVANCE-shaped tree, as a :class:`Dataset`; the tree is only read.

    Both are kept in ``cache_dir`` (default: ``A2I_CACHE`` or the user's cache folder) under the tree's
    fingerprint (:func:`index_dir_for`).
    """
    root = Path(root)
    fingerprint = tree_fingerprint(root)
    index_dir = index_dir_for(root, cache_dir, fingerprint)
    pairs, problems = build_manifest(root, progress=progress, index_dir=index_dir, fingerprint=fingerprint)
    if not pairs:
        detail = "\n  ".join(problems[:10]) or "no files found"
        raise DatasetError(f"{root}: no usable image/recording pair\n  {detail}")
    assignment = load_or_make_split(index_dir, pairs, val_fraction, seed, legacy=root, test_fraction=test_fraction)
    pairs = [Pair(**{**asdict(p), "split": assignment[p.base_id]}) for p in pairs]
    return Dataset(root=root, pairs=pairs, problems=list(problems), index_dir=index_dir)


def own_root(cfg: Config) -> Path:
    """``cfg.data.root`` as an absolute folder that has ``vision/`` and ``sound/``; a DatasetError saying what to do."""
    root = Path(cfg.data.root).expanduser().resolve()
    fix = ("point data.root at a folder with vision/<class>/<id>.jpg and sound/<class>/<id>.wav (ADVANCE's layout; "
           f"check it with `a2i data check DIR`), or set it to \"\" to use the {cfg.data.source} data")
    if not root.is_dir():
        raise DatasetError(f"data.root = {cfg.data.root!r}: {root} is not a folder; {fix}")
    missing = [sub for sub in ("vision", "sound") if not (root / sub).is_dir()]
    if missing:
        raise DatasetError(f"data.root = {cfg.data.root!r}: {root} has no {' or '.join(m + '/' for m in missing)} "
                           f"folder; {fix}")
    return root


def prepare_dataset(cfg: Config, progress: bool = True) -> Dataset:
    """The dataset of ``cfg``: ``data.root`` if set (used in place, read only), else synthetic or ADVANCE.

    Synthetic data are made in the cache if missing, ADVANCE is downloaded if missing; a folder given as
    ``data.root`` is validated (the checks of ``a2i data check``) and never copied or modified.
    """
    d = cfg.data
    if d.root:
        root = own_root(cfg)
    elif d.source == "synthetic":
        root = synth.ensure_synthetic(cfg, progress=progress)
    elif d.source == "advance":
        root = advance.ensure_advance(cfg, progress=progress)
    else:
        raise ValueError(f"unknown data.source {d.source!r}: use 'synthetic' or 'advance'")
    return load_tree(root, val_fraction=d.val_fraction, seed=cfg.seed, progress=progress, cache_dir=cfg.cache_dir,
                     test_fraction=d.test_fraction)
