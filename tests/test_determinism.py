"""Determinism: two demo runs with the same seed, on the CPU, give bitwise identical results at every stage.

Each run is a fresh process (``scripts/determinism_run.py``) with its own fresh cache, so nothing is shared or
reused: the synthetic data, FFT features, the pixel transformer, the miniature ImageBind and UnCLIP, SounDiff-L,
the images generated from recordings and the metrics are all made twice, at tiny sizes (seconds). The two
processes get different ``PYTHONHASHSEED`` values, so a result that hangs on the iteration order of a set of
strings shows up as a difference. A third run on the first one's (now warm) cache loads everything and must
give the same bits as the cold run. All use one torch thread: the code does not promise equality across thread
counts (with 2 threads the float32 reductions are summed in another order; see the README's "Determinism").
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "determinism_run.py"
_spec = importlib.util.spec_from_file_location("determinism_run", SCRIPT)
determinism_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(determinism_run)

CHILD_TIMEOUT_S = 600


def start_run(out: Path, hash_seed: str, cache: Path | None = None) -> subprocess.Popen:
    """One run of the whole pipeline (seed 42, 1 torch thread) in a fresh process, caching into ``cache``
    (default ``out/cache``, empty)."""
    cache = cache or out / "cache"
    out.mkdir(parents=True)
    env = {**os.environ, "A2I_MODE": "demo", "A2I_CACHE": str(cache), "MPLBACKEND": "Agg",
           "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("A2I_DATA_ROOT", None)
    env.pop("A2I_DEVICE", None)
    cmd = [sys.executable, str(SCRIPT), str(out), "--seed", "42", "--threads", "1", "--cache", str(cache)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, out: Path) -> str:
    """Wait for a run; its output, or a failure that shows the end of it."""
    log, _ = proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == 0, f"the run in {out} failed:\n{log[-3000:]}"
    return log


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two cold runs side by side (fresh caches, two hash seeds), then a warm one on the first run's cache:
    {name: ((stages, results), output)}."""
    root = tmp_path_factory.mktemp("determinism")
    cold = {name: start_run(root / name, h) for name, h in (("a", "0"), ("b", "1"))}
    logs = {"a": finish(cold["a"], root / "a")}
    warm = start_run(root / "warm", "2", cache=root / "a" / "cache")
    logs["b"] = finish(cold["b"], root / "b")
    logs["warm"] = finish(warm, root / "warm")
    return {name: (determinism_run.load_results(root / name), log) for name, log in logs.items()}


@pytest.fixture(scope="module")
def two_runs(runs):
    return [runs["a"][0], runs["b"][0]]


def test_two_runs_with_the_same_seed_are_bitwise_identical(two_runs):
    diff = determinism_run.first_difference(*two_runs)
    assert diff is None, f"the two runs differ first at {diff}"


def test_a_run_on_a_warm_cache_gives_the_same_bits_as_a_cold_one(runs):
    """Everything loaded from the cache (features, embeddings, checkpoints) equals what was computed."""
    diff = determinism_run.first_difference(runs["a"][0], runs["warm"][0])
    assert diff is None, f"cold and warm cache differ first at {diff}"
    log = runs["warm"][1]
    for found in ("Found checkpoint train-split", "Found checkpoint mini-", "Found pretrained miniature UnCLIP",
                  "Found fine-tuned soundiff-L", "Found scene classifier"):
        assert found in log, f"the warm run did not load ({found!r}): it recomputed"
    assert "No checkpoint for" not in log


def test_every_stage_produced_results(two_runs):
    """Guard: identical because the stages ran, not because they were empty or skipped."""
    stages, results = two_runs[0]
    assert stages == list(determinism_run.STAGES)
    for stage in stages[1:]:  # the data stage holds file hashes and pair ids, no tensors
        tensors = [v for v in results[stage].values() if torch.is_tensor(v)]
        assert tensors and all(t.numel() > 0 for t in tensors), stage
    assert len(results["data"]["files"]) > 2 * len(results["data"]["train"])  # a WAV and a JPEG per pair
    assert results["transformer"]["losses"].numel() == determinism_run.TRANSFORMER_STEPS
    images = results["soundiff"]["images"]  # (N, n, H, W, 3) uint8
    assert images.dtype == torch.uint8 and images.float().std() > 0


def test_a_difference_is_found_and_named_by_its_first_stage(two_runs):
    """Guard for the comparison: one changed bit is found, and the earliest stage that differs is named."""
    stages, results = two_runs[0]
    changed = {s: dict(v) for s, v in results.items()}
    images = changed["soundiff"]["images"].clone()
    images.view(-1)[7] ^= 1
    changed["soundiff"]["images"] = images
    assert determinism_run.first_difference((stages, results), (stages, changed)).startswith("soundiff/images: 1 of")
    feats = changed["features"]["train"].clone()
    feats.view(-1)[0] = torch.nextafter(feats.view(-1)[0], torch.tensor(float("inf")))  # one float32 ulp
    changed["features"]["train"] = feats
    assert determinism_run.first_difference((stages, results), (stages, changed)).startswith("features/train")
    changed["data"]["val"] = changed["data"]["val"][::-1]
    assert determinism_run.first_difference((stages, results), (stages, changed)).startswith("data/val")


def test_bitwise_means_bitwise():
    """-0.0 and 0.0 differ, a NaN equals the same NaN, a dtype change is a difference."""
    same = determinism_run._same
    nan = torch.tensor([float("nan"), 1.0])
    assert same(nan, nan.clone())
    assert not same(torch.tensor([0.0]), torch.tensor([-0.0]))
    assert not same(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64))
    assert same({"FD": [0.5, [0.1, 0.9]]}, {"FD": [0.5, [0.1, 0.9]]})
    assert not same({"FD": [0.5, [0.1, 0.9]]}, {"FD": [0.5, [0.1, 0.9000000000000001]]})
