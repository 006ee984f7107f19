"""Preflight: one clear message, before any long work, when full mode cannot run on this machine as configured."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from a2i_utils.config import get_config
from a2i_utils.preflight import (
    FINETUNE_MEASURED,
    Machine,
    PreflightError,
    detect,
    finetune_option,
    finetune_peak_gib,
    preflight,
    require,
    run,
)

T4 = Machine("cuda", False, "Tesla T4", gpu_free_gib=14.6, gpu_total_gib=15.0, bf16=False, cpu_available_gb=12.0)
GPU24 = Machine("cuda", False, "NVIDIA RTX 4090", gpu_free_gib=23.2, gpu_total_gib=23.6, bf16=True, cpu_available_gb=60)
GPU80 = Machine("cuda", False, "NVIDIA H100", gpu_free_gib=78.5, gpu_total_gib=79.1, bf16=True, cpu_available_gb=200)
CPU_ONLY = Machine("cpu", False, cpu_available_gb=20.0)


def online(url):
    """A probe for which every address answers."""
    return None


def offline(url):
    """A probe for which no address answers."""
    return "Name or service not known"


def never(url):
    raise AssertionError(f"nothing should be downloaded or probed, asked for {url}")


def _full(tmp_path, **over):
    return get_config("full", {"cache_dir": tmp_path / "cache", **over})


def _with_weights(cfg):
    """Put a (fake) ImageBind checkpoint and hub snapshot of the UnCLIP pipeline in the cache, and ADVANCE."""
    from a2i_utils.data.advance import ARCHIVES

    (cfg.downloads_dir).mkdir(parents=True, exist_ok=True)
    (cfg.downloads_dir / "imagebind_huge.pth").write_bytes(b"x")
    repo, commit = cfg.cache_dir / "weights" / cfg.soundiff.pretrained_id.replace("/", "--"), "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)  # the layout of a2i_utils.soundiff.weights: one complete snapshot
    (repo / "snapshots" / commit / "unet").mkdir(parents=True)
    (repo / "snapshots" / commit / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"w")
    selected = ["unet/diffusion_pytorch_model.safetensors"]
    (repo / f"verified-{commit}.json").write_text(json.dumps({"selected": {"fp32": selected}, "files": {}}))
    for a in ARCHIVES:
        (cfg.downloads_dir / a.name).write_bytes(b"zip")
    return cfg


def test_preflight_imports_no_part_of_the_course():
    code = ("import sys, a2i_utils.preflight; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['a2i_utils', 'data'], "
            "['a2i_utils', 'imagebind'], ['a2i_utils', 'soundiff'], ['a2i_utils', 'evaluation'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_demo_mode_needs_nothing(tmp_path):
    cfg = get_config("demo", {"cache_dir": tmp_path})
    assert preflight(cfg, machine=CPU_ONLY, probe=never) == []
    assert require(cfg, machine=CPU_ONLY, probe=never) is CPU_ONLY


def test_no_gpu_is_one_message_with_what_to_do(tmp_path):
    cfg = _with_weights(_full(tmp_path))
    with pytest.raises(PreflightError) as info:
        require(cfg, "embed", "finetune", "sample", machine=CPU_ONLY, probe=online)
    text = str(info.value)
    assert text.startswith("full mode cannot run here as configured (device cpu, no CUDA GPU")
    assert text.count("no CUDA GPU (device cpu)") == 3 and "A2I_DEVICE=cpu" in text and "T4 GPU" in text
    assert "demo mode (A2I_MODE=demo)" in text
    forced = Machine("cpu", True, cpu_available_gb=20.0)  # A2I_DEVICE=cpu: embedding allowed, slowly; training not
    assert preflight(cfg, ["embed"], machine=forced, probe=online) == []
    assert [p.stage for p in preflight(cfg, ["finetune"], machine=forced, probe=online)] == ["finetune"]


def test_fine_tuning_memory_is_the_measured_table():
    assert finetune_peak_gib("full-adamw", 4) == (22.1, True)
    assert finetune_peak_gib("full-adafactor-ckpt", 1) == (8.4, True)
    assert finetune_peak_gib("lora-ckpt", 4) == (3.7, True)
    peak, exact = finetune_peak_gib("full-adamw", 2)  # between the measured batches: an estimate
    assert not exact and 16.4 < peak < 22.1
    peak, exact = finetune_peak_gib("lora", 4)  # LoRA without checkpointing was not measured
    assert not exact and peak == pytest.approx(3.7 + (22.1 - 16.4))
    cfg = get_config("full")
    assert finetune_option(cfg) == "full-adamw"
    assert finetune_option(cfg.replace({"soundiff.lora": True, "soundiff.grad_checkpointing": True})) == "lora-ckpt"
    with pytest.raises(ValueError, match="no memory figures"):
        finetune_peak_gib("full-sgd", 1)


def test_t4_gets_the_options_that_fit_and_they_pass(tmp_path):
    """A Colab T4: the paper's full AdamW at batch 4 (22.1 GiB) does not fit; the message names what does."""
    cfg = _with_weights(_full(tmp_path))
    with pytest.raises(PreflightError) as info:
        require(cfg, machine=T4, probe=never)
    text = str(info.value)
    assert "full-adamw at batch 4 needs about 22.1 GiB of GPU memory at 768 px (measured on an H200" in text
    assert "full-adafactor-ckpt at batch 4 (9.4 GiB" in text and "lora-ckpt at batch 4 (3.7 GiB" in text
    assert "full-adamw-ckpt" not in text.split("options that fit:")[1]  # 16.4 GiB: does not fit 14.6
    assert "imagebind.dtype='bfloat16' but Tesla T4 has no bfloat16" in text
    assert "[finetune, sample] soundiff.dtype='bfloat16'" in text  # one entry for the two stages it stops
    fixed = cfg.replace({"imagebind.dtype": "float16", "soundiff.dtype": "float16", "soundiff.lora": True,
                         "soundiff.grad_checkpointing": True})
    assert preflight(fixed, machine=T4, probe=never) == []


