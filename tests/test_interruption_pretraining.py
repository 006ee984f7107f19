"""Interrupting the miniatures' training: SIGKILL inside a stage, run again, get the same weights bit for bit.

The miniature ImageBind and the miniature UnCLIP are trained here for real, at a tiny size, in child processes
(``python -c``) and in this one, on throw-away caches: a reference run (two processes at once on one cache, so it
also shows that only one of them trains), then runs killed at an in-stage checkpoint and run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from a2i_utils.config import get_config
from a2i_utils.devices import cpu_threads
from a2i_utils.io import CheckpointError

# Tiny miniatures: ImageBind's stages have epochs of 4 batches (a checkpoint every 3 steps lands inside an epoch,
# so resuming needs that epoch's permutation), its audio stage 24 steps; the U-Net 24 steps, a checkpoint every 4.
TINY = {
    "data.per_class": 3, "data.image_size": 32,
    "imagebind.embed_dim": 16, "imagebind.mini_dim": 16, "imagebind.mini_blocks": 2, "imagebind.mini_heads": 2,
    "imagebind.mini_text_dim": 16, "imagebind.mini_side_dim": 8, "imagebind.mini_vision_epochs": 2,
    "imagebind.mini_audio_epochs": 6, "imagebind.mini_train_batch": 8, "imagebind.mini_checkpoint_every": 3,
    "soundiff.image_size": 16, "soundiff.mini_vae_channels": [8, 8], "soundiff.mini_unet_channels": [16, 16],
    "soundiff.mini_text_dim": 16, "soundiff.mini_vae_steps": 8, "soundiff.mini_unet_steps": 24,
    "soundiff.mini_batch": 8, "soundiff.mini_checkpoint_every": 4,
}  # fmt: skip

# A child process: says it is ready (imports done), then runs train_both on the cache it is given.
CHILD = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from test_interruption_pretraining import train_both
print("ready", flush=True)
train_both(Path(sys.argv[2]))
"""


def train_both(cache: Path) -> None:
    """Train (or load) the miniature ImageBind, then the miniature UnCLIP, on ``cache``; print weight digests."""
    from a2i_utils.imagebind.mini import load_or_train_mini
    from a2i_utils.soundiff.mini import load_or_pretrain_mini

    cfg = _cfg(cache)
    emb = load_or_train_mini(cfg, progress=False)
    print("imagebind weights", _digest(emb.model.state_dict()))
    pipe = load_or_pretrain_mini(cfg, embedder=emb, progress=False)
    print("unclip weights", _digest(pipe.unet.state_dict()), _digest(pipe.vae.state_dict()))


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + state[k].detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _cfg(cache: Path):
    return get_config("demo", {"cache_dir": cache, "device": "cpu", **TINY})


def _start(cache: Path) -> subprocess.Popen:
    """A child running :func:`train_both` on ``cache``, started once it says ``ready``."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # all, if killed
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).parent), str(cache)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert child.stdout is not None
    while (line := child.stdout.readline()) != "ready\n":  # after the imports (and any warnings they print)
        assert line, child.communicate()  # it ended before
    return child


def _kill_at(cache: Path, progress_file: Path, final: Path) -> tuple[int, str]:
    """Start the child, SIGKILL it as soon as ``progress_file`` exists: (the step that file holds, its output)."""
    child = _start(cache)
    deadline = time.monotonic() + 240
    while not progress_file.is_file():
        assert child.poll() is None, child.communicate()[0]  # still training
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    out = child.communicate(timeout=60)[0]
    assert child.returncode == -signal.SIGKILL
    assert progress_file.is_file() and not final.exists()  # killed inside the stage
    return _step_of(progress_file), out


def _step_of(progress_file: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(progress_file), "pt") as f:
        return json.loads(f.metadata()["progress"])["step"]


def _leave_partial_write(progress_file: Path) -> Path:
    """What a kill during the checkpoint's write leaves: the first half of a file at the writer's temp name."""
    tmp = progress_file.with_name(f".{progress_file.name}.999999.tmp")
    data = progress_file.read_bytes()
    tmp.write_bytes(data[: len(data) // 2])
    return tmp


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit


def _imagebind_paths(cfg):
    from a2i_utils.data import prepare_dataset
    from a2i_utils.imagebind.mini import mini_checkpoint_path, mini_key

    key = mini_key(cfg, prepare_dataset(cfg, progress=False).pairs)
    return key, mini_checkpoint_path(cfg, key), mini_checkpoint_path(cfg, key, "audio-progress")


def _unclip_paths(cfg, imagebind_key: str):
    from a2i_utils.data import prepare_dataset
    from a2i_utils.soundiff.mini import mini_dir, mini_unclip_key

    folder = mini_dir(cfg, mini_unclip_key(cfg, prepare_dataset(cfg, progress=False).pairs, imagebind_key))
    return folder, folder.with_name(folder.name + "-unet-progress.safetensors")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A cache holding only the tiny synthetic dataset (copied into each test's own cache)."""
    cache = tmp_path_factory.mktemp("trainmini-data")
    from a2i_utils.data import prepare_dataset

    prepare_dataset(_cfg(cache), progress=False)
    return cache


