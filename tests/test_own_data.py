"""Your own data: ``data.root`` points the course at an ADVANCE-shaped folder, used in place and never modified."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from a2i_utils import cli
from a2i_utils.config import get_config
from a2i_utils.data import CLASSES, DatasetError, load_image, load_tree, prepare_dataset
from a2i_utils.data.audio import load_audio

SR = 22_050


def write_pair(root: Path, label: str, name: str, seconds: float = 0.5, size: int = 24) -> None:
    """One JPEG + one int32 WAV at 22,050 Hz (the way torchgeo's ADVANCE fixture writes them)."""
    rng = np.random.default_rng(zlib.crc32(f"{label}/{name}".encode()))
    for sub in ("vision", "sound"):
        (root / sub / label).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "vision" / label / f"{name}.jpg")
    wave = rng.uniform(-0.5, 0.5, int(seconds * SR))
    sf.write(root / "sound" / label / f"{name}.wav", (wave * 2**31).astype(np.int32), SR, subtype="PCM_32")


def make_own_folder(root: Path) -> Path:
    """An ADVANCE-shaped folder of 5 classes (spaces in names, ``_k`` views, one broken recording, a stray file)."""
    n = 0
    for label in ("airport", "beach", "forest", "sparse shrub land", "train station"):
        for i in range(6):
            write_pair(root, label, f"{n:05d}")
            if i % 3 == 0:
                write_pair(root, label, f"{n:05d}_1")
            n += 1
    (root / "sound" / "beach" / "00006.wav").write_bytes(b"")  # one empty recording: a problem, not a crash
    (root / "README.txt").write_text("my recordings\n")  # a file of the user's that must stay as it is
    return root


def tree_hash(root: Path) -> str:
    """SHA-256 over every entry below ``root``: relative path, kind, permissions, size, mtime and content."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            h.update(f"{path.relative_to(root)}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                     f"{st.st_size}\0{st.st_mtime_ns}\n".encode())
            if path.is_file():
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@pytest.fixture
def own(tmp_path):
    """A read-only ADVANCE-shaped folder, a cache elsewhere, and the folder's hash before anything runs."""
    root = make_own_folder(tmp_path / "my data")
    for dirpath, _, filenames in os.walk(root):  # read only, as on a shared disk
        for name in filenames:
            os.chmod(Path(dirpath) / name, 0o444)
        os.chmod(dirpath, 0o555)
    yield root, tmp_path / "cache", tree_hash(root)
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o755)


def test_own_folder_is_checked_loaded_and_left_unchanged(own, capsys, monkeypatch):
    """`a2i data check`, `a2i data prepare --root` and a notebook-01-sized load; the folder's hash is unchanged."""
    root, cache, before = own
    monkeypatch.setenv("A2I_CACHE", str(cache))
    assert cli.main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "39 usable pairs, 30 base ids, 1 problem(s)" in out and "00006.wav" in out and "empty" in out
    assert cli.main(["data", "prepare", "--root", str(root), "--mode", "demo"]) == 0
    out = capsys.readouterr().out
    assert "39 pairs" in out and f"manifest and split: {cache}" in out

    # notebook 01, in short: the dataset, counts, a pair's files, images and recordings, the split by place
    cfg = get_config("demo", {"data.root": str(root), "cache_dir": cache})
    ds = prepare_dataset(cfg, progress=False)
    assert ds.root == root.resolve() and len(ds.pairs) == 39 and len(ds.problems) == 1
    assert ds.index_dir.is_relative_to(cfg.datasets_dir)
    assert {"manifest.json", "split.json"} <= {p.name for p in ds.index_dir.iterdir()}
    counts = ds.counts()
    assert [c for c in CLASSES if counts[c]] == ["airport", "beach", "forest", "sparse shrub land", "train station"]
    assert not {p.base_id for p in ds.train} & {p.base_id for p in ds.val} and ds.val
    for p in ds.pairs:
        assert load_image(p.image_path, cfg.data.image_size).shape == (cfg.data.image_size,) * 2 + (3,)
        assert load_audio(p.audio_path, SR, duration_s=cfg.data.duration_s).shape == (int(SR * cfg.data.duration_s),)
    again = prepare_dataset(cfg, progress=False)  # the second time from the cache: same pairs, same split
    assert [(p.id, p.split) for p in again.pairs] == [(p.id, p.split) for p in ds.pairs]

    assert tree_hash(root) == before  # nothing written, renamed, touched or re-permissioned in the folder


def test_own_folder_index_follows_the_folder_contents(own):
    """The manifest and split are keyed by the folder's fingerprint: a changed folder is validated again."""
    root, cache, _ = own
    first = load_tree(root, progress=False, cache_dir=cache)
    assert first.index_dir == load_tree(root, progress=False, cache_dir=cache).index_dir
    os.chmod(root / "vision" / "beach", 0o755)
    os.chmod(root / "sound" / "beach", 0o755)
    write_pair(root, "beach", "00099")
    second = load_tree(root, progress=False, cache_dir=cache)
    assert second.index_dir != first.index_dir and len(second.pairs) == len(first.pairs) + 1


@pytest.mark.parametrize("case", ["missing", "a file", "no sound"])
def test_a_bad_root_is_one_clear_error(tmp_path, case):
    target = tmp_path / "data"
    if case == "a file":
        target.write_text("not a folder")
    elif case == "no sound":
        write_pair(target, "beach", "00001")
        for f in (target / "sound" / "beach").iterdir():
            f.unlink()
        (target / "sound" / "beach").rmdir()
        (target / "sound").rmdir()
    cfg = get_config("demo", {"data.root": str(target), "cache_dir": tmp_path / "cache"})
    want = "has no sound/ folder" if case == "no sound" else "is not a folder"
    with pytest.raises(DatasetError, match=rf"data\.root = .*{want}.*a2i data check DIR"):
        prepare_dataset(cfg, progress=False)
    assert not (tmp_path / "cache" / "datasets" / "synthetic").exists()  # nothing made instead


def test_prepare_cli_reports_a_bad_root(tmp_path, capsys):
    assert cli.main(["data", "prepare", "--root", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_old_split_next_to_the_data_is_read_never_written(tmp_path):
    """A tree with a split.json from an older version keeps that split; a damaged one is ignored, not fixed."""
    root = make_own_folder(tmp_path / "tree")
    fresh = load_tree(root, progress=False, cache_dir=tmp_path / "c1")
    flipped = {p.base_id: "val" if p.split == "train" else "train" for p in fresh.pairs}  # unlike a new split
    old = {"settings": {"seed": 42, "val_fraction": 0.1}, "assignment": flipped}
    (root / "split.json").write_text(json.dumps(old))
    (root / "manifest.json").write_text("{damaged")
    before = tree_hash(root)
    assert load_tree(root, progress=False, cache_dir=tmp_path / "c4").test  # an old 2-way split does not fit 3 ways
    ds = load_tree(root, progress=False, cache_dir=tmp_path / "c2", test_fraction=0.0)  # the old settings: kept
    assert {p.base_id: p.split for p in ds.pairs} == flipped
    assert json.loads((ds.index_dir / "split.json").read_text())["assignment"] == flipped  # kept in the cache
    assert tree_hash(root) == before
    (root / "split.json").write_text("{damaged too")
    before = tree_hash(root)
    again = load_tree(root, progress=False, cache_dir=tmp_path / "c3")
    assert [(p.id, p.split) for p in again.pairs] == [(p.id, p.split) for p in fresh.pairs]  # made from the seed
    assert again.test
    assert tree_hash(root) == before