@pytest.mark.parametrize("machine,ok", [(GPU24, True), (GPU80, True), (T4, False)])
def test_the_full_preset_on_the_readmes_gpus(tmp_path, machine, ok):
    cfg = _with_weights(_full(tmp_path))
    assert (preflight(cfg, ["finetune"], machine=machine, probe=never) == []) is ok


def test_missing_weights_that_cannot_be_downloaded(tmp_path):
    cfg = _full(tmp_path)
    problems = preflight(cfg, ["data", "embed", "finetune"], machine=GPU80, probe=offline)
    text = "\n".join(map(str, problems))
    assert f"imagebind_huge.pth is not in {cfg.downloads_dir}" in text and "cannot be reached" in text
    assert f"copy it (4.8 GB) to {cfg.downloads_dir / 'imagebind_huge.pth'}" in text
    assert "ADVANCE_vision.zip" in text and "point data.root at an unpacked ADVANCE" in text
    assert "sd2-community--stable-diffusion-2-1-unclip" in text and "known mirrors: sd2-community/" in text
    assert preflight(cfg, ["data", "embed", "finetune"], machine=GPU80, probe=online) == []  # downloadable: fine
    assert preflight(_with_weights(cfg), ["data", "embed", "finetune"], machine=GPU80, probe=offline) == []
    own = cfg.replace({"data.root": str(tmp_path)})
    assert preflight(own, ["data"], machine=GPU80, probe=never) == []  # your own folder: nothing to download


def test_hub_offline_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (problem,) = preflight(_full(tmp_path), ["sample"], machine=GPU80, probe=never)
    assert "HF_HUB_OFFLINE is set" in problem.what and "unset HF_HUB_OFFLINE" in problem.fix


def test_too_little_cpu_or_gpu_memory(tmp_path):
    cfg = _with_weights(_full(tmp_path))
    small = Machine("cuda", False, "tiny", gpu_free_gib=2.0, gpu_total_gib=2.0, bf16=True, cpu_available_gb=4.0)
    text = "\n".join(map(str, preflight(cfg, ["embed"], machine=small, probe=never)))
    assert "ImageBind-huge needs about 6.2 GB of CPU memory to load, 4.0 GB is available" in text
    assert "ImageBind-huge needs about 3.7 GiB of GPU memory (estimate), 2.0 GiB is free" in text
    text = "\n".join(map(str, preflight(cfg, ["finetune"], machine=small, probe=never)))
    assert "no fine-tuning option fits this GPU" in text


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown preflight stage"):
        preflight(_full(tmp_path), ["train"], machine=GPU80, probe=never)


def test_detect_and_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("A2I_CACHE", str(tmp_path))
    monkeypatch.setenv("A2I_DEVICE", "cpu")
    m = detect(get_config("demo"))
    assert m.device == "cpu" and m.forced and m.cpu_available_gb > 0 and m.disk_free_gb
    assert run(argparse.Namespace(mode="demo", stages=[])) == 0
    assert "demo: ready for data, embed, finetune, sample" in capsys.readouterr().out
    assert run(argparse.Namespace(mode="demo", stages=["bogus"])) == 2
    monkeypatch.setattr("a2i_utils.preflight.probe_url", offline)
    assert run(argparse.Namespace(mode="full", stages=["finetune"])) == 1
    assert "no CUDA GPU" in capsys.readouterr().err


def test_measured_rows_are_facts_section_6():
    """The figures are the ones in FACTS §6 (peak GiB at batch 1 and 4)."""
    assert {k: (v[1][0], v[4][0]) for k, v in FINETUNE_MEASURED.items()} == {
        "full-adamw": (16.4, 22.1), "full-adamw-ckpt": (16.4, 16.4), "full-adafactor-ckpt": (8.4, 9.4),
        "lora-ckpt": (3.3, 3.7)}
