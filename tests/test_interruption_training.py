"""Training killed with SIGKILL (mid-step and mid-checkpoint-write), two trainers on one run, hostile checkpoints.

The pixel transformer (``train_or_load``) and SounDiff (``load_or_finetune``) are run in child processes on tiny
configs. A child stops at a chosen point (a hook in the child script: it writes a marker file, then sleeps) and
the test kills it there with SIGKILL, so the kill lands at the same place on every run, however loaded the
machine. The re-run must say that it resumes from the last complete checkpoint and end with the weights and
losses of an uninterrupted run, bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_soundiff import TINY, tiny_pipe
from test_soundiff import tiny_data as tiny_latents
from test_transformer_training import tiny_cfg, tiny_data

from a2i_utils.config import get_config
from a2i_utils.io import CheckpointError
from a2i_utils.soundiff import training as st
from a2i_utils.transformer import training as tt

TESTS = Path(__file__).parent
STEPS, EVERY = 9, 3  # the transformer's run: checkpoints at 3, 6, 9
SD_STEPS = 6  # SounDiff's run, checkpoint_every 2 (TINY): checkpoints 2 and 4, then the final weights
WAIT_S = 240  # for a child to reach its stopping point on a loaded machine

# A child: argv = tests dir, model ("transformer" or "soundiff"), cache dir, hook, hook argument, marker file.
# Hooks: "none"; "step" N: stop before training step N+1; "write" N: stop while writing checkpoint N, its weights
# half-written to the temporary name; "race" S: wait until two children are ready, then hold the first step S s.
CHILD = r"""
import hashlib, os, sys, time
from pathlib import Path
from types import SimpleNamespace

import torch

torch.set_num_threads(1)
tests, model_name, cache, hook, at, marker = sys.argv[1:7]
sys.path.insert(0, tests)
at, marker, calls = float(at), Path(marker), [0]


def stall():
    marker.write_text(str(os.getpid()))
    time.sleep(600)


def counted(step, done):
    if hook == "step" and done == at:
        stall()
    if hook == "race" and calls[0] == 0:
        time.sleep(at)  # the other child meets the lock meanwhile
    calls[0] += 1
    return step()


def cut_short(write, tmp, part=""):
    write(tmp)  # then the file (or the folder's file ``part``) loses its second half, as a kill mid-write leaves it
    path = tmp / part if part else tmp
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    stall()


def digest(state):
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode() + state[name].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


if hook == "race":
    ready = marker.parent / f"ready-{os.getpid()}"
    ready.touch()
    while len(list(marker.parent.glob("ready-*"))) < 2:
        time.sleep(0.05)

if model_name == "transformer":
    from test_transformer_training import tiny_cfg, tiny_data
    from a2i_utils.transformer import training as tt

    step = tt.Trainer.train_step
    tt.Trainer.train_step = lambda self: counted(lambda: step(self), self.step)
    if hook == "write":
        name, atomic_write = f"step_{int(at):07d}.safetensors", tt.atomic_write
        tt.atomic_write = lambda p, w: atomic_write(p, (lambda t: cut_short(w, t)) if p.name == name else w)
    model, _ = tt.train_or_load(tiny_cfg(Path(cache)), tiny_data(), "tiny", 9, progress=False, checkpoint_every=3)
    state = model.state_dict()
else:
    from test_soundiff import TINY, tiny_data, tiny_pipe
    from a2i_utils.config import get_config
    from a2i_utils.soundiff import mini, training as st

    step = st.train_step
    st.train_step = lambda *a: counted(lambda: step(*a), a[-1])
    st.prepare_training_data = lambda *a, **k: tiny_data()  # the cached latents and embeddings, as returned
    if hook == "write":
        name, atomic_dir = f"checkpoint-{int(at)}", st.atomic_dir
        st.atomic_dir = lambda p, w: atomic_dir(
            p, (lambda t: cut_short(w, t, "trainable.safetensors")) if p.name == name else w)
    cfg = get_config("demo", TINY | {"cache_dir": Path(cache)})
    pairs = SimpleNamespace(train=[SimpleNamespace(id=f"{i:05d}", label="x") for i in range(6)])
    tuned, _ = st.load_or_finetune(cfg, st.variant_of(cfg, "L", steps=6), tiny_pipe(), pairs,
                                   SimpleNamespace(identity="tiny"), progress=False)
    state = tuned.unet.state_dict()
