"""Generic figures shared by the notebooks: image grids, loss curves, spectrograms, saving.

Concern-specific figures (attention masks, similarity matrices) live next to the code they show.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from a2i_utils.io import atomic_write


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    cmap: str | None = None,
    suptitle: str | None = None,
    size: float = 1.6,
) -> plt.Figure:
    """Show images (H, W) or (H, W, 3), uint8 or float in [0, 1], in a grid with optional titles.

    Constrained layout, with room for each row's titles and the suptitle, so no title lands on an image.
    """
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    title_h = 0.3 if titles is not None else 0.05  # inches above each row for its 8-pt titles
    height = nrows * (size + title_h) + (0.5 if suptitle else 0.1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, height), layout="constrained")
    axes = np.atleast_1d(axes).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        img = np.asarray(images[i])
        gray = img.ndim == 2
        ax.imshow(img, cmap=cmap or ("gray" if gray else None), vmin=0, vmax=255 if img.dtype == np.uint8 else 1)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def loss_curve(
    losses: dict[str, Sequence[float]] | Sequence[float],
    title: str = "Training loss",
    ylabel: str = "loss",
    xlabel: str = "step",
    smooth: int = 1,
) -> plt.Figure:
    """Plot one or several loss curves (a moving average of ``smooth`` points when > 1)."""
    curves = losses if isinstance(losses, dict) else {"loss": losses}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        y = np.asarray(values, dtype=float)
        if smooth > 1 and len(y) >= smooth:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(len(y)), y, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def spectrogram_image(ax: plt.Axes, spec_db: np.ndarray, sample_rate: int, duration_s: float, title: str) -> None:
    """Draw a (freq, time) dB spectrogram on ``ax`` with seconds and Hz on the axes."""
    im = ax.imshow(
        spec_db, origin="lower", aspect="auto", cmap="magma",
        extent=(0.0, duration_s, 0.0, sample_rate / 2),
    )
    ax.set(title=title, xlabel="time (s)", ylabel="frequency (Hz)")
    plt.colorbar(im, ax=ax, label="dB")


def save_figure(fig: plt.Figure, path: Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically (temp file, then rename) and return the path."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