def _fresh_cache(data: Path, dest: Path, *parts: str) -> Path:
    """A copy of ``data``'s cache (the dataset, and any of ``parts`` of its checkpoints) at ``dest``."""
    shutil.copytree(data / "datasets", dest / "datasets")
    for part in parts:
        shutil.copytree(data / "checkpoints" / part, dest / "checkpoints" / part)
    return dest


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """A child and this process, at once on one fresh cache, each asking for both miniatures: (cache, outputs)."""
    cache = _fresh_cache(data, tmp_path_factory.mktemp("trainmini-ref"))
    child = _start(cache)
    with cpu_threads(1), contextlib.redirect_stdout(io.StringIO()) as here:
        train_both(cache)
    out = child.communicate(timeout=300)[0]
    assert child.returncode == 0, out
    return cache, [out, here.getvalue()]


def test_two_processes_on_one_cache_train_each_miniature_once(reference):
    _, outs = reference
    text = "".join(outs)
    assert text.count("training the miniature ImageBind") == 1  # the other one waited, then loaded
    assert text.count("pretraining it") == 1
    assert text.count("Found checkpoint mini-") == 1 and text.count("Found pretrained miniature UnCLIP") == 1
    digests = [[line for line in out.splitlines() if line.endswith(tuple("0123456789abcdef")) and " weights " in line]
               for out in outs]
    assert len(digests[0]) == 2 and digests[0] == digests[1]  # both end with the same weights


def test_killed_mid_stage_resumes_to_the_same_weights(reference, data, tmp_path, capsys):
    """One cache, three runs: a child killed inside ImageBind's audio stage; a second one that resumes it, finishes
    ImageBind and is killed inside the U-Net pretraining; then this process, which resumes that. Each kill comes
    right after an in-stage checkpoint appears, and leaves a half-written temporary file as a kill during the
    write would."""
    ref_cache, _ = reference
    cache = _fresh_cache(data, tmp_path / "cache")
    ib_key, ib_final, ib_progress = _imagebind_paths(_cfg(cache))
    folder, unet_progress = _unclip_paths(_cfg(cache), ib_key)

    ib_step, _ = _kill_at(cache, ib_progress, ib_final)
    assert ib_step % 3 == 0  # imagebind.mini_checkpoint_every
    ib_tmp = _leave_partial_write(ib_progress)
    unet_step, out_killed = _kill_at(cache, unet_progress, folder)
    assert unet_step % 4 == 0  # soundiff.mini_checkpoint_every
    unet_tmp = _leave_partial_write(unet_progress)
    capsys.readouterr()
    train_both(cache)
    out = capsys.readouterr().out

    resumed = re.findall(r"resuming at step (\d+) of (\d+)", out_killed + out)
    assert [int(k) for k, _ in resumed] == [ib_step, unet_step]  # from the checkpoints, not the partial writes
    assert all(0 < int(k) < int(n) for k, n in resumed)  # inside the stage
    assert "Found the miniature's VAE" in out  # the finished stage before the U-Net was kept
    for path in (ib_progress, ib_tmp, unet_progress, unet_tmp):
        assert not path.exists()  # removed once the stage is saved

    _, ref_ib_final, _ = _imagebind_paths(_cfg(ref_cache))
    _assert_same_tensors(_tensors(ib_final), _tensors(ref_ib_final))
    info, ref_info = (_info_of(p) for p in (ib_final, ref_ib_final))
    assert info["vision_loss"] == ref_info["vision_loss"] and info["audio_loss"] == ref_info["audio_loss"]
    ref_folder, _ = _unclip_paths(_cfg(ref_cache), ib_key)
    for part in ("unet", "vae"):
        _assert_same_tensors(_tensors(folder / part / "diffusion_pytorch_model.safetensors"),
                             _tensors(ref_folder / part / "diffusion_pytorch_model.safetensors"))
    info, ref_info = (json.loads((f / "info.json").read_text()) for f in (folder, ref_folder))
    assert all(info[k] == ref_info[k] for k in ("vae_loss", "unet_loss", "unet_lr"))


