"""Two processes filling the same cache at once (two notebooks, or ``make demo`` while a notebook runs) end with
a correct cache and no error in either.

The children meet for sure: they wait on files the test creates only once both have reached the point where
they can collide (both found the cache empty; both are about to write the tree).
"""

from __future__ import annotations

import hashlib
import json
import os
import select
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

from a2i_utils.config import get_config
from a2i_utils.data import synth
from a2i_utils.imagebind import cache as E
from a2i_utils.io import atomic_write_text
from a2i_utils.transformer import features as F

EMB = {"device": "cpu", "imagebind.batch_size": 2}


CHILD_HEAD = CHILD_PRELUDE + """
import hashlib

def wait_file(name):
    while not os.path.exists(name):
        time.sleep(0.01)

def once_then(real, marker, go):
    done = []

    def wrapped(*a, **k):
        if not done:
            done.append(1)
            print(marker, flush=True)
            wait_file(go)
        return real(*a, **k)
    return wrapped

def sha(t):
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()
"""


def start_pair(code: str, cache: Path, **args) -> list[subprocess.Popen]:
    """Two children ``python -c CHILD_HEAD + code`` on the same cache ``cache``; output merged, unbuffered."""
    env = {**os.environ, "A2I_CACHE": str(cache), "A2I_MODE": "demo"}
    return [subprocess.Popen([sys.executable, "-c", CHILD_HEAD + code, json.dumps(args)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            for _ in range(2)]


def read_until(procs, done, so_far: list[str] | None = None, timeout: float = 180.0) -> list[str]:
    """The children's outputs (after ``so_far``), read until ``done(outputs)``; fail if they end or hang first."""
    outs = [o.encode() for o in so_far] if so_far else [b"" for _ in procs]
    deadline = time.monotonic() + timeout
    while not done([o.decode(errors="replace") for o in outs]):
        open_ = [p.stdout for p in procs if not p.stdout.closed]
        ready, _, _ = select.select(open_, [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            for p in procs:
                p.kill()
            pytest.fail("children hung:\n" + "\n---\n".join(o.decode(errors="replace") for o in outs))
        for f in ready:
            i = [p.stdout for p in procs].index(f)
            chunk = os.read(f.fileno(), 1 << 16)
            if not chunk:
                f.close()
                if procs[i].wait() != 0:
                    pytest.fail("a child failed:\n" + outs[i].decode(errors="replace"))
            outs[i] += chunk
        if all(p.stdout.closed for p in procs) and not done([o.decode(errors="replace") for o in outs]):
            pytest.fail("children ended early:\n" + "\n---\n".join(o.decode(errors="replace") for o in outs))
    return [o.decode(errors="replace") for o in outs]


def finish(procs, outs: list[str]) -> list[str]:
    """Read the children to the end; their whole outputs (each must exit 0 without a traceback)."""
    outs = [o + (b"" if p.stdout.closed else p.stdout.read()).decode(errors="replace") for p, o in zip(procs, outs)]
    for p, out in zip(procs, outs):
        assert p.wait(timeout=180) == 0 and "Traceback" not in out, out
    return outs


def digest(root: Path) -> dict[str, str]:
    """sha1 of every file of a tree."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> list[Path]:
    """Six distinct 10 s recordings at 22,050 Hz."""
    folder = tmp_path_factory.mktemp("wavs")
    for i in range(6):
        noise = 0.2 * np.random.default_rng(i).standard_normal(220_500)
        sf.write(folder / f"{i:05d}.wav", noise.astype(np.float32), 22_050, subtype="PCM_16")
    return sorted(folder.glob("*.wav"))


# ----------------------------------------------------------------------------------------------------------
# The synthetic tree: one writer, the other waits and reuses it
# ----------------------------------------------------------------------------------------------------------
TREE_CHILD = """
from a2i_utils.data import synth


class Abandoned(Exception):
    pass


def stop_when_writing(real, go):  # a writer says so, waits for the file go, then goes on or gives up
    def wrapped(*a, **k):
        print(ROUND, "WRITING", flush=True)
        wait_file(go)
        if Path(go).read_text() == "abandon":
            raise Abandoned
        return real(*a, **k)
    return wrapped


real_locks, real_write = (synth.file_lock, synth.waiting_lock), synth._write_tree_locked
for ROUND in ("without-lock", "with-lock"):
    if ROUND == "without-lock":  # the code as it would be without the lock
        import contextlib
        synth.file_lock = lambda path, timeout=-1: contextlib.nullcontext(path)
        synth.waiting_lock = lambda path, message, stream=None: contextlib.nullcontext(path)
    else:
        synth.file_lock, synth.waiting_lock = real_locks
    synth._write_tree_locked = stop_when_writing(real_write, ARGS["go"] + ROUND)
    cfg = get_config("demo", {**ARGS["over"], "cache_dir": ARGS["caches"] + ROUND})
    try:
        print(ROUND, "ROOT", synth.ensure_synthetic(cfg, progress=False), flush=True)
    except Abandoned:
        print(ROUND, "ABANDONED", flush=True)
"""


def test_two_processes_asking_for_the_tree_write_it_once(tmp_path):
    """Round 1, the lock taken out: both children write. Round 2: one writes, the other waits and reuses."""
    cache, go = str(tmp_path / "cache-"), str(tmp_path / "go-")
    procs = start_pair(TREE_CHILD, tmp_path, over=TINY_TREE, caches=cache, go=go)
    # without the lock, both write the tree (and each deletes the other's half-built folder, as leftovers)
    read_until(procs, lambda outs: "".join(outs).count("without-lock WRITING") == 2)
    atomic_write_text(go + "without-lock", "abandon")  # whole when it appears: the children read it

    def met(outs):  # the first one is writing, the second one waits for its lock
        text = "".join(outs)
        return "with-lock WRITING" in text and "waiting for it to finish" in text

    outs = read_until(procs, met)
    atomic_write_text(go + "with-lock", "go on")
    outs = finish(procs, outs)
    assert all("without-lock ABANDONED" in out for out in outs)
    assert "".join(outs).count("with-lock WRITING") == 1  # one writer; the other waited, then used its tree

    cfg = get_config("demo", {"cache_dir": cache + "with-lock", **TINY_TREE})
    root = Path(cfg.datasets_dir) / synth.tree_name(cfg)
    assert all(f"with-lock ROOT {root}" in out for out in outs)
    reference = synth.write_tree(tmp_path / "ref", 1, cfg.seed, 16, duration_s=0.5, progress=False)
    assert digest(root) == digest(reference)
    assert sorted(p.name for p in Path(cfg.datasets_dir).iterdir()) == [root.name, root.name + ".lock"]


# ----------------------------------------------------------------------------------------------------------
# The feature and embedding caches: atomic entries, no lock; both children compute and write every entry
# ----------------------------------------------------------------------------------------------------------
CACHES_CHILD = TINY_EMBEDDER + """
from a2i_utils.imagebind import cache as E
from a2i_utils.transformer import features as F
paths = [Path(p) for p in ARGS["paths"]]
# each child stops once it has looked the cache up and found nothing, until both have
F.load_audio = once_then(F.load_audio, "FEATURES ALL MISSING", ARGS["go"] + "-features")
E._load_inputs = once_then(E._load_inputs, "EMBEDDINGS ALL MISSING", ARGS["go"] + "-embeddings")
computed = []
real_fft = F.fft_features
F.fft_features = lambda w, fcfg: computed.append(len(w)) or real_fft(w, fcfg)
out = F.features_for_pairs(paths, get_config("demo"), progress=False, batch_size=2)
print("FEATURES COMPUTED", sum(computed), "SHA", sha(out), flush=True)

cfg = get_config("demo", ARGS["over"])
embedder = tiny_embedder()
stats = E.EmbedStats()
out = E.embed_files(embedder, paths, "audio", cfg, progress=False, stats=stats)
print("EMBEDDINGS COMPUTED", stats.computed, "SHA", sha(out), flush=True)
"""


def test_two_processes_filling_the_feature_and_embedding_caches_at_once(tmp_path, wavs):
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache", **EMB})
    ref_cfg = get_config("demo", {"cache_dir": tmp_path / "ref", **EMB})
    embedder = tiny_embedder()
    ref_features = F.features_for_pairs(wavs, ref_cfg, progress=False)
    ref_embeddings = E.embed_files(embedder, wavs, "audio", ref_cfg, progress=False)
    go = tmp_path / "go"
    procs = start_pair(CACHES_CHILD, cfg.cache_dir, over=EMB, paths=[str(p) for p in wavs], go=str(go))
    for stage in ("features", "embeddings"):
        outs = read_until(procs, lambda outs, s=stage: all(f"{s.upper()} ALL MISSING" in o for o in outs))
        Path(f"{go}-{stage}").touch()
    outs = finish(procs, outs)
    for out in outs:  # both computed and wrote every entry, both got the right result
        assert f"FEATURES COMPUTED 6 SHA {sha(ref_features)}" in out
        assert f"EMBEDDINGS COMPUTED 6 SHA {sha(ref_embeddings)}" in out

    folder = Path(cfg.features_dir) / F.params_key(cfg.features)
    by_key = {F.file_key(p): i for i, p in enumerate(wavs)}
    assert sorted(p.stem for p in folder.iterdir()) == sorted(by_key)  # whole entries only, no temporary file
    for entry in folder.iterdir():
        assert torch.equal(load_file(entry)["features"], ref_features[by_key[entry.stem]])

    root = E.EmbeddingCache.of(embedder, cfg).root
    by_key = {E.file_hash(p): i for i, p in enumerate(wavs)}
    entries = [p for p in root.rglob("*") if p.is_file()]
    assert sorted(p.stem for p in entries) == sorted(by_key)
    for entry in entries:
        assert torch.equal(load_file(entry)["embedding"], ref_embeddings[by_key[entry.stem]])
