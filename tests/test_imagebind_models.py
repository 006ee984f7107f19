"""The full-mode loader (on checkpoints the tests write) and the miniature ImageBind."""

from __future__ import annotations

import inspect

import pytest
import torch

from a2i_utils.compat import import_imagebind
from a2i_utils.config import get_config
from a2i_utils.imagebind_models import (
    HUGE_URL,
    CheckpointError,
    build_mini,
    download_file,
    huge_checkpoint_path,
    load_imagebind_huge,
)

SMALL = {"imagebind.embed_dim": 32, "imagebind.mini_dim": 32, "imagebind.mini_blocks": 1, "imagebind.mini_heads": 2}


def _cfg(tmp_path, **over):
    return get_config("demo", {"cache_dir": tmp_path / "cache", "device": "cpu", **SMALL, **over})


def _write_checkpoint(cfg, path, seed=0):
    """A small ImageBindModel's state dict saved the way Meta's imagebind_huge.pth is (torch.save)."""
    torch.manual_seed(seed)
    model = build_mini(cfg)
    torch.save(model.state_dict(), path)
    return model


def test_url_is_the_one_imagebind_uses():
    assert HUGE_URL in inspect.getsource(import_imagebind().imagebind_huge)


def test_loader_downloads_verifies_and_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path)
    src = tmp_path / "served.pth"
    ref = _write_checkpoint(cfg, src)
    emb = load_imagebind_huge(cfg, progress=False, url=src.as_uri(), builder=lambda: build_mini(cfg))
    path = huge_checkpoint_path(cfg)
    assert path.is_file() and path.is_relative_to(cfg.cache_dir)
    assert not (tmp_path / ".checkpoints").exists()
    assert path.with_name(path.name + ".verified.json").is_file()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(emb.model.state_dict()[k], v, rtol=0, atol=0)
    assert not emb.model.training and emb.identity.startswith("imagebind_huge-")
    x = torch.randn(2, 3, 1, 128, 204)
    out = emb.embed("audio", x)
    assert out.shape == (2, 32)
    # the second load reads the cache only: the served file may be gone
    src.unlink()
    again = load_imagebind_huge(cfg, progress=False, url=src.as_uri(), builder=lambda: build_mini(cfg))
    assert again.identity == emb.identity
    torch.testing.assert_close(again.embed("audio", x), out)


def test_wrong_model_is_refused_with_a_clear_message(tmp_path):
    cfg = _cfg(tmp_path)
    other = _cfg(tmp_path, **{"imagebind.mini_dim": 48})
    path = huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    _write_checkpoint(other, path)
    with pytest.raises(CheckpointError, match=r"imagebind_huge\.pth: not a checkpoint of this model.*wrong shape"):
        load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))


@pytest.mark.parametrize("damage", ["truncate", "junk", "not_a_state_dict"])
def test_corrupt_file_is_refused(tmp_path, damage):
    cfg = _cfg(tmp_path)
    path = huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    _write_checkpoint(cfg, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "junk":
        path.write_bytes(b"<html>404 not found</html>")
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=r"imagebind_huge\.pth: (not a readable|does not hold)"):
        load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))


def test_file_changed_after_verification_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    path = huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    _write_checkpoint(cfg, path)
    load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))
    with open(path, "ab") as f:
        f.write(b"\0" * 10)
    with pytest.raises(CheckpointError, match="differs from the verified"):
        load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))


def test_missing_checkpoint_without_download(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint in the cache"):
        load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))


def test_download_after_an_interrupted_one_gives_the_whole_file(tmp_path):
    src = tmp_path / "src.bin"
    payload = bytes(range(256)) * 4000
    src.write_bytes(payload)
    dest = tmp_path / "dl" / "file.bin"
    dest.parent.mkdir()
    dest.with_name("file.bin.part").write_bytes(payload[:1000])  # left by an interrupted download
    # (file:// ignores the Range header, so this checks the restart; an HTTP server would resume)
    download_file(src.as_uri(), dest, progress=False)
    assert dest.read_bytes() == payload
    assert not dest.with_name("file.bin.part").exists()