def _info_of(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["info"])


# ----------------------------------------------------------------------------------------------------------
# Damaged in-stage checkpoints, pickles in saved folders
# ----------------------------------------------------------------------------------------------------------
def _vae_run(cache: Path, checkpoint: Path) -> tuple[list[float], dict[str, torch.Tensor]]:
    """A tiny VAE trained 5 steps on random images, checkpoints every 2 at ``checkpoint``: (losses, weights)."""
    from a2i_utils.soundiff.mini import build_vae, train_vae

    sc = dataclasses.replace(_cfg(cache).soundiff, mini_vae_steps=5, mini_checkpoint_every=2)
    torch.manual_seed(0)
    images = torch.rand(4, 3, sc.image_size, sc.image_size) * 2 - 1  # (N, 3, H, W) in [-1, 1]
    vae = build_vae(sc)
    return train_vae(vae, images, sc, seed=0, progress=False, checkpoint=checkpoint), vae.state_dict()


def _write_real_checkpoint(tmp_path: Path, path: Path, monkeypatch) -> None:
    """A real in-stage checkpoint of the tiny VAE at step 2 of 5: the run is stopped right after writing it."""
    from a2i_utils.checkpoints import StageCheckpoint

    def save_then_stop(self, done, record, tensors=None):
        real(self, done, record, tensors)
        if self.path.is_file():
            raise KeyboardInterrupt

    real = StageCheckpoint.step_done
    with monkeypatch.context() as m:
        m.setattr(StageCheckpoint, "step_done", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            _vae_run(tmp_path, path)
    assert _step_of(path) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another network's"])
def test_damaged_in_stage_checkpoint_is_an_error_naming_the_file(tmp_path, monkeypatch, damage):
    """Policy: an in-stage checkpoint that cannot be used stops the run with a CheckpointError naming it (delete
    it to restart the stage). It is never skipped silently: that would drop its steps unannounced."""
    from a2i_utils.checkpoints import StageCheckpoint

    path = tmp_path / "vae-progress.safetensors"
    if damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 10)
    elif damage == "truncated":
        _write_real_checkpoint(tmp_path, path, monkeypatch)
        path.write_bytes(path.read_bytes()[:-100])
    else:  # a valid checkpoint, of a different network
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(model.parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        StageCheckpoint(path, 1, 9, {"vae": model}, opt, sched, torch.Generator()).step_done(1, {"losses": [1.0]})
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        _vae_run(tmp_path, path)


def test_in_process_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """The VAE stage stopped after its step-2 checkpoint and run again: the same losses and weights."""
    path = tmp_path / "vae-progress.safetensors"
    _write_real_checkpoint(tmp_path, path, monkeypatch)
    losses, weights = _vae_run(tmp_path, path)
    ref_losses, ref_weights = _vae_run(tmp_path, tmp_path / "other.safetensors")
    assert len(losses) == 5 and losses == ref_losses
    _assert_same_tensors(weights, ref_weights)


def test_a_pickled_bin_in_a_saved_unclip_folder_is_never_loaded(reference, tmp_path):
    """Replace the saved U-Net's safetensors with the same weights pickled as a ``.bin`` (which diffusers would
    otherwise fall back to and unpickle): loading refuses the folder."""
    from a2i_utils.soundiff.mini import load_components

    ref_cache, _ = reference
    ib_key, _, _ = _imagebind_paths(_cfg(ref_cache))
    ref_folder, _ = _unclip_paths(_cfg(ref_cache), ib_key)
    folder = shutil.copytree(ref_folder, tmp_path / "mini_unclip")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(_tensors(weights), weights.with_suffix(".bin"))
    weights.unlink()
    with pytest.raises(CheckpointError, match=re.escape(str(folder))):
        load_components(folder)
