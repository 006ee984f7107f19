"""The full-mode loader (on checkpoints the tests write) and the miniature ImageBind."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from a2i_utils.compat import import_imagebind
from a2i_utils.config import get_config
from a2i_utils.imagebind.huge import (
    HUGE_URL,
    download_file,
    huge_checkpoint_path,
    load_imagebind_huge,
)
from a2i_utils.imagebind.mini import build_mini
from a2i_utils.io import CheckpointError, sha256_file

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


# ----------------------------------------------------------------------------------------------------------
# The miniature, trained for real on a small synthetic dataset (a smaller, faster variant of the demo's)
# ----------------------------------------------------------------------------------------------------------
QUICK = {
    "data.per_class": 10, "data.image_size": 64, "imagebind.embed_dim": 64, "imagebind.mini_dim": 48,
    "imagebind.mini_blocks": 1, "imagebind.mini_vision_epochs": 10, "imagebind.mini_audio_epochs": 20,
    "imagebind.mini_train_batch": 16,
    "data.test_fraction": 0.0,  # the paper's 90/10: ~9 training places per class (the demo's 70% of 64 is plenty)
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A quickly trained miniature, its config and dataset (module scope: trained once)."""
    from a2i_utils.data import prepare_dataset
    from a2i_utils.imagebind.mini import load_or_train_mini

    cfg = get_config("demo", {"cache_dir": tmp_path_factory.mktemp("mini") / "cache", "device": "cpu", **QUICK})
    dataset = prepare_dataset(cfg, progress=False)
    return cfg, dataset, load_or_train_mini(cfg, dataset, progress=False)


def test_mini_is_an_imagebind_model_with_imagebind_postprocessing(trained):
    cfg, dataset, emb = trained
    assert type(emb.model) is import_imagebind().ImageBindModel
    a = emb.embed("audio", torch.randn(3, 3, 1, 128, 204))
    v = emb.embed("vision", torch.randn(3, 3, 224, 224))
    assert a.shape == v.shape == (3, 64)
    assert (a.norm(dim=1) <= 20 + 1e-4).all() and (a.norm(dim=1) > 10).all()  # mean of 3 clips of norm 20
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    assert {"vision_loss", "audio_loss"} <= emb.info.keys()
    assert np.mean(emb.info["audio_loss"][-5:]) < np.mean(emb.info["audio_loss"][:5])


def test_mini_retrieval_and_scene_accuracy_above_chance(trained):
    """This quick variant (13 held-out recordings) learns the synthetic world's ambiguous sounds only partly:
    held-out retrieval above chance, and the scene of its ~100 training recordings well above chance. The
    demo preset's held-out numbers (about 50 recordings) are measured in notebook 04."""
    from types import SimpleNamespace

    from a2i_utils.imagebind.retrieval import evaluate_alignment

    cfg, dataset, emb = trained
    m = evaluate_alignment(emb, SimpleNamespace(test=dataset.val, train=dataset.train), cfg)  # 90/10: held-out
    assert m["n_val"] >= 10 and m["n_recordings"] == 13
    assert m["R@5"] > 1.5 * m["chance_R@5"]  # measured 0.77 vs 0.38
    assert m["scene_acc_means"] > m["chance_scene"]
    fit = evaluate_alignment(emb, SimpleNamespace(test=dataset.train, train=dataset.train), cfg)
    assert fit["scene_acc_means_low"] > 3 * fit["chance_scene"]  # measured 0.41, interval from 0.32
    assert fit["within_pairwise"] > 0.5  # own image above the scene's other images more often than not: 0.60


def test_mini_is_reused_and_resumes_after_stage_one(trained, capsys):
    from a2i_utils.imagebind.mini import load_or_train_mini, mini_checkpoint_path, mini_key

    cfg, dataset, emb = trained
    x = torch.randn(2, 3, 1, 128, 204)
    again = load_or_train_mini(cfg, dataset, progress=False)
    assert "Found checkpoint" in capsys.readouterr().out and again.identity == emb.identity
    torch.testing.assert_close(again.embed("audio", x), emb.embed("audio", x), rtol=0, atol=0)
    key = mini_key(cfg, dataset.pairs)
    final = mini_checkpoint_path(cfg, key)
    assert final.suffix == ".safetensors" and final.is_relative_to(cfg.checkpoints_dir)
    final.unlink()  # as if interrupted during stage 2: stage 1 is kept, training resumes at stage 2
    resumed = load_or_train_mini(cfg, dataset, progress=False)
    assert "resuming at the audio stage" in capsys.readouterr().out
    torch.testing.assert_close(resumed.embed("audio", x), emb.embed("audio", x), rtol=0, atol=0)  # bit for bit:
    assert resumed.info["audio_loss"] == emb.info["audio_loss"]  # stage 1 draws nothing from the global generator


