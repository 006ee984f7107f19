"""A synthetic soundscape world shaped like ADVANCE, with the ambiguity of the real one.

:func:`write_tree` writes ``vision/<class>/<id>.jpg`` (RGB JPEG, any size up to 512 and more) and
``sound/<class>/<id>.wav`` (10 s, 16-bit PCM), ids ``<5 digits>`` and ``<id>_<k>`` (a ``_k`` pair reuses the
recording of its base id with another view of the same place, as in ADVANCE), plus ``synthetic.json``
with what went into every pair: the place's ``amount``, the recording's ``kind`` and its ``sources`` with
their levels.

Each place draws from a generator seeded by ``(seed, class, id)``:

- an **image** of its scene (:mod:`a2i_utils.data.synth_images`) whose one visible detail is set by ``amount``
  in [0, 1] (more planes, more water, denser houses, a longer train, ...);
- a **recording** (:mod:`a2i_utils.data.synth_sounds`) mixed from a library of sources *shared across
  related scenes* (water at beaches, harbours, lakes and bridges; engines at airports, harbours and
  stations; birds and wind in forests, orchards, grassland and shrub land; traffic in towns, on bridges
  and at stations), with the scene's signature source at a level set by the same ``amount``. A quiet
  signature leaves only shared sources: the recording could come from several scenes, as in ADVANCE.

About one recording in five is made hard on purpose (:data:`KIND_SHARES`): ``noisy`` (dominated by
broadband background noise, -6 to +3 dB signal-to-noise ratio), ``quiet`` (peak 30-36 dB below full scale)
or ``mixed`` (another, unrelated scene's signature on top); every recording has a faint noise floor.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageFilter
from tqdm.auto import tqdm

from a2i_utils.data.classes import CLASSES
from a2i_utils.data.synth_images import IMAGE_MAKERS
from a2i_utils.data.synth_sounds import (
    RECIPES,
    SOURCES,
    _noise_band,
    _norm,
    _rms_norm,
    background_noise,
    draw_sources,
    mix_sources,
)
from a2i_utils.io import file_lock, waiting_lock

SYNTH_VERSION = 4  # bump when the generator changes: trees are cached under a name that includes it
# 4: shared sound sources across scenes, a recording-level mix, an `amount` seen and heard, noise-dominated kind
KIND_SHARES = {"noisy": 0.10, "quiet": 0.04, "mixed": 0.06}  # the rest are "clean" (with a noise floor)
HARD_KINDS = tuple(KIND_SHARES)
K_FRACTION = 0.15  # share of places that get extra `_k` views sharing their recording
__all__ = ["CLASSES", "HARD_KINDS", "IMAGE_MAKERS", "KIND_SHARES", "RECIPES", "SOURCES", "SYNTH_VERSION",
           "DETAILS", "caption", "read_captions", "make_image", "make_sound", "plan_tree", "write_tree", "tree_name",
           "ensure_synthetic"]


# What each scene's `amount` looks like, in words: few / some / many (the captions of the miniature's stage 1)
DETAILS: dict[str, tuple[str, str, str]] = {
    "airport": ("one parked plane", "a few parked planes", "many parked planes"),
    "beach": ("little water", "some water", "much water"),
    "bridge": ("a narrow bridge", "a bridge", "a wide bridge"),
    "farmland": ("green fields", "some ploughed fields", "mostly ploughed fields"),
    "forest": ("sparse trees", "trees", "dense trees"),
    "grassland": ("green grass", "some dry grass", "dry grass"),
    "harbour": ("few boats", "some boats", "many boats"),
    "lake": ("a small lake", "a lake", "a large lake"),
    "orchard": ("small trees", "trees", "large trees"),
    "residential": ("few houses", "houses", "dense houses"),
    "sparse shrub land": ("many shrubs", "some shrubs", "few shrubs"),
    "sports land": ("no stands", "small stands", "large stands"),
    "train station": ("no train", "a short train", "a long train"),
}


def caption(label: str, amount: float) -> str:
    """A one-line description of a place: its scene and its visible detail (``amount`` in thirds)."""
    return f"an aerial photo of {label} with {DETAILS[label][min(2, int(amount * 3))]}"


def read_captions(root: str | Path) -> dict[str, str]:
    """``{pair id: caption}`` of a synthetic tree (empty for a tree without ``synthetic.json``, e.g. ADVANCE)."""
    path = Path(root) / "synthetic.json"
    if not path.is_file():
        return {}
    try:
        pairs = json.loads(path.read_text())["pairs"]
        captions = {pid: m["caption"] for pid, m in pairs.items() if "caption" in m}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable synthetic.json ({err}); delete the tree to rebuild it") from err
    bad = next((pid for pid, text in captions.items() if not isinstance(text, str)), None)
    if bad is not None:
        raise ValueError(f"{path}: the caption of {bad!r} is not text ({captions[bad]!r}); "
                         "delete the tree to rebuild it")
    return captions


# ==========================================================================================================
# One pair, and the whole tree
# ==========================================================================================================
def make_image(label: str, rng: np.random.Generator, size: int, amount: float = 0.5) -> np.ndarray:
    """uint8 (size, size, 3) image of a scene, drawn at 2x and downsampled (anti-aliased) up to 256 px."""
    scale = 2 if size <= 256 else 1
    img = IMAGE_MAKERS[label](rng, size * scale, amount)  # (S, S, 3) float
    img = np.clip(img + rng.normal(0, 0.015, img.shape).astype(np.float32), 0, 1)  # sensor grain
    pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    if scale > 1:
        pil = pil.resize((size, size), Image.Resampling.LANCZOS)
    else:
        pil = pil.filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(pil)


def _unrelated_scene(label: str, rng: np.random.Generator) -> str:
    """A scene sharing no source with ``label`` (the intruder of a ``mixed`` recording)."""
    mine = {RECIPES[label]["signature"], *RECIPES[label]["shared"]}
    others = [c for c in CLASSES if c != label and RECIPES[c]["signature"] not in mine]
    return others[rng.integers(len(others))]


def make_sound(label: str, rng: np.random.Generator, sample_rate: int, duration_s: float,
               hard: str | None = None, amount: float = 0.5) -> tuple[np.ndarray, dict]:
    """float32 (n,) recording of a place in [-1, 1], and what went into it (sources, levels, kind)."""
    if hard not in (None, *HARD_KINDS):
        raise ValueError(f"unknown recording kind {hard!r}; use None or one of {HARD_KINDS}")
    n = round(sample_rate * duration_s)
    levels = draw_sources(label, amount, rng)
    info: dict = {"kind": hard or "clean", "hard": hard, "amount": round(float(amount), 3),
                  "caption": caption(label, amount)}
    if hard == "mixed":
        other = _unrelated_scene(label, rng)
        levels[RECIPES[other]["signature"]] = round(float(rng.uniform(-6, 0)), 1)
        info["mixed_with"] = other
    info["sources"] = levels
    wave = mix_sources(levels, rng, n, sample_rate, RECIPES[label]["signature"], amount)
    if hard == "noisy":  # noise-dominated: the background is as loud as the scene or louder
        snr_db = rng.uniform(-6, 3)
        wave = _rms_norm(wave) + background_noise(rng, n, sample_rate) * np.float32(10 ** (-snr_db / 20))
        info["snr_db"] = round(float(snr_db), 1)
    wave = _norm(wave, 1.0)
    gain_db = rng.uniform(-36, -30) if hard == "quiet" else rng.uniform(-12, -1)
    wave = wave * np.float32(10 ** (gain_db / 20))
    floor_db = rng.uniform(-60, -46)
    wave = wave + np.float32(10 ** (floor_db / 20)) * _noise_band(rng, n, sample_rate, 30, 10000) / 0.3
    info.update(gain_db=round(float(gain_db), 1), noise_floor_db=round(float(floor_db), 1))
    return np.clip(wave, -1, 1).astype(np.float32), info


def _draw_kind(rng: np.random.Generator) -> str | None:
    """The kind of a place's recording: None (clean) or one of HARD_KINDS, with the shares of KIND_SHARES."""
    u, edge = rng.random(), 0.0
    for kind, share in KIND_SHARES.items():
        edge += share
        if u < edge:
            return kind
    return None


