"""`a2i doctor`: versions, device and the fine-tuning options that fit, cache, weights and data; what to fix."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from a2i_utils import doctor
from a2i_utils.config import get_config
from a2i_utils.data.advance import ARCHIVES
from a2i_utils.imagebind import huge
from a2i_utils.preflight import Machine
from a2i_utils.soundiff import weights

REPO = Path(__file__).resolve().parents[1]
CPU_ONLY = Machine("cpu", False, cpu_available_gb=20.0)
T4 = Machine("cuda", False, "Tesla T4", gpu_free_gib=14.6, gpu_total_gib=15.0, bf16=False, cpu_available_gb=12.0)
GPU80 = Machine("cuda", False, "NVIDIA H100", gpu_free_gib=78.5, gpu_total_gib=79.1, bf16=True, cpu_available_gb=200)


def _args(mode, **kw):
    return argparse.Namespace(mode=mode, verify=kw.get("verify", False), json=kw.get("json", False))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A2I_CACHE in tmp_path; no A2I_MODE/A2I_DATA_ROOT from the environment."""
    monkeypatch.setenv("A2I_CACHE", str(tmp_path / "cache"))
    for var in ("A2I_MODE", "A2I_DATA_ROOT", "A2I_DEVICE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache"


def _machine(monkeypatch, m: Machine) -> None:
    monkeypatch.setattr(doctor, "detect", lambda cfg: m)


def _put_full_mode_files(cfg, monkeypatch) -> dict[str, Path]:
    """A verified (small) ImageBind checkpoint, a verified snapshot of the UnCLIP weights, both ADVANCE markers.

    The snapshot is laid out and verified by ``a2i_utils.soundiff.weights`` itself, its fake U-Net pinned instead
    of Stability's.
    """
    path = huge.huge_checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    torch.save(nn.Linear(2, 2).state_dict(), path)
    huge.write_stamp(path, 2)
    src, commit = weights.source_of(cfg), "a" * 40
    repo = weights.repo_dir(cfg, src)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    blobs = {}
    for name, stem in weights.WEIGHT_COMPONENTS.items():
        blob = repo / "snapshots" / commit / name / f"{stem}.safetensors"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(f"weights of {name}".encode())
        blobs[name] = blob
    unet = "unet/diffusion_pytorch_model.safetensors"
    monkeypatch.setattr(weights, "PINNED_SHA256", {unet: hashlib.sha256(b"weights of unet").hexdigest()})
    files = [b.relative_to(repo / "snapshots" / commit).as_posix() for b in blobs.values()]
    weights.verify(repo / "snapshots" / commit, files, weights.stamp_path(cfg, src, commit), None, ours=True)
    for a in ARCHIVES:
        marker = cfg.datasets_dir / "advance" / f".extracted-{a.md5}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(a.name + "\n")
    return {"imagebind": path, **blobs}


def test_demo_needs_nothing_downloaded(cache, monkeypatch, capsys):
    _machine(monkeypatch, CPU_ONLY)
    assert doctor.run(_args("demo")) == 0
    out = capsys.readouterr().out
    assert out.startswith("a2i doctor (demo mode)\nversions:\n") and out.rstrip().endswith("demo mode: ready")
    assert "imagebind_huge.pth is missing (not used in this mode)" in out and "!!" not in out
    assert f"cache root {cache}: not created yet" in out


def test_full_with_nothing_lists_every_problem_with_what_to_do(cache, monkeypatch, capsys):
    _machine(monkeypatch, CPU_ONLY)
    assert doctor.run(_args("full")) == 1
    out = capsys.readouterr().out
    problems = out.split("problems that stop full mode, and what to do:\n")[1]
    assert problems.count("\n     -> ") == 7  # ImageBind, UnCLIP, two archives, three stages without a GPU
    assert f"copy imagebind_huge.pth to {cache / 'downloads' / 'imagebind_huge.pth'}" in problems
    assert "`a2i data fetch --mode full`" in problems and "UnCLIP not downloaded yet into" in problems
    assert "known mirrors: sd2-community/stable-diffusion-2-1-unclip" in problems
    assert "UnCLIP source: hub sd2-community/stable-diffusion-2-1-unclip (revision main)" in out
    assert "no CUDA GPU (device cpu)" in problems and out.rstrip().endswith("full mode: 7 problem(s) to fix first")


def test_full_with_verified_files_on_a_big_gpu_is_ready(cache, monkeypatch, capsys):
    _machine(monkeypatch, GPU80)
    files = _put_full_mode_files(get_config("full"), monkeypatch)
    assert doctor.run(_args("full", verify=True)) == 0
    out = capsys.readouterr().out
    assert "!!" not in out and out.rstrip().endswith("full mode: ready")
    assert f"ImageBind-huge: {files['imagebind']}, verified (SHA-256" in out
    assert out.count("... checked now") == 4 and out.count("extracted, md5-checked") == 2
    assert "ok UnCLIP unet/diffusion_pytorch_model.safetensors: 0.0 MB, SHA-256 " in out and "pinned" in out
    assert "fine-tuning full-adamw at batch 4: 22.1 GiB (measured) fits in 78.5 GiB free (the configured option)" \
        in out
    # the checkpoint and its stamp, 4 weight files, refs/main, the snapshot's stamp and its lock, 2 markers
    assert f"cache root {cache}: 0.0 MB in 11 files, " in out


def test_t4_says_which_fine_tuning_options_fit(cache, monkeypatch, capsys):
    _machine(monkeypatch, T4)
    _put_full_mode_files(get_config("full"), monkeypatch)
    assert doctor.run(_args("full")) == 1  # the configured full AdamW at batch 4 does not fit, nor bf16
    out = capsys.readouterr().out
    assert "full-adamw at batch 4: 22.1 GiB (measured) does not fit in 14.6 GiB free (the configured option)" in out
    assert "ok fine-tuning lora-ckpt at batch 4: 3.7 GiB (measured) fits" in out
    assert "options that fit: full-adafactor-ckpt at batch 4" in out and "has no bfloat16" in out
    assert "!! ImageBind-huge" not in out and "!! UnCLIP" not in out and "!! ADVANCE_" not in out  # GPU only


def test_changed_or_tampered_weights_are_problems(cache, monkeypatch, capsys):
    _machine(monkeypatch, GPU80)
    files = _put_full_mode_files(get_config("full"), monkeypatch)
    with open(files["imagebind"], "ab") as f:
        f.write(b"\0" * 10)  # changed since verified
    files["unet"].write_bytes(b"tampered weights")  # no longer the pinned content
    assert doctor.run(_args("full")) == 1  # the size change is seen without --verify
    out = capsys.readouterr().out
    assert "changed or corrupt" in out and "delete" in out and "!! UnCLIP unet" not in out
    assert "UnCLIP unet/diffusion_pytorch_model.safetensors: 0.0 MB, changed since verified" in out
    assert doctor.run(_args("full", verify=True)) == 1
    out = capsys.readouterr().out
    assert "!! UnCLIP unet/diffusion_pytorch_model.safetensors: " in out and "differs from" in out


def test_json_report(cache, monkeypatch, capsys):
    _machine(monkeypatch, CPU_ONLY)
    assert doctor.run(_args("full", json=True)) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "full" and doc["ready"] is False
    assert {f["section"] for f in doc["findings"]} == {"versions", "device", "cache", "weights", "data", "machine"}
    assert all(f["fix"] for f in doc["findings"] if f["status"] == "problem")


def test_the_command(tmp_path):
    """The real console script, in a fresh process: demo mode on this machine is ready, sections printed."""
    env = {**os.environ, "A2I_CACHE": str(tmp_path / "cache"), "A2I_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    env.pop("A2I_MODE", None)
    out = subprocess.run([str(REPO / ".venv" / "bin" / "a2i"), "doctor"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    heads = [line for line in out.stdout.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert heads == ["versions:", "device:", "cache:", "weights:", "data:"]
    assert "torch " in out.stdout and "CUDA " in out.stdout and out.stdout.rstrip().endswith("demo mode: ready")
