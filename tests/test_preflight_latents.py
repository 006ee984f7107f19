"""Preflight counts the latent pass of fine-tuning: its GPU memory, and the disk of the cached latents."""

from __future__ import annotations

import pytest
from test_preflight import T4, _full, _with_weights, never

from a2i_utils.preflight import (
    ADVANCE_TRAIN_PAIRS,
    Machine,
    latent_cache_gb,
    latent_pass_gpu_gib,
    preflight,
)


def _latent_problems(cfg, machine):
    return [str(p) for p in preflight(cfg, ["finetune"], machine=machine, probe=never)
            if "encoding the training images" in p.what or "latents of" in p.what]


def test_the_latent_cache_of_advance_is_counted(tmp_path):
    cfg = _full(tmp_path)
    assert (cfg.soundiff.image_size, cfg.soundiff.views) == (768, 1)
    per_pair = 2 * 4 * 96 * 96 * 2  # mean and std, 4 x 96 x 96 float16
    assert latent_cache_gb(cfg) == pytest.approx(ADVANCE_TRAIN_PAIRS * per_pair / 1e9)  # ~0.67 GB
    assert latent_cache_gb(cfg.replace({"soundiff.views": 8})) == pytest.approx(8 * latent_cache_gb(cfg))
    full = Machine("cuda", False, "T4", gpu_free_gib=14.6, gpu_total_gib=15.0, cpu_available_gb=12.0,
                   disk_free_gb={str(cfg.cache_dir): 0.5})
    (text,) = _latent_problems(_with_weights(cfg), full)
    assert f"has 0.50 GB free, the latents of {ADVANCE_TRAIN_PAIRS:,} pairs x 1 view(s) need 0.67 GB" in text
    assert "A2I_CACHE" in text


def test_the_latent_pass_gpu_memory_grows_with_its_batch_not_the_pairs(tmp_path):
    cfg = _with_weights(_full(tmp_path, **{"soundiff.dtype": "float16", "soundiff.latent_batch": 4}))
    assert latent_pass_gpu_gib(cfg.replace({"soundiff.latent_batch": 1})) < latent_pass_gpu_gib(cfg)
    assert _latent_problems(cfg, T4) == []  # a T4 in float16 encodes 4 at a time
    small = Machine("cuda", False, "small", gpu_free_gib=5.0, gpu_total_gib=6.0, bf16=True, cpu_available_gb=60)
    (text,) = _latent_problems(cfg, small)
    assert "encoding the training images (4 at a time) needs about" in text and "soundiff.latent_batch=1" in text
    assert _latent_problems(cfg.replace({"soundiff.latent_batch": 1}), small) == []