@pytest.mark.parametrize("start", [0, 3, 4, 5, 11])
def test_epoch_batches_resume_where_they_stopped(start):
    """Resumed at ``start`` with the generator's state and the epoch's permutation (what an in-stage checkpoint
    holds), the batches go on exactly as in a run never stopped; each epoch covers every item once."""
    from a2i_utils.imagebind.mini import epoch_batches

    full = list(epoch_batches(10, 3, 3, torch.Generator().manual_seed(0)))  # 3 epochs of 4 batches (3, 3, 3, 1)
    assert [len(idx) for _, _, idx in full] == [3, 3, 3, 1] * 3
    for e in range(3):
        assert sorted(torch.cat([idx for _, _, idx in full[4 * e : 4 * e + 4]]).tolist()) == list(range(10))
    gen, perm = torch.Generator().manual_seed(0), None
    stopped = epoch_batches(10, 3, 3, gen)
    for _ in range(start):  # the run that stops after `start` steps
        _, perm, _ = next(stopped)
    resumed = list(epoch_batches(10, 3, 3, torch.Generator().set_state(gen.get_state()), start, perm))
    assert [(s, idx.tolist()) for s, _, idx in resumed] == [(s, idx.tolist()) for s, _, idx in full[start:]]
    if start % 4:
        with pytest.raises(ValueError, match="permutation"):
            next(epoch_batches(10, 3, 3, torch.Generator(), start, None))


def test_download_resumes_over_http_with_range(tmp_path):
    """A local HTTP server that honours Range: an interrupted download continues where it stopped."""
    import http.server
    import threading

    payload = bytes(range(256)) * 4000
    ranges = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  (http.server's name)
            start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
            ranges.append(start)
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(payload) - start))
            self.end_headers()
            self.wfile.write(payload[start:])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "file.bin"
        dest.with_name("file.bin.part").write_bytes(payload[:5000])
        download_file(f"http://127.0.0.1:{server.server_port}/file.bin", dest, progress=False)
    finally:
        server.shutdown()
    assert ranges == [5000] and dest.read_bytes() == payload


def test_half_precision_checkpoint_is_accepted_and_converted(tmp_path):
    cfg = _cfg(tmp_path)
    path = huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    ref = _write_checkpoint(cfg, path)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()}, path)
    emb = load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))
    w = emb.model.state_dict()["modality_heads.audio.2.weight"]
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, ref.state_dict()["modality_heads.audio.2.weight"].half().float())


def test_unreachable_url_gives_a_clear_error(tmp_path):
    cfg = _cfg(tmp_path)
    missing = (tmp_path / "nowhere.pth").as_uri()
    with pytest.raises(CheckpointError, match=r"could not download .*nowhere\.pth"):
        load_imagebind_huge(cfg, progress=False, url=missing, builder=lambda: build_mini(cfg))


def test_replaced_checkpoint_of_the_same_size_gets_a_new_identity(tmp_path):
    """A same-size file with other weights (new mtime) is hashed again: the cache identity follows the weights."""
    import os

    cfg = _cfg(tmp_path)
    path = huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    _write_checkpoint(cfg, path, seed=0)
    first = load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))
    size = path.stat().st_size
    ref = _write_checkpoint(cfg, path, seed=1)
    assert path.stat().st_size == size  # same architecture, same size: only the bytes differ
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a replaced file has a new mtime
    second = load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))
    assert second.identity != first.identity
    assert second.identity == f"imagebind_huge-{sha256_file(path)[:16]}"
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("stamp_text", ["{not json", '{"size": 1}', "[1, 2]"])
def test_corrupt_stamp_is_treated_as_missing(tmp_path, capsys, stamp_text):
    cfg = _cfg(tmp_path)
    path = huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    _write_checkpoint(cfg, path)
    stamp = path.with_name(path.name + ".verified.json")
    stamp.write_text(stamp_text)
    emb = load_imagebind_huge(cfg, progress=False, download=False, builder=lambda: build_mini(cfg))
    assert "imagebind_huge.pth.verified.json" in capsys.readouterr().out  # the warning names the file
    fresh = json.loads(stamp.read_text())  # rewritten whole
    assert fresh["size"] == path.stat().st_size and fresh["mtime_ns"] == path.stat().st_mtime_ns
    assert emb.identity == f"imagebind_huge-{fresh['sha256'][:16]}" and fresh["sha256"] == sha256_file(path)