print("TRAIN_STEPS", calls[0])
print("DIGEST", digest(state))
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def start(model: str, cache: Path, hook: str = "none", at: float = 0, marker: Path | None = None) -> subprocess.Popen:
    """A child training ``model`` on ``cache`` (unbuffered, so a killed child's output is all there)."""
    marker = marker or cache.parent / "marker"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-u", "-c", CHILD, str(TESTS), model, str(cache), hook, str(at),
                             str(marker)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def kill_at_marker(child: subprocess.Popen, marker: Path) -> str:
    """Wait for the child to write ``marker`` (it is then stopped at its hook), SIGKILL it; its output."""
    deadline = time.monotonic() + WAIT_S
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the child never reached its hook:\n{child.communicate()[0]}")
        time.sleep(0.05)
    assert marker.read_text() == str(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    out = child.communicate(timeout=60)[0]
    assert child.returncode == -signal.SIGKILL
    marker.unlink()
    return out


def finish(child: subprocess.Popen) -> str:
    """The output of a child left to run to the end (it must succeed)."""
    try:
        out = child.communicate(timeout=WAIT_S)[0]
    finally:
        child.kill()
    assert child.returncode == 0, out
    return out


def lines_with(outputs: list[str], text: str) -> list[str]:
    return [line for out in outputs for line in out.splitlines() if text in line]


# ----------------------------------------------------------------------------------------------------------
# The pixel transformer
# ----------------------------------------------------------------------------------------------------------
def test_transformer_killed_mid_run_and_mid_checkpoint_resumes_once_to_the_uninterrupted_result(tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "marker"
    run = tt.run_dir_for(tiny_cfg(cache), "tiny", tiny_data())

    out = kill_at_marker(start("transformer", cache, "step", 4, marker), marker)  # step 4 done, 5 under way
    assert "No checkpoint" in out
    assert json.loads((run / "latest.json").read_text())["step"] == 3  # mid-way: a checkpoint, not the end
    assert sorted(p.name for p in run.glob("step_*")) == ["step_0000003.safetensors", "step_0000003.state.pt"]

    child = start("transformer", cache, "write", 6, marker)  # killed with step 6's weights half-written
    out = kill_at_marker(child, marker)
    assert f"Found checkpoint {run.name} at step 3, resuming to step 9" in out
    partial = run / f".step_0000006.safetensors.{child.pid}.tmp"
    assert partial.is_file() and not (run / "step_0000006.safetensors").exists()
    assert json.loads((run / "latest.json").read_text())["step"] == 3  # the last good checkpoint

    # Two processes at once on the killed run: one resumes it, the other waits for the lock, then loads it.
    outs = [finish(c) for c in [start("transformer", cache, "race", 1.5) for _ in range(2)]]
    resumed = lines_with(outs, "resuming to step 9")
    assert resumed == [f"Found checkpoint {run.name} at step 3, resuming to step 9"]  # the partial file ignored
    assert sorted(lines_with(outs, "TRAIN_STEPS")) == ["TRAIN_STEPS 0", "TRAIN_STEPS 6"]  # steps 4..9, once
    assert len(lines_with(outs, "is being trained by another process: waiting")) == 1
    assert len(lines_with(outs, "at step 9, loading")) == 1
    digests = lines_with(outs, "DIGEST")
    assert len(digests) == 2 and digests[0] == digests[1]
    assert not partial.exists()  # the leftover deleted

    straight_model, straight = tt.train_or_load(tiny_cfg(tmp_path / "straight"), tiny_data(), "tiny", STEPS,
                                                progress=False, checkpoint_every=EVERY)
    rows = (run / tt.LOSS_LOG).read_text().splitlines()[1:]
    assert [float(r.split(",")[1]) for r in rows] == straight["losses"]  # bit for bit
    weights = load_file(run / "step_0000009.safetensors")
    assert all(torch.equal(weights[k], w) for k, w in straight_model.state_dict().items())


@pytest.mark.parametrize("name", ["step_0000003.safetensors", "step_0000003.state.pt"])
def test_truncated_transformer_checkpoint_is_refused_naming_the_file(tmp_path, name):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    tt.train_or_load(cfg, data, "tiny", 3, progress=False, checkpoint_every=EVERY)
    path = tt.run_dir_for(cfg, "tiny", data) / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        tt.train_or_load(cfg, data, "tiny", 6, progress=False, checkpoint_every=EVERY)


def test_loss_row_cut_short_by_a_kill_is_dropped_and_the_log_stays_appendable(tmp_path):
    cfg, data = tiny_cfg(tmp_path), tiny_data()
    _, whole = tt.train_or_load(cfg, data, "whole", 6, progress=False, checkpoint_every=EVERY)
    tt.train_or_load(cfg, data, "cut", 3, progress=False, checkpoint_every=EVERY)
    log = tt.run_dir_for(cfg, "cut", data) / tt.LOSS_LOG
    with open(log, "a") as f:
        f.write("4,1.2e-")  # a kill while appending the next checkpoint's rows: a row that does not parse
    _, resumed = tt.train_or_load(cfg, data, "cut", 6, progress=False, checkpoint_every=EVERY)
    assert resumed["losses"] == whole["losses"]
    assert log.read_text() == (tt.run_dir_for(cfg, "whole", data) / tt.LOSS_LOG).read_text()


# ----------------------------------------------------------------------------------------------------------
# SounDiff
# ----------------------------------------------------------------------------------------------------------
def sd_cfg(cache: Path):
    return get_config("demo", TINY | {"cache_dir": cache})


def test_soundiff_killed_mid_checkpoint_resumes_once_to_the_uninterrupted_result(tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "marker"
    child = start("soundiff", cache, "write", 4, marker)  # killed with checkpoint-4 half-written
    kill_at_marker(child, marker)
    runs = [p for p in (cache / "checkpoints" / "soundiff").glob("soundiff-L-*") if p.is_dir()]
    assert len(runs) == 1
    run = runs[0]
    assert (run / "checkpoint-2").is_dir() and not (run / "checkpoint-4").exists()  # mid-way
    partial = run / f".checkpoint-4.{child.pid}.tmp"
    assert (partial / "trainable.safetensors").is_file()
    assert not (run / "unet").exists() and not (run / "history.json").exists()

    # Two processes at once on the killed run: one resumes it, the other waits for the lock, then loads it.
    outs = [finish(c) for c in [start("soundiff", cache, "race", 1.5) for _ in range(2)]]
    assert lines_with(outs, "Resuming from") == ["Resuming from checkpoint-2 (step 2 of 6)"]  # partial ignored
    assert sorted(lines_with(outs, "TRAIN_STEPS")) == ["TRAIN_STEPS 0", "TRAIN_STEPS 4"]  # steps 3..6, once
    assert len(lines_with(outs, "is being trained by another process: waiting")) == 1
    assert len(lines_with(outs, "Found fine-tuned")) == 1
    digests = lines_with(outs, "DIGEST")
    assert len(digests) == 2 and digests[0] == digests[1]
    assert not partial.exists()

    straight = st.finetune(sd_cfg(tmp_path), tiny_pipe(), tiny_latents(), st.variant_of(sd_cfg(tmp_path), "L",
                           steps=SD_STEPS), tmp_path / "straight", progress=False)
    history = json.loads((run / "history.json").read_text())
    assert history["loss"] == straight["loss"] and history["lr"] == straight["lr"]  # bit for bit
    ours = load_file(run / "unet" / "diffusion_pytorch_model.safetensors")
    want = load_file(tmp_path / "straight" / "unet" / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == want.keys() and all(torch.equal(ours[k], want[k]) for k in want)


@pytest.mark.parametrize("name", ["trainable.safetensors", "optimizer.pt", "state.json"])
def test_truncated_soundiff_checkpoint_is_refused_naming_the_file(tmp_path, name):
    cfg = sd_cfg(tmp_path)
    variant = st.variant_of(cfg, "L", steps=4)
    st.finetune(cfg, tiny_pipe(), tiny_latents(), variant, tmp_path / "run", progress=False, stop_after=2)
    path = tmp_path / "run" / "checkpoint-2" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"checkpoint-2/{name}"):
        st.finetune(cfg, tiny_pipe(), tiny_latents(), variant, tmp_path / "run", resume="latest", progress=False)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints that carry code
# ----------------------------------------------------------------------------------------------------------
class Payload:
    """Unpickling this creates ``marker``: what a checkpoint carrying code could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant(path: Path, marker: Path) -> None:
    """Replace ``path`` by a torch-saved pickle whose loading would create ``marker``."""
    path.unlink(missing_ok=True)
    torch.save({"step": 3, "payload": Payload(marker)}, path)


def assert_live(path: Path, marker: Path) -> None:
    """Guard: the planted file does run its code when loaded without weights_only."""
    assert not marker.exists()
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_transformer_state_carrying_code_is_refused(tmp_path):
    cfg, data, marker = tiny_cfg(tmp_path), tiny_data(), tmp_path / "pwned"
    tt.train_or_load(cfg, data, "tiny", 3, progress=False, checkpoint_every=EVERY)
    state = tt.run_dir_for(cfg, "tiny", data) / "step_0000003.state.pt"
    plant(state, marker)
    with pytest.raises(CheckpointError, match=r"step_0000003\.state\.pt.*UnpicklingError"):
        tt.train_or_load(cfg, data, "tiny", 6, progress=False, checkpoint_every=EVERY)
    assert_live(state, marker)


def test_soundiff_optimizer_state_carrying_code_is_refused(tmp_path):
    cfg, marker = sd_cfg(tmp_path), tmp_path / "pwned"
    variant = st.variant_of(cfg, "L", steps=4)
    st.finetune(cfg, tiny_pipe(), tiny_latents(), variant, tmp_path / "run", progress=False, stop_after=2)
    state = tmp_path / "run" / "checkpoint-2" / "optimizer.pt"
    plant(state, marker)
    with pytest.raises(CheckpointError, match=r"checkpoint-2/optimizer\.pt.*UnpicklingError"):
        st.finetune(cfg, tiny_pipe(), tiny_latents(), variant, tmp_path / "run", resume="latest", progress=False)
    assert_live(state, marker)


def test_pickled_unet_weights_in_a_run_folder_are_never_loaded(tmp_path):
    cfg, marker, pipe = sd_cfg(tmp_path), tmp_path / "pwned", tiny_pipe()
    st.finetune(cfg, pipe, tiny_latents(), st.variant_of(cfg, "L", steps=2), tmp_path / "run", progress=False)
    unet = tmp_path / "run" / "unet"
    plant(unet / "diffusion_pytorch_model.bin", marker)  # beside the safetensors: ignored
    st.load_finetuned(pipe, tmp_path / "run")
    assert not marker.exists()
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(pipe.unet.state_dict(), unet / "diffusion_pytorch_model.bin")  # plain tensors, yet a .bin: refused
    with pytest.raises(CheckpointError, match=r"run: cannot load the fine-tuned weights"):
        st.load_finetuned(pipe, tmp_path / "run")
    plant(unet / "diffusion_pytorch_model.bin", marker)  # alone: refused
    with pytest.raises(CheckpointError, match=r"run: cannot load the fine-tuned weights"):
        st.load_finetuned(pipe, tmp_path / "run")
    assert_live(unet / "diffusion_pytorch_model.bin", marker)
