"""Scene accuracy of generated images: the share classified into their recording's scene, with intervals.

Per recording, the hit rate over its images (several seeds); over recordings, the mean and a percentile
bootstrap 95% interval that resamples recordings (the unit that was drawn), paired when two models are compared
on the same recordings.
"""

from __future__ import annotations

import numpy as np


def hit_rates(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Predicted classes (N, n) and true classes (N,) -> per-recording share of hits (N,)."""
    return (preds == np.asarray(labels)[:, None]).mean(axis=1)


def bootstrap_ci(values: np.ndarray, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (N,), resampling its entries."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=float)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)  # (n_boot,)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def compare(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Per-recording hit rates of two models on the same recordings: means, their CIs, and the paired difference."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return {
        "a": float(a.mean()), "a_ci": bootstrap_ci(a, n_boot, seed),
        "b": float(b.mean()), "b_ci": bootstrap_ci(b, n_boot, seed),
        "diff": float((b - a).mean()), "diff_ci": bootstrap_ci(b - a, n_boot, seed),
        "n": len(a),
    }


def scene_hit_rates(cfg, pipe, classifier, embeds, labels: np.ndarray, prompt: str = "",
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``cfg.soundiff.eval_seeds`` images per embedding (N, D) and judge them with the classifier (the
    images are cached: :func:`a2i_utils.soundiff.generate.generate_cached`).

    Returns (images uint8 (N, n, H, W, 3), per-recording hit rates (N,)). Seeds, steps, guidance and noise level
    come from ``cfg``, so every model is judged on the same draws.
    """
    from a2i_utils.evaluation.scene_classifier import predict
    from a2i_utils.soundiff.generate import generate_cached

    sc = cfg.soundiff
    images = generate_cached(cfg, pipe, embeds, prompt, n=sc.eval_seeds, seed=cfg.seed, steps=sc.sample_steps,
                             guidance=sc.guidance_scale, noise_level=sc.noise_level, progress=progress)
    return images, hit_rates(predict(classifier, images), labels)
