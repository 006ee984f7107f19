"""The CLI and the distributed path: ``accelerate launch`` with 2 processes on the CPU trains and saves (tiny sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from a2i_utils.cli import build_parser
from a2i_utils.soundiff.cli import overrides, parse_set

TINY_SETS = ["data.per_class=3", "data.image_size=32", "imagebind.mini_vision_epochs=1",
             "imagebind.mini_audio_epochs=1",
             "soundiff.image_size=16", "soundiff.mini_vae_channels=(8, 8)", "soundiff.mini_unet_channels=(16, 16)",
             "soundiff.mini_text_dim=16", "soundiff.mini_vae_steps=2", "soundiff.mini_unet_steps=2",
             "soundiff.mini_batch=8", "soundiff.batch_size=4", "soundiff.views=1"]


def test_train_soundiff_arguments_become_config_overrides(tmp_path):
    args = build_parser().parse_args(["train", "soundiff", "--variant", "S", "--lora", "--steps", "7", "--lr", "1e-4",
                                      "--resume", "latest", "--cache", str(tmp_path), "--set", "soundiff.views=8"])
    assert (args.variant, args.steps, args.resume) == ("S", 7, "latest")
    again = build_parser().parse_args(["train", "soundiff"])
    assert (again.resume, again.restart) == ("latest", False)  # a re-run of the same command finishes the job
    assert build_parser().parse_args(["train", "soundiff", "--restart"]).restart
    assert overrides(args) == {"soundiff.views": 8, "cache_dir": tmp_path, "soundiff.lr": 1e-4, "soundiff.lora": True}
    assert parse_set(["soundiff.mini_unet_channels=(16, 16)", "soundiff.prompt_s=a photo"]) == {
        "soundiff.mini_unet_channels": (16, 16), "soundiff.prompt_s": "a photo"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set(["soundiff.lr"])


def test_accelerate_launch_two_cpu_processes_trains_and_saves(tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "-m", "a2i_utils.cli", "train", "soundiff", "--variant", "L", "--steps", "3",
           "--checkpoint-every", "2", "--cache", str(tmp_path)]
    for item in TINY_SETS:
        cmd += ["--set", item]
    env = os.environ | {"A2I_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "A2I_MODE": "demo"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    runs = list((tmp_path / "checkpoints" / "soundiff").glob("soundiff-L-*"))
    assert len(runs) == 1
    assert (runs[0] / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert len(json.loads((runs[0] / "history.json").read_text())["loss"]) == 3
    assert (runs[0] / "checkpoint-2" / "trainable.safetensors").is_file()
    again = subprocess.run([sys.executable] + cmd[cmd.index("-m"):], env=env, capture_output=True, text=True,
                           timeout=600)  # the same command again, one process: the finished run is not retrained
    assert again.returncode == 0, again.stderr[-3000:]
    assert "SounDiff-L is already fine-tuned: weights in" in again.stdout and "done:" not in again.stdout


def test_train_mini_unclip_pretrains_then_finds_it(tmp_path, capsys):
    from a2i_utils.cli import main

    argv = ["train", "mini-unclip", "--cache", str(tmp_path)] + [a for s in TINY_SETS for a in ("--set", s)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "miniature UnCLIP mini_unclip-v1-" in first and "Found pretrained" not in first
    (folder,) = [p for p in (tmp_path / "checkpoints" / "soundiff_mini").iterdir()
                 if p.is_dir() and not p.name.endswith("-vae")]  # not the <key>.lock file beside it
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert main(argv) == 0
    assert "Found pretrained miniature UnCLIP" in capsys.readouterr().out
    assert main(["train", "mini-unclip", "--mode", "full", "--cache", str(tmp_path)]) == 2  # a clear user error
