"""FFT features of the pixel transformer (paper §3.2, §4): 500 sections x 220 log-magnitude bins.

The paper states only "500 vectors of 220 numbers"; the rest is our reconstruction. A 10 s recording at
22,050 Hz is 220,500 samples = 500 sections of 441 samples (20 ms each). The real FFT of a 441-sample section
has 221 bins, k * 50 Hz for k = 0..220. We keep bins 1..220 (50 Hz to 11,000 Hz) and DROP BIN 0, the DC bin:
it is the section's sum (441 x its mean), which holds any constant offset of the recorder AND the sound below
50 Hz (a 20 ms section holds less than one period of it). One bin has to go to get 220; we lose that slow
sound with the offset. (441 is odd, so there is no Nyquist bin; the other candidate is the top bin, 11 kHz.)

    X[s, k] = | sum_n x[441 s + n] exp(-2 pi i k n / 441) |,   F[s, k] = log(X[s, k] + eps),   k = 1..220

All sections go through ONE batched ``torch.fft.rfft`` over a (B, 500, 441) view of the waveform: no
Python loop. Normalisation uses per-bin statistics of the TRAINING split only (:class:`FeatureNormalizer`).
Features of dataset files are cached in ``cfg.features_dir``, keyed by the file's bytes and the parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from a2i_utils.config import Config, FeatureConfig
from a2i_utils.data.audio import load_audio
from a2i_utils.io import atomic_write, cache_key, remove_stale_temps

DROPPED_BIN = 0  # the DC bin (see the module docstring)
FEATURE_VERSION = 1  # bump when the computation changes: old cache entries are then ignored


def section_length(fcfg: FeatureConfig) -> int:
    """Samples per section: 220,500 / 500 = 441 for the paper's setting."""
    n = round(fcfg.sample_rate * fcfg.duration_s)
    if n % fcfg.n_sections:
        raise ValueError(f"{n} samples do not split into {fcfg.n_sections} equal sections")
    return n // fcfg.n_sections


def fft_features(wave, fcfg: FeatureConfig) -> torch.Tensor:
    """(n,) or (B, n) waveform at ``fcfg.sample_rate`` -> (500, 220) or (B, 500, 220) float32 log-magnitudes."""
    x = torch.as_tensor(np.asarray(wave) if not torch.is_tensor(wave) else wave, dtype=torch.float32)
    single = x.ndim == 1
    x = x.unsqueeze(0) if single else x  # (B, n)
    n_total = fcfg.n_sections * section_length(fcfg)
    if x.shape[-1] < n_total:  # zero-pad at the end, crop keeping the start (as load_audio does)
        x = torch.nn.functional.pad(x, (0, n_total - x.shape[-1]))
    x = x[:, :n_total]  # (B, 220500)
    sections = x.reshape(x.shape[0], fcfg.n_sections, -1)  # (B, 500, 441): a view, no copy
    mag = torch.fft.rfft(sections, dim=-1).abs()  # (B, 500, 221): one batched transform
    feats = torch.log(mag[..., 1 : 1 + fcfg.n_bins] + fcfg.log_eps)  # (B, 500, 220): bin 0 = DROPPED_BIN (DC) left out
    return feats[0] if single else feats


def fft_features_loop(wave: np.ndarray, fcfg: FeatureConfig) -> np.ndarray:
    """Reference: the same features, one section at a time with NumPy (for tests and the benchmark)."""
    length = section_length(fcfg)
    n_total = fcfg.n_sections * length
    x = np.zeros(n_total, dtype=np.float32)
    x[: min(len(wave), n_total)] = wave[:n_total]
    out = np.empty((fcfg.n_sections, fcfg.n_bins), dtype=np.float32)
    for s in range(fcfg.n_sections):
        mag = np.abs(np.fft.rfft(x[s * length : (s + 1) * length]))  # (221,)
        out[s] = np.log(np.delete(mag, DROPPED_BIN)[: fcfg.n_bins] + fcfg.log_eps)
    return out


