"""Hostile files (issue 11): unsafe archives, checkpoints that carry pickled code, wrong hashes, tampered caches.

Each case ends in our own error naming the file, or is detected and rebuilt: never code execution, never a file
written outside its folder, never a silently wrong result.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from a2i_utils.config import get_config
from a2i_utils.data import advance, load_tree
from a2i_utils.devices import cpu_threads
from a2i_utils.imagebind import huge
from a2i_utils.io import CheckpointError, sha256_file

PACKAGE = Path(__file__).resolve().parents[1] / "a2i_utils"


@pytest.fixture(autouse=True)
def one_thread(tmp_path_factory, monkeypatch):
    """Tiny models on one thread (the cores are shared); manifests in a cache of each test's own."""
    monkeypatch.setenv("A2I_CACHE", str(tmp_path_factory.mktemp("cache")))
    with cpu_threads(1):
        yield


# ----------------------------------------------------------------------------------------------------------
# Archives: refused before anything is written
# ----------------------------------------------------------------------------------------------------------
def _zip(path: Path, name: str, mode: int | None = None, data: bytes = b"evil") -> None:
    """A zip with one clean member and ``name`` (with Unix ``mode`` when given: how zip stores links, devices)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("vision/beach/00001.jpg", b"ok")
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.create_system, info.external_attr = 3, mode << 16
        zf.writestr(info, data)


def _tar(path: Path, name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> None:
    """A tar with one clean member and ``name`` of ``kind`` (a file, link, device or FIFO)."""
    with tarfile.open(path, "w") as tf:
        ok = tarfile.TarInfo("vision/beach/00001.jpg")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        t = tarfile.TarInfo(name)
        t.type, t.linkname = kind, linkname
        if kind == tarfile.REGTYPE:
            t.size = 4
        tf.addfile(t, io.BytesIO(b"evil") if kind == tarfile.REGTYPE else None)


ZIP_CASES = {
    "dotdot": ("../evil.txt", None, "escapes the target folder"),
    "nested-dotdot": ("vision/../../evil.txt", None, "escapes the target folder"),
    "absolute": ("/tmp/a2i-evil-abs.txt", None, "absolute path"),
    "windows-drive": ("C:/evil.txt", None, "absolute path"),
    "backslash-dotdot": ("vision\\..\\..\\evil.txt", None, "escapes the target folder"),
    "symlink": ("vision/link", stat.S_IFLNK | 0o777, "symbolic link"),
    "char-device": ("vision/tty", stat.S_IFCHR | 0o666, "device file"),
    "fifo": ("vision/pipe", stat.S_IFIFO | 0o644, "FIFO"),
}  # (zip has no hard links)
TAR_CASES = {
    "dotdot": ("../evil.txt", tarfile.REGTYPE, "", "escapes the target folder"),
    "absolute": ("/tmp/a2i-evil-abs.txt", tarfile.REGTYPE, "", "absolute path"),
    "symlink": ("sound/link", tarfile.SYMTYPE, "../../outside", "symbolic link"),
    "symlink-inside": ("sound/link", tarfile.SYMTYPE, "beach", "symbolic link"),  # even one pointing inside
    "hardlink": ("sound/hard", tarfile.LNKTYPE, "/etc/passwd", "hard link"),
    "char-device": ("sound/tty", tarfile.CHRTYPE, "", "device file"),
    "block-device": ("sound/sda", tarfile.BLKTYPE, "", "device file"),
    "fifo": ("sound/pipe", tarfile.FIFOTYPE, "", "FIFO"),
}


def _listing(folder: Path) -> list[tuple[str, int]]:
    """Every path under ``folder`` with its size: to show that nothing was written."""
    return sorted((str(p.relative_to(folder)), p.lstat().st_size) for p in folder.rglob("*"))


def _assert_refused_untouched(archive: Path, out_parent: Path, problem: str, member: str) -> None:
    before = _listing(out_parent)
    with pytest.raises(advance.UnsafeArchiveError) as info:
        advance.safe_extract(archive, out_parent / "advance")
    text = str(info.value)
    assert text.startswith(f"{archive}: refusing to extract") and repr(member) in text and problem in text
    assert _listing(out_parent) == before and not (out_parent / "advance").exists()
    assert not Path("/tmp/a2i-evil-abs.txt").exists()


@pytest.mark.parametrize("case", ZIP_CASES)
def test_unsafe_zip_is_refused_before_anything_is_written(tmp_path, case):
    name, mode, problem = ZIP_CASES[case]
    archive = tmp_path / "src" / "bad.zip"
    archive.parent.mkdir()
    _zip(archive, name, mode)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    _assert_refused_untouched(archive, tmp_path / "out", problem, name)


@pytest.mark.parametrize("case", TAR_CASES)
def test_unsafe_tar_is_refused_before_anything_is_written(tmp_path, case):
    name, kind, linkname, problem = TAR_CASES[case]
    archive = tmp_path / "src" / "bad.tar"
    archive.parent.mkdir()
    _tar(archive, name, kind, linkname)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    _assert_refused_untouched(archive, tmp_path / "out", problem, name)


def test_unsafe_archive_in_ensure_advance_leaves_no_marker(tmp_path):
    """Through the whole download-and-extract path: refused, nothing extracted, no marker, so never 'done'."""
    mirror = tmp_path / "mirror" / "v.zip"
    mirror.parent.mkdir()
    _zip(mirror, "../evil.txt")
    md5 = hashlib.md5(mirror.read_bytes()).hexdigest()
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache"})
    archives = (advance.Archive("ADVANCE_vision.zip", mirror.as_uri(), md5),)
    with pytest.raises(advance.UnsafeArchiveError, match="refusing to extract"):
        advance.ensure_advance(cfg, progress=False, archives=archives)
    root = cfg.datasets_dir / "advance"
    assert not list(root.glob(".extracted-*")) and not (root / "vision").exists()
    assert not (cfg.datasets_dir / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_not_an_archive_is_refused(tmp_path):
    bogus = tmp_path / "ADVANCE_vision.zip"
    bogus.write_bytes(b"<html>not found</html>")
    with pytest.raises(advance.UnsafeArchiveError, match=r"ADVANCE_vision\.zip: not a zip or tar archive"):
        advance.safe_extract(bogus, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------
# Checkpoints that carry pickled code
# ----------------------------------------------------------------------------------------------------------
UNSAFE_CALLS = {  # what deserialises arbitrary objects (code) and must not appear in a2i_utils
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"), ("dill", "loads"),
    ("cloudpickle", "load"), ("cloudpickle", "loads"), ("joblib", "load"), ("pd", "read_pickle"),
    ("pandas", "read_pickle"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
    ("marshal", "loads"), ("shelve", "open"), ("jit", "load"),
}


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for the expression ``torch.load`` (the last two names of an attribute chain)."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    return ".".join(reversed(names))


def _kw_is_true(call: ast.Call, name: str) -> bool | None:
    """True/False when ``name=`` is a literal, None when absent, False when not a literal ``True``."""
    for kw in call.keywords:
        if kw.arg == name:
            return isinstance(kw.value, ast.Constant) and kw.value.value is True
    return None


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: call`` for every call in ``source`` that could run pickled code."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        tail = tuple(name.split(".")[-2:])
        where = f"{filename}:{node.lineno}: {name}(...)"
        if name.endswith("torch.load") and _kw_is_true(node, "weights_only") is not True:
            found.append(where + " without weights_only=True")
        elif name in ("np.load", "numpy.load") and _kw_is_true(node, "allow_pickle"):
            found.append(where + " with allow_pickle=True")
        elif tail in UNSAFE_CALLS or (isinstance(node.func, ast.Name) and name in ("eval", "exec")):
            found.append(where)
    return found


def test_the_checker_finds_unsafe_loads():
    """The scan below can fail: each of these is found."""
    bad = ("import pickle, torch, numpy as np, yaml\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\ntorch.load(p, weights_only=flag)\n"
           "pickle.load(f)\npickle.loads(b)\nnp.load(p, allow_pickle=True)\nyaml.load(s)\neval(s)\n"
           "torch.jit.load(p)\n")
    assert len(unsafe_loads(bad)) == 9
    good = "torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p)\nyaml.safe_load(s)\nmodel.eval()\n"
    assert unsafe_loads(good) == []


def test_no_code_in_a2i_utils_can_unpickle_code():
    """Every ``torch.load`` has ``weights_only=True``; no pickle, unsafe YAML, ``allow_pickle``, eval or exec."""
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30
    found = [hit for f in files for hit in unsafe_loads(f.read_text(), str(f.relative_to(PACKAGE.parent)))]
    assert found == []


class Payload:
    """An object whose unpickling creates a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_checkpoint(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A torch checkpoint (zip, or the legacy plain pickle) whose state dict holds a :class:`Payload`."""
    obj = {"model": {"weight": torch.zeros(2, 2), "evil": Payload(marker)}}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_the_payload_is_live(tmp_path, legacy):
    """A plain unpickler (``weights_only=False``) runs the payload: the refusals below are real."""
    marker = tmp_path / "pwned"
    path = _malicious_checkpoint(tmp_path / "evil.pth", marker, legacy)
    torch.load(path, weights_only=False)  # a2i never does this (test above); here it shows the payload works
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_imagebind_huge_loader_refuses_pickled_code(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = _malicious_checkpoint(tmp_path / "imagebind_huge.pth", marker, legacy)
    with pytest.raises(CheckpointError, match=rf"^{path}: not a readable PyTorch checkpoint"):
        huge.read_state_dict(path)
    with pytest.raises(CheckpointError, match=rf"^{path}: "):
        huge.load_verified_weights(nn.Linear(2, 2), path)
    assert not marker.exists()
    assert not path.with_name(path.name + ".verified.json").exists()  # nothing was stamped as verified


def _trained_run(tmp_path):
    """A tiny pixel-transformer run with a checkpoint at step 3 (as tests/test_transformer_training.py makes)."""
    from a2i_utils.transformer.model import PixelTransformer
    from a2i_utils.transformer.training import PixelDataset, Trainer

    t = dict(image_size=8, d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=32, block_len=16,
             mem_len=8, dropout=0.0, batch_size=3, warmup_steps=2)
    cfg = get_config("demo", {"cache_dir": tmp_path, **{f"transformer.{k}": v for k, v in t.items()}})
    rng = np.random.default_rng(0)
    data = PixelDataset(rng.standard_normal((5, 6, 4)).astype(np.float32),
                        rng.integers(0, 256, (5, 8, 8), dtype=np.uint8))

    def trainer():
        torch.manual_seed(0)
        return Trainer(PixelTransformer(cfg.transformer, n_sections=6, n_bins=4), data, cfg.transformer,
                       tmp_path / "run", checkpoint_every=3)

    trainer().run(3, progress=False)
    return trainer


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_pixel_transformer_resume_refuses_pickled_code(tmp_path, legacy):
    from a2i_utils.transformer.training import load_run

    trainer = _trained_run(tmp_path)
    marker = tmp_path / "pwned"
    state = tmp_path / "run" / "step_0000003.state.pt"
    _malicious_checkpoint(state, marker, legacy)
    with pytest.raises(CheckpointError, match=r"run: step_0000003\.state\.pt: UnpicklingError"):
        trainer().load()
    weights = tmp_path / "run" / "step_0000003.safetensors"
    _malicious_checkpoint(weights, marker, legacy)  # a pickle where the safetensors weights should be
    with pytest.raises(CheckpointError, match=r"step_0000003\.safetensors"):
        trainer().load()
    with pytest.raises(CheckpointError, match=rf"cannot read {weights}"):
        load_run(tmp_path / "run")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------
# Wrong hashes: refused and not kept
# ----------------------------------------------------------------------------------------------------------
def test_a_cached_archive_with_the_wrong_md5_is_replaced(tmp_path, capsys):
    src = tmp_path / "mirror.zip"
    _zip(src, "vision/beach/00002.jpg")
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    final = tmp_path / "downloads" / "ADVANCE_vision.zip"
    final.parent.mkdir()
    final.write_bytes(b"a truncated or tampered archive")
    path = advance.download(advance.Archive(final.name, src.as_uri(), md5), final.parent, progress=False)
    assert path == final and final.read_bytes() == src.read_bytes()
    assert f"{final}: md5 does not match" in capsys.readouterr().out
    assert sorted(p.name for p in final.parent.iterdir()) == ["ADVANCE_vision.zip", "ADVANCE_vision.zip.lock"]


def test_a_download_with_the_wrong_sha256_is_deleted(tmp_path):
    src = tmp_path / "weights.bin"
    src.write_bytes(b"not the weights you are looking for")
    dest = tmp_path / "dl" / "weights.bin"
    with pytest.raises(CheckpointError, match=rf"^{dest}: downloaded from .* SHA-256 is .* expected {'0' * 64}"):
        huge.download_file(src.as_uri(), dest, progress=False, sha256="0" * 64)
    assert [p.name for p in dest.parent.iterdir()] == ["weights.bin.lock"]  # neither the file nor its .part
    assert huge.download_file(src.as_uri(), dest, progress=False, sha256=sha256_file(src)) == dest


def _small_huge(tmp_path):
    """A demo config whose 'huge' checkpoint is a tiny model's (the loader's path is the same)."""
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache", "device": "cpu"})
    return cfg, huge.huge_checkpoint_path(cfg)


def test_a_wrong_fresh_download_of_imagebind_huge_is_deleted(tmp_path):
    """No hash is published for imagebind_huge.pth: a download that is not its checkpoint is refused and deleted."""
    cfg, path = _small_huge(tmp_path)
    src = tmp_path / "served.pth"
    torch.save({"other.weight": torch.zeros(3)}, src)
    with pytest.raises(CheckpointError, match=rf"(?s)^{path}: not a checkpoint of this model.*deleted it"):
        huge.load_imagebind_huge(cfg, progress=False, url=src.as_uri(), builder=lambda: nn.Linear(2, 2))
    assert not path.exists() and not path.with_name(path.name + ".verified.json").exists()


def test_a_verified_checkpoint_replaced_by_one_of_another_size_is_refused_and_deleted(tmp_path):
    cfg, path = _small_huge(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(nn.Linear(2, 2).state_dict(), path)
    first = huge.load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: nn.Linear(2, 2))
    assert first.identity == f"imagebind_huge-{sha256_file(path)[:16]}"
    with open(path, "ab") as f:  # changed after verification: appended to, or partly overwritten
        f.write(b"\0" * 100)
    with pytest.raises(CheckpointError, match=rf"(?s)^{path}: size .* differs from the verified.*deleted it"):
        huge.load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: nn.Linear(2, 2))
    assert not path.exists() and not path.with_name(path.name + ".verified.json").exists()


def test_a_checkpoint_that_does_not_fit_but_was_not_just_downloaded_is_kept(tmp_path):
    """A file of another architecture that was already there (not a changed one) is refused but not deleted."""
    cfg, path = _small_huge(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(nn.Linear(3, 3).state_dict(), path)
    with pytest.raises(CheckpointError, match=rf"(?s)^{path}: not a checkpoint of this model.*delete {path}"):
        huge.load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: nn.Linear(2, 2))
    assert path.exists()


# ----------------------------------------------------------------------------------------------------------
# Tampered files read back from the cache: reported or rebuilt, never executed
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stamp", [
    "{not json", "[]", '{"size": "12", "mtime_ns": 1, "sha256": "ab"}', '{"size": 1e999, "mtime_ns": 0}',
    '{"size": -1, "mtime_ns": 0, "sha256": "' + "a" * 64 + '"}',
    '{"size": 10000000000000000000000000, "mtime_ns": 0, "sha256": "' + "A" * 64 + '"}',
    '{"size": 1, "mtime_ns": 1, "sha256": {"__class__": "os.system"}}',
], ids=["garbage", "list", "wrong-types", "inf", "negative", "huge-and-uppercase", "object"])
def test_a_tampered_verification_stamp_means_verify_again(tmp_path, capsys, stamp):
    """A stamp with wrong types or values is not trusted (nor acted on: the good file is kept) but re-verified."""
    cfg, path = _small_huge(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(nn.Linear(2, 2).state_dict(), path)
    stamp_file = path.with_name(path.name + ".verified.json")
    stamp_file.write_text(stamp)
    emb = huge.load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: nn.Linear(2, 2))
    assert emb.identity == f"imagebind_huge-{sha256_file(path)[:16]}" and path.exists()
    out = capsys.readouterr().out
    assert f"warning: {stamp_file}:" in out and "verifying imagebind_huge.pth again" in out
    assert json.loads(stamp_file.read_text())["sha256"] == sha256_file(path)  # a good stamp written again


def _tree_and_manifest(tmp_path):
    """A small ADVANCE-shaped tree, loaded once so that its manifest is cached; (tree, manifest path, doc)."""
    import soundfile as sf
    from PIL import Image

    root = tmp_path / "tree"
    for n in range(6):
        label = ("beach", "forest")[n % 2]
        (root / "vision" / label).mkdir(parents=True, exist_ok=True)
        (root / "sound" / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (n * 40, 0, 0)).save(root / "vision" / label / f"{n:05d}.jpg")
        sf.write(root / "sound" / label / f"{n:05d}.wav", np.full(800, 0.1, np.float32), 16000)
    ds = load_tree(root, progress=False)
    assert len(ds.pairs) == 6
    manifest = ds.index_dir / "manifest.json"
    return root, ds, manifest, json.loads(manifest.read_text())


@pytest.mark.parametrize("where", ["../../../../etc/passwd", "/etc/passwd", "vision/beach/../../../outside.jpg"])
def test_a_manifest_row_pointing_outside_the_root_is_rebuilt(tmp_path, where):
    root, first, manifest, doc = _tree_and_manifest(tmp_path)
    doc["pairs"][0]["image_path"] = where
    manifest.write_text(json.dumps(doc))
    again = load_tree(root, progress=False)
    assert all(p.image_path.resolve().is_relative_to(root.resolve()) for p in again.pairs)
    assert [p.image_path for p in again.pairs] == [p.image_path for p in first.pairs]


def test_a_manifest_row_with_a_wrong_label_is_rebuilt(tmp_path, capsys):
    root, first, manifest, doc = _tree_and_manifest(tmp_path)
    doc["pairs"][0]["label"] = "not a class"
    doc["pairs"][1]["id"] = 12345
    manifest.write_text(json.dumps(doc))
    again = load_tree(root, progress=False)
    assert f"{manifest}: damaged or tampered manifest" in capsys.readouterr().out  # reported, not silently used
    assert [(p.id, p.label) for p in again.pairs] == [(p.id, p.label) for p in first.pairs]


@pytest.mark.parametrize("weights", ["../other-run/step_0000003.safetensors", "/etc/passwd"])
def test_latest_json_naming_a_file_outside_the_run_is_refused(tmp_path, weights):
    from a2i_utils.transformer.training import load_run

    trainer = _trained_run(tmp_path)
    other = tmp_path / "other-run"
    other.mkdir()
    save_file(trainer().model.state_dict(), str(other / "step_0000003.safetensors"))
    meta_path = tmp_path / "run" / "latest.json"
    meta = json.loads(meta_path.read_text())
    meta["weights"] = weights
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"latest\.json.*outside"):
        load_run(tmp_path / "run", need_normalizer=False)  # today: loads the other run's weights silently
    with pytest.raises(CheckpointError, match=r"latest\.json.*outside"):
        trainer().load()


def test_no_module_reads_yaml():
    """No YAML is read anywhere (so no ``!!python/object`` tag can be): only JSON, parsed to plain data."""
    hits = [f for f in PACKAGE.rglob("*.py") if "import yaml" in f.read_text() or "from yaml" in f.read_text()]
    assert hits == []


def test_file_permissions_of_the_cache_are_not_widened(tmp_path):
    """Archives extract with the process's umask (no set-uid bits or world-writable folders from the archive)."""
    archive = tmp_path / "modes.tar"
    with tarfile.open(archive, "w") as tf:
        t = tarfile.TarInfo("vision/beach/00001.jpg")
        t.size, t.mode = 2, 0o4777  # set-uid, world-writable
        tf.addfile(t, io.BytesIO(b"ok"))
    out = advance.safe_extract(archive, tmp_path / "out")
    mode = (out / "vision" / "beach" / "00001.jpg").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_IWOTH), oct(mode)
    assert os.access(out / "vision" / "beach" / "00001.jpg", os.R_OK)


@pytest.mark.parametrize("key,value", [("step", "1e999"), ("n_sections", "1e999"), ("n_sections", "100000000000000"),
                                       ("n_bins", "-4")])
def test_latest_json_with_absurd_numbers_is_a_checkpoint_error(tmp_path, key, value):
    """Infinity (``1e999`` in JSON), a size that cannot be allocated, a negative one: our error, naming the file."""
    from a2i_utils.transformer.training import load_run

    trainer = _trained_run(tmp_path)
    meta_path = tmp_path / "run" / "latest.json"
    text = meta_path.read_text()
    meta = json.loads(text)
    meta_path.write_text(text.replace(f'"{key}": {json.dumps(meta[key])}', f'"{key}": {value}'))
    assert meta_path.read_text() != text
    with pytest.raises(CheckpointError, match=r"latest\.json"):
        if key == "step":
            trainer().latest_step()
        else:
            load_run(tmp_path / "run", need_normalizer=False)
