"""Dataset: parsing ADVANCE-shaped trees, pairing by stem, the split by base id, download and safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from a2i_utils.config import get_config
from a2i_utils.data import (
    CLASSES,
    Dataset,
    DatasetError,
    ImageError,
    advance,
    load_image,
    load_tree,
    prepare_dataset,
    scan_tree,
    split_by_base_id,
)
from a2i_utils.data.dataset import _split_counts

SR = 22_050


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Each test's manifests and splits go to a cache of its own (load_tree's default: A2I_CACHE)."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("A2I_CACHE", str(cache))
    return cache


def write_pair(root: Path, label: str, name: str, seconds: float = 0.2, rate: int = SR, int32: bool = False):
    """One image + recording, the way torchgeo's ADVANCE fixture writes them (int32 WAV when asked)."""
    (root / "vision" / label).mkdir(parents=True, exist_ok=True)
    (root / "sound" / label).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(f"{label}/{name}".encode()))  # the same in every process
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "vision" / label / f"{name}.jpg")
    wave = rng.uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)
    if int32:
        sf.write(root / "sound" / label / f"{name}.wav", (wave * 2**31).astype(np.int32), rate, subtype="PCM_32")
    else:
        sf.write(root / "sound" / label / f"{name}.wav", wave, rate, subtype="PCM_16")


def test_classes_are_the_13_advance_folders_sorted():
    assert len(CLASSES) == 13 and list(CLASSES) == sorted(CLASSES)
    assert "sparse shrub land" in CLASSES and "train station" in CLASSES


def test_torchgeo_style_fixture_tree_is_parsed(tmp_path):
    for label in ("airport", "sparse shrub land"):
        for name in ("00001", "00002", "00002_1"):
            write_pair(tmp_path, label, name if label == "airport" else str(int(name[:5]) + 100).zfill(5)
                       + name[5:], seconds=10.0, int32=True)
    pairs, problems = scan_tree(tmp_path, progress=False)
    assert problems == []
    assert len(pairs) == 6
    by_id = {(p.label, p.id): p for p in pairs}
    p = by_id[("airport", "00002_1")]
    assert p.base_id == "00002" and p.image_path.stem == p.audio_path.stem == "00002_1"
    assert p.audio_path.parent.name == "airport"
    assert by_id[("sparse shrub land", "00102_1")].base_id == "00102"


def test_pairs_by_stem_not_position_and_reports_problems(tmp_path):
    write_pair(tmp_path, "beach", "00010")
    write_pair(tmp_path, "beach", "00011")
    (tmp_path / "sound" / "beach" / "00011.wav").unlink()  # image without recording
    write_pair(tmp_path, "beach", "00012")
    (tmp_path / "vision" / "beach" / "00012.jpg").unlink()  # recording without image
    write_pair(tmp_path, "beach", "00013")
    (tmp_path / "sound" / "beach" / "00013.wav").write_text("not audio")  # unreadable recording
    write_pair(tmp_path, "beach", "00014")
    (tmp_path / "vision" / "beach" / "00014.jpg").write_bytes(b"\xff\xd8\xff garbage")  # unreadable image
    write_pair(tmp_path, "forest", "00015")
    (tmp_path / "vision" / "mountains").mkdir()  # not a class
    write_pair(tmp_path, "forest", "00016")
    sf.write(tmp_path / "sound" / "forest" / "00016.wav", np.zeros(100, np.float32), SR)  # silent: kept
    pairs, problems = scan_tree(tmp_path, progress=False)
    assert sorted(p.id for p in pairs) == ["00010", "00015", "00016"]
    text = "\n".join(problems)
    for needle in ("00011.jpg: no recording", "00012.wav: no image", "beach/00013", "beach/00014", "mountains",
                   "forest/00016", "silent"):
        assert needle in text, needle


def test_load_tree_raises_only_when_nothing_is_usable(tmp_path):
    (tmp_path / "vision").mkdir()
    with pytest.raises(DatasetError, match="no usable"):
        load_tree(tmp_path, progress=False)


def make_big_tree(root: Path, per_class: int = 20) -> None:
    """A tree with several classes, base ids with `_k` siblings."""
    n = 0
    for label in CLASSES[:4]:
        for i in range(per_class):
            base = f"{n:05d}"
            n += 1
            write_pair(root, label, base, seconds=0.05)
            if i % 3 == 0:
                write_pair(root, label, f"{base}_1", seconds=0.05)