def bin_frequencies(fcfg: FeatureConfig) -> np.ndarray:
    """Centre frequency in Hz of each kept bin: (220,) = 50, 100, ..., 11,000 Hz."""
    length = section_length(fcfg)
    k = np.delete(np.arange(length // 2 + 1), DROPPED_BIN)[: fcfg.n_bins]
    return k * fcfg.sample_rate / length


# ----------------------------------------------------------------------------------------------------------
# Cache: one safetensors file per recording, keyed by its bytes and the feature parameters
# ----------------------------------------------------------------------------------------------------------
def params_key(features_cfg: FeatureConfig) -> str:
    """The cache key of the feature parameters and the code version (``features-v1-<hash>``)."""
    return cache_key("features", FEATURE_VERSION, {**dataclasses.asdict(features_cfg), "dropped_bin": DROPPED_BIN})


def file_key(path: Path) -> str:
    """sha1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_path(path: Path, cfg: Config) -> Path:
    """Where the features of the recording ``path`` are cached: ``features_dir/<params>/<content>.safetensors``."""
    return Path(cfg.features_dir) / params_key(cfg.features) / f"{file_key(path)}.safetensors"


def _save_features(feats: np.ndarray, target: Path) -> None:
    """Write one (500, 220) array as safetensors, atomically."""
    atomic_write(target, lambda tmp: save_file({"features": np.ascontiguousarray(feats)}, tmp))


def _load_cached(target: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The cached (500, 220) features at ``target``; None when missing or damaged (then recomputed)."""
    if not target.is_file():
        return None
    try:
        feats = load_file(target)["features"]
    except (SafetensorError, OSError, KeyError, ValueError):
        return None  # a truncated or foreign file is only a cache miss: it is overwritten below
    if feats.shape != shape or feats.dtype != np.float32 or not np.isfinite(feats).all():
        return None
    return feats


def features_for_file(path: Path, cfg: Config) -> torch.Tensor:
    """(500, 220) features of one recording, from the cache or computed and cached."""
    return features_for_pairs([Path(path)], cfg, progress=False)[0]


def features_for_pairs(pairs, cfg: Config, progress: bool = True, batch_size: int = 32) -> torch.Tensor:
    """(N, 500, 220) features of the pairs' recordings (or paths), cached per file in ``cfg.features_dir``.

    Cache misses are computed ``batch_size`` recordings at a time: one rFFT over (batch, 500, 441).
    (Per-file copies are done in NumPy: small multi-threaded torch copies are slow on a busy 2-core CPU.)
    Each entry is written atomically as soon as its batch is done, so a run killed half-way keeps the entries it
    finished and the next run computes only the rest. Two processes filling the cache at once need no lock: the
    same inputs give the same bytes, and the last rename wins (the work may be done twice, the result is right).
    """
    fcfg = cfg.features
    paths = [Path(getattr(p, "audio_path", p)) for p in pairs]
    targets = [cache_path(p, cfg) for p in paths]
    out = np.empty((len(paths), fcfg.n_sections, fcfg.n_bins), np.float32)
    missing = []
    for i, target in enumerate(targets):
        cached = _load_cached(target, (fcfg.n_sections, fcfg.n_bins))
        if cached is None:
            missing.append(i)
        else:
            out[i] = cached
    if missing:
        remove_stale_temps(targets[missing[0]].parent)  # every entry lives in the one folder of the parameters
    bar = tqdm(total=len(missing), desc="FFT features", disable=not (progress and missing), leave=False,
               mininterval=1.0)
    for start in range(0, len(missing), batch_size):
        idx = missing[start : start + batch_size]
        waves = np.stack([load_audio(paths[i], fcfg.sample_rate, fcfg.duration_s) for i in idx])  # (b, 220500)
        feats = fft_features(waves, fcfg).numpy()  # (b, 500, 220)
        for i, f in zip(idx, feats):
            out[i] = f
            _save_features(f, targets[i])
        bar.update(len(idx))
    bar.close()
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------------------------------------
# Normalisation with training-split statistics
# ----------------------------------------------------------------------------------------------------------
class FeatureNormalizer:
    """Per-bin standardisation, (F - mean[k]) / std[k], with statistics of the training features only."""

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        self.mean = mean
        self.std = std

    def fit(self, train_features: torch.Tensor) -> FeatureNormalizer:
        """Mean and std of each bin over all training recordings and sections; (N, 500, 220) -> (220,)."""
        flat = train_features.reshape(-1, train_features.shape[-1]).double()  # (N * 500, 220)
        self.mean = flat.mean(0).float()
        self.std = flat.std(0).clamp_min(1e-6).float()
        return self

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Normalise (..., 220) features."""
        if self.mean is None:
            raise RuntimeError("FeatureNormalizer: call fit(train_features) or from_state_dict first")
        return (features - self.mean.to(features)) / self.std.to(features)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The statistics as tensors (savable with safetensors)."""
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> FeatureNormalizer:
        """Rebuild from :meth:`state_dict`."""
        return cls(state["mean"].clone(), state["std"].clone())
