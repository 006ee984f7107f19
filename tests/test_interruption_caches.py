"""Killed half-way (SIGKILL), the synthetic tree and the feature and embedding caches keep only whole entries,
and the next run finishes the job, reusing what was finished.

Each child process is stopped at a known point: a wrapped function prints a marker and blocks, and the test
kills the child then. So every kill lands mid-way (some entries written, the next one half-written), never by
luck; each test also asserts that the child was killed, not finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from stand_ins import CHILD_PRELUDE, TINY_EMBEDDER, TINY_TREE, tiny_embedder

from a2i_utils import cli
from a2i_utils.config import get_config
from a2i_utils.data import synth
from a2i_utils.imagebind import cache as E
from a2i_utils.io import remove_stale_temps
from a2i_utils.transformer import features as F

# One item a batch: an embedding of an item can change in the last bits with the other items of its batch (the
# miniature's by 5e-7 of 2.1, measured), and a re-run batches only the missing items; bitwise needs equal batches.
EMB = {"device": "cpu", "imagebind.batch_size": 1}


CHILD_HEAD = CHILD_PRELUDE + """

def block(marker):
    print(marker, flush=True)
    time.sleep(600)  # killed here by the test
"""


def start(code: str, cache: Path, **args) -> subprocess.Popen:
    """A child ``python -c CHILD_HEAD + code`` on the cache ``cache``, with ``args`` as ``ARGS``; output merged."""
    env = {**os.environ, "A2I_CACHE": str(cache), "A2I_MODE": "demo"}
    return subprocess.Popen([sys.executable, "-c", CHILD_HEAD + code, json.dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_for(proc: subprocess.Popen, marker: str, timeout: float = 180.0) -> str:
    """The child's output up to the line ``marker``; fail (with the output) if it ends or hangs first."""
    out, deadline = b"", time.monotonic() + timeout
    while f"\n{marker}\n".encode() not in b"\n" + out:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(proc.stdout.fileno(), 1 << 16) if ready else b""
        if not chunk:
            proc.kill()
            proc.wait()
            pytest.fail(f"child ended or hung before printing {marker!r}:\n{out.decode(errors='replace')}")
        out += chunk
    return out.decode(errors="replace")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child and reap it (a reaped pid no longer runs, so its temporary files count as stale)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished


