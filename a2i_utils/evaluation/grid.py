"""The comparison grid (the paper's Table 1): held-out recordings as rows, systems as columns, ground truth beside.

Every column draws with the same seed for a row, so columns differ only by the system and the prompt. A column
can be marked (a coloured frame and a note in its title), for images that are not what the others are: the
pixel transformer's grayscale samples, upscaled to the grid's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

MARK_COLOR = "tab:orange"


def pick_rows(pairs: Sequence, scenes: Sequence[str], per_scene: int = 1) -> list[int]:
    """Indices of the first ``per_scene`` pairs of each scene in ``scenes`` (scenes with none are skipped)."""
    out = []
    for scene in scenes:
        out += [i for i, p in enumerate(pairs) if p.label == scene][:per_scene]
    return out


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """Grayscale (N, h, w) or RGB (N, h, w, 3) uint8 -> RGB (N, size, size, 3), nearest neighbour (pixels visible)."""
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)  # (N, h, w, 3)
    reps = size // images.shape[1]
    if reps * images.shape[1] != size:
        raise ValueError(f"upscale: {images.shape[1]} px does not divide {size} px")
    return images.repeat(reps, axis=1).repeat(reps, axis=2)  # (N, size, size, 3)


def grid_figure(gt: np.ndarray, columns: Sequence[tuple[str, np.ndarray]], row_labels: Sequence[str],
                marked: Sequence[str] = (), title: str = "", cell: float = 1.25):
    """Ground truth (R, H, W, 3) first, then each (label, images (R, H, W, 3)) column; ``marked`` labels framed."""
    n_rows, n_cols = len(gt), len(columns) + 1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + 1.2, cell * n_rows + 0.9), squeeze=False,
                             constrained_layout=True)
    cols = [("ground truth", gt)] + list(columns)
    for j, (name, imgs) in enumerate(cols):
        for i in range(n_rows):
            ax = axes[i, j]
            ax.imshow(imgs[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if name in marked:
                for s in ax.spines.values():
                    s.set_edgecolor(MARK_COLOR)
                    s.set_linewidth(2.5)
            if i == 0:
                ax.set_title(name.replace(" + ", "\n+ "), fontsize=7, color=MARK_COLOR if name in marked else "k")
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
