"""`a2i embed` and `a2i generate` decode each recording once, and not at all when its embedding is cached.

Before, each file was first decoded whole by the checker (``audio_problem``), then again to make ImageBind's input;
a cached file was still decoded by the checker. Now the reader that makes the input is the check.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import a2i_utils.data.audio as A
from a2i_utils.config import get_config
from a2i_utils.imagebind.cache import embed_files
from a2i_utils.imagebind.embedder import Embedder
from a2i_utils.imagebind.mini import build_mini

SMALL = {"imagebind.embed_dim": 32, "imagebind.mini_dim": 32, "imagebind.mini_blocks": 1, "imagebind.mini_heads": 2}


@pytest.fixture
def cfg(tmp_path):
    return get_config("demo", {"cache_dir": tmp_path / "cache", "device": "cpu", "imagebind.batch_size": 2, **SMALL})


@pytest.fixture
def embedder(cfg):
    torch.manual_seed(0)
    return Embedder(build_mini(cfg).eval(), identity="decode-once-test")


@pytest.fixture
def decodes(monkeypatch):
    """The files a2i's audio reader opened for decoding, in order."""
    opened = []
    real = A._decoding

    def counting(path):
        opened.append(path.name)
        return real(path)

    monkeypatch.setattr(A, "_decoding", counting)
    return opened


def once(decodes: list[str]) -> list[str]:
    """The decoded files, checking that each was decoded once and that 0.wav and its byte copy were decoded once
    between them (either name), then left out."""
    assert len(decodes) == len(set(decodes)) and sum(n in ("0.wav", "copy.wav") for n in decodes) == 1
    return sorted(n for n in decodes if n not in ("0.wav", "copy.wav"))


def _recordings(folder, n):
    folder.mkdir(exist_ok=True)
    for i in range(n):
        sf.write(folder / f"{i}.wav", np.full(8000, 0.1 * (i + 1), np.float32), 16_000)
    (folder / "copy.wav").write_bytes((folder / "0.wav").read_bytes())  # identical bytes: decoded once for both
    (folder / "empty.wav").write_bytes(b"")
    (folder / "noise.wav").write_bytes(b"RIFF" + bytes(200))
    return sorted(folder.glob("*.wav"))


def test_embed_files_decodes_each_new_file_once_and_no_cached_one(cfg, embedder, tmp_path, decodes):
    paths = _recordings(tmp_path / "wav", 3)  # 0, 1, 2, copy, empty, noise
    skipped = []
    emb = embed_files(embedder, paths, "audio", cfg, progress=False, skipped=skipped)
    assert [p.name for p, _ in skipped] == ["empty.wav", "noise.wav"]
    assert all(why.startswith(str(p)) for p, why in skipped)
    assert emb.shape == (4, 32) and torch.equal(emb[0], emb[3])  # 0, 1, 2, copy (the copy of 0)
    assert once(decodes) == ["1.wav", "2.wav", "noise.wav"]  # empty.wav is refused before decoding

    decodes.clear()
    again = embed_files(embedder, paths[:4], "audio", cfg, progress=False, skipped=[])
    assert torch.equal(again, emb) and decodes == []  # cached: hashed, never decoded


def test_embed_files_without_skipped_still_raises_naming_the_file(cfg, embedder, tmp_path):
    paths = _recordings(tmp_path / "wav", 1)
    with pytest.raises(A.AudioError, match="empty.wav"):
        embed_files(embedder, paths, "audio", cfg, progress=False)


def test_embed_cli_decodes_once_then_never(cfg, embedder, tmp_path, monkeypatch, capsys, decodes):
    import a2i_utils.imagebind.embedder as M
    from a2i_utils.cli import main

    paths = _recordings(tmp_path / "wav", 2)
    monkeypatch.setattr(M, "load_imagebind", lambda c, progress=True: embedder)
    argv = ["embed", str(tmp_path / "wav"), "--cache", str(cfg.cache_dir)]
    assert main(argv) == 1  # two files skipped
    out, err = capsys.readouterr()
    assert "audio: 3 files -> 3 embeddings: 0 from the cache, 2 computed, 1 copy" in out
    assert f"skipped {paths[3]}: the file is empty" in err and f"skipped {paths[4]}" in err
    assert once(decodes) == ["1.wav", "noise.wav"]

    decodes.clear()
    assert main(argv) == 1
    assert "3 from the cache, 0 computed" in capsys.readouterr().out
    assert decodes == ["noise.wav"]  # only the file that has no embedding is decoded again


def test_generate_input_stage_decodes_once(cfg, embedder, tmp_path, decodes):
    from a2i_utils.evaluation.cli import embed_each
    from a2i_utils.evaluation.systems import Loader

    loader = Loader(cfg, progress=False)
    loader._embedder = embedder
    paths = _recordings(tmp_path / "wav", 2)
    embs, good, bad = embed_each(loader, paths)
    assert [p.name for p in good] == ["0.wav", "1.wav", "copy.wav"] and embs.shape == (3, 32)
    assert [p.name for p, _ in bad] == ["empty.wav", "noise.wav"]
    assert once(decodes) == ["1.wav", "noise.wav"]
    decodes.clear()
    embed_each(loader, paths[:2])
    assert decodes == []