def test_split_by_base_id_stratified_and_stored(tmp_path):
    make_big_tree(tmp_path)
    ds = load_tree(tmp_path, val_fraction=0.1, seed=42, progress=False, test_fraction=0.2)
    assert isinstance(ds, Dataset) and ds.problems == []
    ids = {s: {p.base_id for p in ds.subset(s)} for s in ("train", "val", "test")}
    assert ids["train"] and ids["val"] and ids["test"]
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert (ds.val, ds.test) == (ds.subset("val"), ds.subset("test"))
    for label in CLASSES[:4]:
        n_val = len({p.base_id for p in ds.val if p.label == label})
        n_test = len({p.base_id for p in ds.test if p.label == label})
        assert (n_val, n_test) == (2, 4)  # 10% and 20% of 20 base ids in every class
    assert ds.summary().startswith("108 pairs (74 train / 11 val / 23 test), 80 base ids")  # `_1` views go along
    assert (ds.index_dir / "split.json").is_file() and (ds.index_dir / "manifest.json").is_file()
    assert not (tmp_path / "split.json").exists() and not (tmp_path / "manifest.json").exists()  # never in the tree
    again = load_tree(tmp_path, val_fraction=0.1, seed=42, progress=False)
    assert [(p.id, p.split) for p in again.pairs] == [(p.id, p.split) for p in ds.pairs]
    other = split_by_base_id(ds.pairs, 0.1, seed=7, test_fraction=0.2)
    assert other != {p.base_id: p.split for p in ds.pairs}
    with pytest.raises(ValueError, match="unknown split 'held-out'"):
        ds.subset("held-out")


def test_split_val_is_the_old_90_10_held_out_and_test_comes_from_train(tmp_path):
    """Adding a test split moves places from train only: val is the place set the 90/10 split held out."""
    make_big_tree(tmp_path)
    pairs = load_tree(tmp_path, progress=False).pairs
    old = split_by_base_id(pairs, 0.1, seed=42, test_fraction=0.0)
    new = split_by_base_id(pairs, 0.1, seed=42, test_fraction=0.2)
    assert set(old.values()) == {"train", "val"}
    assert {b for b, s in new.items() if s == "val"} == {b for b, s in old.items() if s == "val"}
    assert all(old[b] == "train" for b, s in new.items() if s == "test")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 20, 51])
def test_split_counts_leave_train_a_place(n):
    n_val, n_test = _split_counts(n, 0.1, 0.2)
    assert n - n_val - n_test >= 1 and (n_val >= 1) == (n >= 2) and (n_test >= 1) == (n >= 3)
    with pytest.raises(ValueError, match="sum to less than 1"):
        _split_counts(n, 0.5, 0.5)


def test_split_changes_when_test_fraction_changes(tmp_path):
    """The stored split remembers its fractions: another test_fraction makes a new split, not the stored one."""
    make_big_tree(tmp_path, per_class=10)
    first = load_tree(tmp_path, progress=False, test_fraction=0.2)
    second = load_tree(tmp_path, progress=False, test_fraction=0.3)
    assert len(second.test) > len(first.test) and second.val == first.val


def test_manifest_rebuilt_when_tree_changes(tmp_path):
    make_big_tree(tmp_path, per_class=5)
    first = load_tree(tmp_path, progress=False)
    write_pair(tmp_path, "lake", "99999")
    second = load_tree(tmp_path, progress=False)
    assert len(second.pairs) == len(first.pairs) + 1 and "99999" in {p.id for p in second.pairs}


