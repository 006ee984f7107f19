"""FFT features: shapes, equality with a NumPy reference, the dropped bin, the cache and its invalidation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from a2i_utils.config import get_config
from a2i_utils.data import Pair
from a2i_utils.transformer.features import (
    FeatureNormalizer,
    bin_frequencies,
    cache_path,
    features_for_pairs,
    fft_features,
    fft_features_loop,
)

SR = 22_050


@pytest.fixture
def cfg(tmp_path):
    return get_config("demo", {"cache_dir": tmp_path / "cache"})


def numpy_reference(wave: np.ndarray, eps: float) -> np.ndarray:
    """Independent reference: reshape to 500 x 441, NumPy rFFT, drop bin 0, log."""
    x = np.zeros(220_500)
    x[: min(len(wave), 220_500)] = wave[:220_500]
    mag = np.abs(np.fft.rfft(x.reshape(500, 441), axis=1))  # (500, 221)
    return np.log(mag[:, 1:] + eps)  # (500, 220)


def test_shapes_single_and_batch(cfg):
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(220_500).astype(np.float32) * 0.1
    assert fft_features(wave, cfg.features).shape == (500, 220)
    batch = torch.from_numpy(np.stack([wave, wave * 0.5, wave * 2]))
    feats = fft_features(batch, cfg.features)
    assert feats.shape == (3, 500, 220) and feats.dtype == torch.float32
    torch.testing.assert_close(feats[0], fft_features(wave, cfg.features))


@pytest.mark.parametrize("length", [220_500, 100_000, 300_000])
def test_matches_numpy_reference(cfg, length):
    wave = np.random.default_rng(length).uniform(-0.8, 0.8, length).astype(np.float32)
    ours = fft_features(wave, cfg.features).numpy()
    np.testing.assert_allclose(ours, numpy_reference(wave, cfg.features.log_eps), atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(ours, fft_features_loop(wave, cfg.features), atol=2e-4, rtol=1e-4)


def test_matches_reference_on_a_quiet_recording(cfg):
    """Near-silent bins: float32 rounding is magnified by the log, but stays within 2e-3 of float64."""
    rng = np.random.default_rng(3)
    wave = (1e-3 * rng.standard_normal(220_500) + 0.3 * np.sin(np.arange(220_500) * 0.05)).astype(np.float32)
    ours = fft_features(wave, cfg.features).numpy()
    np.testing.assert_allclose(ours, numpy_reference(wave.astype(np.float64), cfg.features.log_eps), atol=2e-3)


def test_dc_bin_dropped_and_tone_lands_in_its_bin(cfg):
    freqs = bin_frequencies(cfg.features)
    assert freqs[0] == 50.0 and freqs[-1] == 11_000.0 and len(freqs) == 220
    t = np.arange(220_500) / SR
    wave = (0.3 + 0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)  # DC offset + 1 kHz
    feats = fft_features(wave, cfg.features)
    assert int(feats.mean(0).argmax()) == list(freqs).index(1000.0)  # the offset does not show up anywhere


def test_normalizer_uses_train_statistics_and_round_trips():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(10, 500, 220, generator=g) * 3 + 5
    norm = FeatureNormalizer().fit(train)
    out = norm(train)
    torch.testing.assert_close(out.mean((0, 1)), torch.zeros(220), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std((0, 1)), torch.ones(220), atol=1e-3, rtol=0)
    val = torch.randn(2, 500, 220, generator=g) + 100
    again = FeatureNormalizer.from_state_dict(norm.state_dict())
    torch.testing.assert_close(again(val), norm(val))
    assert norm(val).mean() > 10  # val statistics are not used
    with pytest.raises(RuntimeError, match="fit"):
        FeatureNormalizer()(val)


def _pair(tmp_path, name, wave, rate=SR):
    path = tmp_path / f"{name}.wav"
    sf.write(path, wave, rate, subtype="FLOAT")
    return Pair(name, name, "beach", tmp_path / "none.jpg", path, "train")


def test_features_for_pairs_resamples_and_caches(tmp_path, cfg):
    rng = np.random.default_rng(1)
    a = _pair(tmp_path, "00001", rng.uniform(-0.5, 0.5, 10 * SR).astype(np.float32))
    b = _pair(tmp_path, "00002", rng.uniform(-0.5, 0.5, 5 * 44_100).astype(np.float32), rate=44_100)
    feats = features_for_pairs([a, b], cfg, progress=False)
    assert feats.shape == (2, 500, 220)
    assert cache_path(a.audio_path, cfg).is_file() and cache_path(b.audio_path, cfg).is_file()
    np.testing.assert_allclose(feats[0].numpy(), numpy_reference(sf.read(a.audio_path)[0], 1e-4), atol=2e-4)
    assert torch.equal(features_for_pairs([a, b], cfg, progress=False), feats)  # from the cache
    assert (feats[1, 260:] < np.log(1e-4) + 1e-3).all()  # 5 s recording padded with zeros


def test_cache_invalidated_when_file_or_params_change(tmp_path, cfg):
    rng = np.random.default_rng(2)
    a = _pair(tmp_path, "00001", rng.uniform(-0.5, 0.5, 10 * SR).astype(np.float32))
    first = features_for_pairs([a], cfg, progress=False)
    old_path = cache_path(a.audio_path, cfg)
    sf.write(a.audio_path, rng.uniform(-0.1, 0.1, 10 * SR).astype(np.float32), SR, subtype="FLOAT")
    assert cache_path(a.audio_path, cfg) != old_path
    second = features_for_pairs([a], cfg, progress=False)
    assert not torch.allclose(first, second)
    cfg2 = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, log_eps=1e-2))
    assert cache_path(a.audio_path, cfg2) != cache_path(a.audio_path, cfg)
    third = features_for_pairs([a], cfg2, progress=False)
    assert third.min() >= np.log(1e-2) - 1e-6 and not torch.allclose(second, third)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong_shape"])
def test_damaged_cache_entry_is_recomputed(tmp_path, cfg, damage):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(4)
    a = _pair(tmp_path, "00001", rng.uniform(-0.5, 0.5, 10 * SR).astype(np.float32))
    first = features_for_pairs([a], cfg, progress=False)
    entry = cache_path(a.audio_path, cfg)
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:1000])
    elif damage == "garbage":
        entry.write_bytes(b"\x00" * 64)
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        save_file({"features": np.zeros((3, 4), np.float32)}, entry)
    again = features_for_pairs([a], cfg, progress=False)
    assert torch.equal(again, first)
    assert torch.equal(features_for_pairs([a], cfg, progress=False), first)  # the entry was written again
    assert entry.stat().st_size > 500 * 220 * 4 and not list(entry.parent.glob(".*.tmp"))