def plan_tree(per_class: int, seed: int) -> list[dict]:
    """Which pairs to write: id, base id, class, view k (0 = base), the recording's kind, the place's amount."""
    rng = np.random.default_rng([seed, 7919])
    ids = rng.choice(100_000, size=len(CLASSES) * per_class, replace=False)
    plan, next_id = [], 0
    for label in CLASSES:
        made = 0
        while made < per_class:
            base = f"{ids[next_id]:05d}"
            next_id += 1
            hard = _draw_kind(rng)
            amount = round(float(rng.random()), 3)
            views = 1 + (int(rng.integers(1, 3)) if rng.random() < K_FRACTION else 0)
            for k in range(min(views, per_class - made)):
                plan.append({"id": base if k == 0 else f"{base}_{k}", "base_id": base, "label": label, "k": k,
                             "hard": hard, "amount": amount})
                made += 1
    return plan


def _view(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another view of the same place (a `_k` image): rotated/flipped, slightly different light."""
    out = np.rot90(img, int(rng.integers(1, 4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out.astype(np.float32) * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)


def write_tree(out: str | Path, per_class: int = 24, seed: int = 42, image_size: int = 128,
               sample_rate: int = 22_050, duration_s: float = 10.0, progress: bool = True) -> Path:
    """Write the synthetic ADVANCE-shaped tree to ``out`` (atomically: built beside it, then renamed).

    An existing ``out`` is replaced only when it is empty or an earlier synthetic tree (it has ``synthetic.json``);
    anything else raises :class:`FileExistsError` before any work is done. The writer holds :func:`file_lock` on
    ``out`` throughout, so two writers of one tree take turns, and the half-built folders of killed writers
    (``.<out>.<pid>.partial``, ``.<out>.<pid>.old``) are deleted before writing. A run killed at any point leaves
    ``out`` absent, the earlier tree whole, or the new tree whole: never a mix, never a tree missing files.
    """
    out = Path(out)
    if per_class < 1 or image_size < 8:
        raise ValueError(f"per_class must be >= 1 and image_size >= 8 (got {per_class}, {image_size})")
    with file_lock(out):
        _write_tree_locked(out, per_class, seed, image_size, sample_rate, duration_s, progress)
    return out


def _write_tree_locked(out: Path, per_class: int, seed: int, image_size: int, sample_rate: int,
                       duration_s: float, progress: bool) -> None:
    """:func:`write_tree`'s work, for a caller that holds the lock of ``out``."""
    check_replaceable(out)
    _remove_leftovers(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    _fill_tree(tmp, per_class, seed, image_size, sample_rate, duration_s, progress)
    _swap_into_place(tmp, out)


def _fill_tree(tmp: Path, per_class: int, seed: int, image_size: int, sample_rate: int, duration_s: float,
               progress: bool) -> None:
    """Write every pair and ``synthetic.json`` into the fresh folder ``tmp``."""
    for label in CLASSES:
        (tmp / "vision" / label).mkdir(parents=True)
        (tmp / "sound" / label).mkdir(parents=True)
    plan = plan_tree(per_class, seed)
    meta, base_images = {}, {}
    for item in tqdm(plan, desc="synthesising pairs", disable=not progress):
        label, base = item["label"], item["base_id"]
        rng = np.random.default_rng([seed, CLASSES.index(label), int(base), item["k"]])
        img_path = tmp / "vision" / label / f"{item['id']}.jpg"
        wav_path = tmp / "sound" / label / f"{item['id']}.wav"
        if item["k"] == 0:
            base_images[base] = make_image(label, rng, image_size, item["amount"])
            Image.fromarray(base_images[base]).save(img_path, quality=90)
            wave, info = make_sound(label, rng, sample_rate, duration_s, item["hard"], item["amount"])
            sf.write(wav_path, wave, sample_rate, subtype="PCM_16")
            meta[item["id"]] = {**item, **info}
        else:
            Image.fromarray(_view(base_images[base], rng)).save(img_path, quality=90)
            shutil.copyfile(tmp / "sound" / label / f"{base}.wav", wav_path)  # same place, same recording
            meta[item["id"]] = {**item, **meta[base], "id": item["id"], "k": item["k"]}
    params = {"version": SYNTH_VERSION, "per_class": per_class, "seed": seed, "image_size": image_size,
              "sample_rate": sample_rate, "duration_s": duration_s}
    (tmp / "synthetic.json").write_text(json.dumps({"params": params, "pairs": meta}, indent=1))


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` onto ``out``; an earlier tree is renamed aside first, deleted last.

    Deleting the earlier tree in place could be interrupted half-way and leave a folder that still has its
    ``synthetic.json`` but lacks files: it would pass for a finished tree. Renames cannot be half done.
    """
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        out.replace(old)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(out)
    shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(out: Path) -> None:
    """Delete the ``.partial`` and ``.old`` folders of killed writers of ``out`` (call it holding the lock)."""
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*"):
        if stale.is_dir() and stale.suffix in (".partial", ".old"):
            shutil.rmtree(stale, ignore_errors=True)


def check_replaceable(out: Path) -> None:
    """Raise FileExistsError unless ``out`` is absent, an empty folder or a synthetic tree written by us."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; refusing to replace it (choose another --out)")
    if any(out.iterdir()) and not (out / "synthetic.json").is_file():
        raise FileExistsError(f"{out}: folder is not empty and is not a synthetic tree (no synthetic.json); "
                              "refusing to delete it (choose another --out, or empty the folder yourself)")


def tree_name(cfg) -> str:
    """Cache folder name of the synthetic tree for ``cfg``: every generator parameter is in it."""
    d = cfg.data
    return (f"synthetic-v{SYNTH_VERSION}-n{d.per_class}-px{d.image_size}-sr{d.sample_rate}"
            f"-{d.duration_s:g}s-seed{cfg.seed}")


def ensure_synthetic(cfg, progress: bool = True) -> Path:
    """The synthetic tree of ``cfg`` in ``cfg.datasets_dir``, written first if it is not there.

    A tree is there when its ``synthetic.json`` is (:func:`write_tree` renames a finished tree into place, so
    a tree with that file is whole). A second process asking for the same tree while the first writes it
    waits for the first one's lock, then uses the tree it wrote.
    """
    root = Path(cfg.datasets_dir) / tree_name(cfg)
    if (root / "synthetic.json").is_file():
        return root
    with waiting_lock(root, f"{root}: another a2i process is writing this tree; waiting for it to finish", sys.stderr):
        if not (root / "synthetic.json").is_file():  # not written by the other process meanwhile
            d = cfg.data
            _write_tree_locked(root, d.per_class, cfg.seed, d.image_size, d.sample_rate, d.duration_s, progress)
    return root