def test_write_pair_is_reproducible_across_processes(tmp_path):
    """The fixture's bytes depend only on (label, name), not on Python's per-process string hash."""
    write_pair(tmp_path / "here", "beach", "00010")
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); import test_data; "
            "test_data.write_pair(Path(sys.argv[1]), 'beach', '00010')")
    for _ in range(2):  # two processes, each with its own random string hash
        there = tmp_path / "there"
        shutil.rmtree(there, ignore_errors=True)
        subprocess.run([sys.executable, "-c", code, str(there), str(Path(__file__).parent)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": "random"})
        for rel in ("vision/beach/00010.jpg", "sound/beach/00010.wav"):
            assert (there / rel).read_bytes() == (tmp_path / "here" / rel).read_bytes(), rel


def test_damaged_manifest_is_rebuilt(tmp_path):
    make_big_tree(tmp_path, per_class=3)
    first = load_tree(tmp_path, progress=False)
    manifest = first.index_dir / "manifest.json"
    for damage in ("{not json", '{"version": 2, "fingerprint": null}', "[1, 2]", ""):
        manifest.write_text(damage)
        again = load_tree(tmp_path, progress=False)
        assert [(p.id, p.split) for p in again.pairs] == [(p.id, p.split) for p in first.pairs], damage
        assert json.loads(manifest.read_text())["pairs"], damage  # written again


def test_damaged_manifest_rows_are_rebuilt(tmp_path):
    make_big_tree(tmp_path, per_class=3)
    first = load_tree(tmp_path, progress=False)
    manifest = first.index_dir / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["pairs"][0] = {"id": "00000"}  # right fingerprint, broken row
    manifest.write_text(json.dumps(doc))
    assert [p.id for p in load_tree(tmp_path, progress=False).pairs] == [p.id for p in first.pairs]


@pytest.mark.parametrize("damage", ["{not json", "[]", '{"settings": {}, "assignment": {"00000": "holdout"}}',
                                    b"\xff\xfe\x00"])
def test_damaged_split_is_an_error_naming_the_file(tmp_path, damage):
    make_big_tree(tmp_path, per_class=3)
    split = load_tree(tmp_path, progress=False).index_dir / "split.json"
    split.write_bytes(damage if isinstance(damage, bytes) else damage.encode())
    with pytest.raises(DatasetError, match=r"split\.json.*delete the file"):
        load_tree(tmp_path, progress=False)
    split.unlink()  # the fix the message gives
    assert load_tree(tmp_path, progress=False).val


def test_cached_problems_name_files_under_the_current_root(tmp_path):
    old = tmp_path / "old"
    write_pair(old, "beach", "00010")
    write_pair(old, "beach", "00011")
    (old / "sound" / "beach" / "00011.wav").unlink()
    _, problems = scan_tree(old, progress=False)
    first = load_tree(old, progress=False)
    assert first.problems == problems and str(old / "vision" / "beach" / "00011.jpg") in problems[0]
    manifest = first.index_dir / "manifest.json"
    assert str(old) not in manifest.read_text()  # stored relative to the root
    new = tmp_path / "moved"
    shutil.copytree(old, new)  # copytree keeps mtimes: the fingerprint matches, the manifest is reused
    shutil.rmtree(old)
    stamp = manifest.stat().st_mtime_ns
    moved = load_tree(new, progress=False)
    assert moved.index_dir == first.index_dir and manifest.stat().st_mtime_ns == stamp  # read, not rebuilt
    assert moved.problems == [line.replace(str(old), str(new)) for line in problems]
    assert str(new / "vision" / "beach" / "00011.jpg") in moved.problems[0]
    assert all(str(old) not in line for line in moved.problems)


def test_load_image_sizes_and_errors(tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(np.full((64, 48, 3), 200, np.uint8)).save(path)
    rgb, gray = load_image(path, 32), load_image(path, 32, gray=True)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8 and gray.shape == (32, 32)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageError, match="bad.jpg"):
        load_image(bad, 32)
    truncated = tmp_path / "trunc.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ImageError, match="trunc.jpg"):
        load_image(truncated, 32)


def test_prepare_dataset_synthetic_is_cached(tmp_path):
    cfg = get_config("demo", {"data.per_class": 2, "data.image_size": 32, "cache_dir": tmp_path})
    ds = prepare_dataset(cfg, progress=False)
    assert len(ds.pairs) == 2 * 13 and ds.root.parent == cfg.datasets_dir
    assert set(ds.counts().values()) == {2}
    assert ds.index_dir.is_relative_to(cfg.datasets_dir) and not (ds.root / "split.json").exists()
    mtime = (ds.root / "synthetic.json").stat().st_mtime_ns
    ds2 = prepare_dataset(cfg, progress=False)
    assert (ds2.root / "synthetic.json").stat().st_mtime_ns == mtime
    assert [p.id for p in ds2.pairs] == [p.id for p in ds.pairs]


# ----------------------------------------------------------------------------------------------------------
# Download (md5) and safe extraction
# ----------------------------------------------------------------------------------------------------------
def make_zip(path: Path, members: dict[str, bytes]) -> str:
    """A zip with the given members; return its md5."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_checks_md5_and_refuses_a_wrong_file(tmp_path):
    src = tmp_path / "mirror" / "ADVANCE_vision.zip"
    src.parent.mkdir()
    md5 = make_zip(src, {"vision/airport/00001.jpg": b"x"})
    good = advance.Archive("ADVANCE_vision.zip", src.as_uri(), md5)
    path = advance.download(good, tmp_path / "downloads", progress=False)
    assert path.read_bytes() == src.read_bytes()
    wrong = advance.Archive("other.zip", src.as_uri(), "0" * 32)
    with pytest.raises(advance.DownloadError, match="md5"):
        advance.download(wrong, tmp_path / "downloads", progress=False)
    assert not (tmp_path / "downloads" / "other.zip").exists()  # the wrong file is not kept


def test_ensure_advance_downloads_and_extracts_both_archives(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG")
    wav = io.BytesIO()
    sf.write(wav, np.full(1000, 0.1, np.float32), SR, format="WAV", subtype="PCM_32")
    md5_v = make_zip(mirror / "v.zip", {"vision/sparse shrub land/00001.jpg": buf.getvalue()})
    md5_s = make_zip(mirror / "s.zip", {"sound/sparse shrub land/00001.wav": wav.getvalue()})
    archives = (advance.Archive("ADVANCE_vision.zip", (mirror / "v.zip").as_uri(), md5_v),
                advance.Archive("ADVANCE_sound.zip", (mirror / "s.zip").as_uri(), md5_s))
    cfg = get_config("full", {"cache_dir": tmp_path / "cache"})
    root = advance.ensure_advance(cfg, progress=False, archives=archives)
    ds = load_tree(root, progress=False)
    assert [(p.label, p.id) for p in ds.pairs] == [("sparse shrub land", "00001")]
    (mirror / "v.zip").unlink()  # a second call uses the cache, no download
    assert advance.ensure_advance(cfg, progress=False, archives=archives) == root


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil-abs.txt", "vision/../../evil.txt"])
def test_safe_extract_refuses_escaping_zip_members(tmp_path, name):
    archive = tmp_path / "bad.zip"
    make_zip(archive, {"vision/ok.txt": b"ok", name: b"evil"})
    with pytest.raises(advance.UnsafeArchiveError, match="refusing"):
        advance.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "vision").exists() and not (tmp_path / "evil.txt").exists()


def test_safe_extract_refuses_symlinks(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("vision/link")
        info.external_attr = (0o120777 << 16)  # a symbolic link
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(advance.UnsafeArchiveError, match="link"):
        advance.safe_extract(archive, tmp_path / "out")
    tar_path = tmp_path / "link.tar"
    with tarfile.open(tar_path, "w") as tf:
        t = tarfile.TarInfo("sound/link")
        t.type, t.linkname = tarfile.SYMTYPE, "../../outside"
        tf.addfile(t)
    with pytest.raises(advance.UnsafeArchiveError, match="link"):
        advance.safe_extract(tar_path, tmp_path / "out2")


def test_safe_extract_extracts_a_clean_archive(tmp_path):
    archive = tmp_path / "ok.zip"
    make_zip(archive, {"vision/beach/00001.jpg": b"a", "vision/beach/00002.jpg": b"b"})
    out = advance.safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in (out / "vision" / "beach").iterdir()) == ["00001.jpg", "00002.jpg"]
    assert not list(out.glob(".extract-*"))


# ----------------------------------------------------------------------------------------------------------
# The `a2i data` verb
# ----------------------------------------------------------------------------------------------------------
def test_cli_synth_then_check(tmp_path, capsys):
    from a2i_utils import cli

    out = tmp_path / "tree"
    assert cli.main(["data", "synth", "--out", str(out), "--per-class", "1", "--seed", "5", "--image-size", "16"]) == 0
    assert len(list((out / "sound").glob("*/*.wav"))) == 13
    (out / "sound" / "lake" / next((out / "sound" / "lake").iterdir()).name).write_bytes(b"")
    assert cli.main(["data", "check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "12 usable pairs" in text and "1 problem(s)" in text and "empty" in text
    assert not (out / "manifest.json").exists()  # check never writes into the tree


def test_cli_check_fails_only_when_nothing_usable(tmp_path, capsys):
    from a2i_utils import cli

    (tmp_path / "vision" / "beach").mkdir(parents=True)
    assert cli.main(["data", "check", str(tmp_path)]) == 1
    assert cli.main(["data", "check", str(tmp_path / "missing")]) == 1


def scipy_style_int32_wav(n_samples: int = 1, rate: int = SR) -> bytes:
    """A WAV as ``scipy.io.wavfile.write(path, 22050, np.zeros((1,), dtype='int32'))`` writes it (plain PCM)."""
    import struct

    data = np.zeros(n_samples, "<i4").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 4, 4, 32)  # PCM, mono, rate, byte rate, block align, bits
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_torchgeo_fixture_archives_exactly(tmp_path):
    """torchgeo's tests/data/advance: two deflated zips, one-sample all-zero int32 WAVs at 22,050 Hz."""
    from a2i_utils.data.audio import SilentAudioWarning
    from a2i_utils.transformer.features import features_for_pairs

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    jpg = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(jpg, format="JPEG")
    members = {"airport": "00063", "beach": "00093"}
    archives = []
    for kind, ext, payload in (("vision", "jpg", jpg.getvalue()), ("sound", "wav", scipy_style_int32_wav())):
        path = mirror / f"ADVANCE_{kind}.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for label, name in members.items():
                zf.writestr(f"{kind}/{label}/{name}.{ext}", payload)
        archives.append(advance.Archive(path.name, path.as_uri(), hashlib.md5(path.read_bytes()).hexdigest()))
    cfg = get_config("full", {"cache_dir": tmp_path / "cache"})
    root = advance.ensure_advance(cfg, progress=False, archives=tuple(archives))
    ds = load_tree(root, progress=False)
    assert sorted((p.label, p.id) for p in ds.pairs) == [("airport", "00063"), ("beach", "00093")]
    assert sum("silent" in line for line in ds.problems) == 2  # kept, with a warning each
    with pytest.warns(SilentAudioWarning, match="all silent"):
        feats = features_for_pairs(ds.pairs, cfg, progress=False)
    assert feats.shape == (2, 500, 220) and torch.allclose(feats, torch.full_like(feats, float(np.log(1e-4))))


def test_cli_fetch_downloads_into_the_cache(tmp_path, monkeypatch, capsys):
    from a2i_utils import cli

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    md5 = make_zip(mirror / "v.zip", {"vision/beach/00001.jpg": b"x"})
    monkeypatch.setattr(advance, "ARCHIVES", (advance.Archive("ADVANCE_vision.zip", (mirror / "v.zip").as_uri(), md5),))
    monkeypatch.setenv("A2I_CACHE", str(tmp_path / "cache"))
    assert cli.main(["data", "fetch"]) == 0
    assert (tmp_path / "cache" / "downloads" / "ADVANCE_vision.zip").is_file()
    assert (tmp_path / "cache" / "datasets" / "advance" / "vision" / "beach" / "00001.jpg").read_bytes() == b"x"
    assert "ADVANCE is in" in capsys.readouterr().out


def test_download_failure_says_where_to_put_the_file(tmp_path):
    missing = advance.Archive("ADVANCE_sound.zip", (tmp_path / "nowhere.zip").as_uri(), "0" * 32)
    with pytest.raises(advance.DownloadError, match=r"download from .* failed.*copy the file"):
        advance.download(missing, tmp_path / "downloads", progress=False)


def test_cli_fetch_failure_is_a_clear_message_and_exit_1(tmp_path, monkeypatch, capsys):
    from a2i_utils import cli

    monkeypatch.setattr(advance, "ARCHIVES", (advance.Archive("ADVANCE_vision.zip", (tmp_path / "no.zip").as_uri(),
                                                              "0" * 32),))
    monkeypatch.setenv("A2I_CACHE", str(tmp_path / "cache"))
    assert cli.main(["data", "fetch"]) == 1
    assert "copy the file" in capsys.readouterr().err