def test_model_version_is_part_of_the_mini_key(tmp_path, monkeypatch):
    import a2i_utils.imagebind.mini as M
    from a2i_utils.data import Pair

    cfg = _cfg(tmp_path)
    (tmp_path / "a.png").write_bytes(b"image bytes")
    (tmp_path / "a.wav").write_bytes(b"audio bytes")
    pairs = [Pair("00001", "00001", "forest", tmp_path / "a.png", tmp_path / "a.wav", "train")]
    key = M.mini_key(cfg, pairs)
    assert M.mini_key(cfg, pairs) == key
    monkeypatch.setattr(M, "MODEL_VERSION", M.MODEL_VERSION + 1)
    assert M.mini_key(cfg, pairs) != key


# ----------------------------------------------------------------------------------------------------------
# The audio stage: InfoNCE without false negatives, and a frozen vision tower
# ----------------------------------------------------------------------------------------------------------
def test_infonce_masks_other_pairs_of_the_same_recording():
    """`_k` pairs share their recording: a copy of my recording in the batch is not a negative for me."""
    from a2i_utils.imagebind.mini import infonce

    torch.manual_seed(0)
    audio = torch.randn(4, 8)
    audio[1] = audio[0]  # pairs 0 and 1: one recording, two images (a base id and its `_k` view)
    groups = torch.tensor([0, 0, 1, 2])

    def grad_of_first(image):
        a = audio.clone().requires_grad_(True)
        infonce(a, image, groups).backward()
        return a.grad[0]

    image = torch.randn(4, 8)
    moved = image.clone()
    moved[1] += 5.0  # only the other view of the same recording changes
    torch.testing.assert_close(grad_of_first(image), grad_of_first(moved), rtol=0, atol=0)
    distinct = torch.arange(4)
    a, v = torch.randn(4, 8), torch.randn(4, 8)
    logits = a @ v.T
    want = 0.5 * (torch.nn.functional.cross_entropy(logits, distinct)
                  + torch.nn.functional.cross_entropy(logits.T, distinct))
    torch.testing.assert_close(infonce(a, v, distinct), want)  # all recordings distinct: plain InfoNCE


def test_recording_groups_key_by_class_and_base_id(tmp_path):
    from a2i_utils.data import Pair
    from a2i_utils.imagebind.mini import recording_groups

    def pair(pid, label):
        return Pair(pid, pid.split("_")[0], label, tmp_path / f"{pid}.png", tmp_path / "x.wav", "train")

    pairs = [pair("00001", "forest"), pair("00001_1", "forest"), pair("00001", "lake"), pair("00002", "lake")]
    assert recording_groups(pairs).tolist() == [0, 0, 1, 2]


def test_vision_and_text_towers_stay_frozen_in_the_audio_stage(tmp_path):
    from a2i_utils.imagebind.mini import embed_in_batches, train_audio

    cfg = _cfg(tmp_path, **{"imagebind.mini_audio_epochs": 2, "imagebind.mini_train_batch": 4})
    torch.manual_seed(0)
    model = build_mini(cfg)
    images, audio = torch.randn(8, 3, 224, 224), torch.randn(8, 3, 1, 128, 204)
    with torch.no_grad():
        model.eval()
        targets = embed_in_batches(model, "vision", images, 4)  # (8, D)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_audio(model, audio, targets, cfg.imagebind, seed=0, progress=False, groups=torch.arange(8))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    audio_parts = tuple(f"modality_{part}.audio." for part in ("preprocessors", "trunks", "heads", "postprocessors"))
    assert changed and all(k.startswith(audio_parts) for k in changed), sorted(changed)[:5]
    assert any(k.startswith("modality_trunks.audio") for k in changed)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]  # what the optimiser was given
    assert trainable and all(n.startswith(audio_parts) for n in trainable), [n for n in trainable
                                                                          if not n.startswith(audio_parts)][:5]
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(embed_in_batches(model, "vision", images, 4), targets, rtol=0, atol=0)