def digest(root: Path) -> dict[str, str]:
    """sha1 of every file of a tree."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def temps(folder: Path) -> list[Path]:
    """Temporary files (``.<name>.<pid>.tmp``) under ``folder``."""
    return sorted(folder.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> list[Path]:
    """Eight distinct 10 s recordings at 22,050 Hz (the features' length)."""
    folder = tmp_path_factory.mktemp("wavs")
    for i in range(8):
        noise = 0.2 * np.random.default_rng(i).standard_normal(220_500)
        sf.write(folder / f"{i:05d}.wav", noise.astype(np.float32), 22_050, subtype="PCM_16")
    return sorted(folder.glob("*.wav"))


# ----------------------------------------------------------------------------------------------------------
# The synthetic tree
# ----------------------------------------------------------------------------------------------------------
SYNTH_CHILD = """
from a2i_utils.data import synth
real, made = synth.make_sound, []

def counting(*a, **k):
    made.append(1)
    if len(made) == 6:
        block("HALF-WAY")  # 5 pairs written into the partial folder
    return real(*a, **k)

synth.make_sound = counting
synth.ensure_synthetic(get_config("demo", ARGS["over"]), progress=False)
"""


def test_killed_tree_writer_leaves_no_tree_and_the_next_run_writes_it_whole(tmp_path):
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache", **TINY_TREE})
    root = Path(cfg.datasets_dir) / synth.tree_name(cfg)
    child = start(SYNTH_CHILD, cfg.cache_dir, over=TINY_TREE)
    wait_for(child, "HALF-WAY")
    [partial] = Path(cfg.datasets_dir).glob(".*.partial")
    assert len(list(partial.rglob("*.wav"))) == 5 and not root.exists()  # mid-way: nothing in place yet
    kill(child)

    assert synth.ensure_synthetic(cfg, progress=False) == root
    reference = synth.write_tree(tmp_path / "ref", 1, cfg.seed, 16, duration_s=0.5, progress=False)
    assert digest(root) == digest(reference)
    assert not partial.exists()  # the killed writer's folder was deleted, not left for ever
    assert sorted(p.name for p in Path(cfg.datasets_dir).iterdir()) == [root.name, root.name + ".lock"]


REPLACE_CHILD = """
import shutil
from a2i_utils import cli
real = shutil.rmtree

def stuck_rmtree(path, *a, **k):
    path = Path(path)
    if (path / "synthetic.json").is_file():  # deleting a whole tree: stop half-way through
        real(path / "vision")
        block("DELETING")
    return real(path, *a, **k)

shutil.rmtree = stuck_rmtree
cli.main(["data", "synth", "--out", ARGS["out"], "--per-class", "1", "--seed", "2", "--image-size", "16"])
"""


def test_killed_replacement_never_leaves_a_half_deleted_tree_that_looks_whole(tmp_path):
    """``a2i data synth`` over an earlier tree, killed while the earlier one is being deleted."""
    out = tmp_path / "tree"
    synth.write_tree(out, per_class=1, seed=1, image_size=16, progress=False)
    reference = digest(synth.write_tree(tmp_path / "ref", per_class=1, seed=2, image_size=16, progress=False))
    child = start(REPLACE_CHILD, tmp_path / "cache", out=str(out))
    wait_for(child, "DELETING")
    kill(child)
    assert digest(out) == reference  # the new tree is whole (deleting the old one in place would leave a husk)
    assert [p.suffix for p in tmp_path.glob(".tree.*")] == [".old"]  # what is left of the earlier tree, aside
    assert cli.main(["data", "synth", "--out", str(out), "--per-class", "1", "--seed", "2", "--image-size", "16"]) == 0
    assert digest(out) == reference
    assert not list(tmp_path.glob(".tree.*"))  # deleted by the next writer


def test_only_the_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    names = [f".a.safetensors.{dead.pid}.tmp", f".b.safetensors.{os.getpid()}.tmp", "c.safetensors",
             f"d.safetensors.{dead.pid}.tmp"]  # a dead writer's, a live writer's, an entry, not a temporary name
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == 1 and remove_stale_temps(tmp_path / "absent") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


# ----------------------------------------------------------------------------------------------------------
# The feature and embedding caches: the 4th entry is killed half-written
# ----------------------------------------------------------------------------------------------------------
HALF_WRITE = """
def half_writing(real):
    saved = []

    def save(tensors, filename, *a, **k):
        saved.append(filename)
        real(tensors, filename, *a, **k)
        if len(saved) == 4:  # 3 entries in place; truncate the 4th's temporary file and stop
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            block("HALF-WRITTEN")
    return save
"""

FEATURES_CHILD = HALF_WRITE + """
from a2i_utils.transformer import features as F
F.save_file = half_writing(F.save_file)
F.features_for_pairs([Path(p) for p in ARGS["paths"]], get_config("demo"), progress=False, batch_size=2)
"""


def test_killed_feature_cache_keeps_whole_entries_and_is_finished_by_the_next_run(tmp_path, wavs, monkeypatch):
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache"})
    reference = F.features_for_pairs(wavs, get_config("demo", {"cache_dir": tmp_path / "ref"}), progress=False)
    child = start(FEATURES_CHILD, cfg.cache_dir, paths=[str(p) for p in wavs])
    wait_for(child, "HALF-WRITTEN")
    kill(child)

    folder = Path(cfg.features_dir) / F.params_key(cfg.features)
    entries = sorted(folder.glob("*.safetensors"))
    assert len(entries) == 3 and [t.name.split(".")[-2] for t in temps(folder)] == [str(child.pid)]
    by_key = {F.file_key(p): i for i, p in enumerate(wavs)}
    for entry in entries:  # every entry present is whole and right
        assert torch.equal(load_file(entry)["features"], reference[by_key[entry.stem]])

    computed = []
    real_fft = F.fft_features
    monkeypatch.setattr(F, "fft_features", lambda w, fcfg: computed.append(len(w)) or real_fft(w, fcfg))
    again = F.features_for_pairs(wavs, cfg, progress=False, batch_size=2)
    assert torch.equal(again, reference)  # bitwise
    assert sum(computed) == 5  # the 3 finished entries were reused
    assert temps(folder) == []  # the killed writer's half file was deleted


EMBED_CHILD = HALF_WRITE + TINY_EMBEDDER + """
import safetensors.torch
from a2i_utils.imagebind import cache as E
cfg = get_config("demo", ARGS["over"])
embedder = tiny_embedder()
safetensors.torch.save_file = half_writing(safetensors.torch.save_file)
E.embed_files(embedder, ARGS["paths"], "audio", cfg, progress=False)
"""


def test_killed_embedding_cache_keeps_whole_entries_and_is_finished_by_the_next_run(tmp_path, wavs):
    paths = wavs[:6]
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache", **EMB})
    embedder = tiny_embedder()
    ref_cfg = get_config("demo", {"cache_dir": tmp_path / "ref", **EMB})
    reference = E.embed_files(embedder, paths, "audio", ref_cfg, progress=False)
    child = start(EMBED_CHILD, cfg.cache_dir, over=EMB, paths=[str(p) for p in paths])
    wait_for(child, "HALF-WRITTEN")
    kill(child)

    cache = E.EmbeddingCache.of(embedder, cfg)
    entries = sorted(cache.root.rglob("*.safetensors"))
    assert len(entries) == 3 and len(temps(cache.root)) == 1
    by_key = {E.file_hash(p): i for i, p in enumerate(paths)}
    for entry in entries:
        assert torch.equal(load_file(entry)["embedding"], reference[by_key[entry.stem]])

    stats = E.EmbedStats()
    again = E.embed_files(embedder, paths, "audio", cfg, progress=False, stats=stats)
    assert torch.equal(again, reference)  # bitwise
    assert (stats.hits, stats.computed) == (3, 3)  # the finished entries were reused
    assert temps(cache.root) == []
