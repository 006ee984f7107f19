"""The figures of notebook 05: the pieces of class_labels, training curves, rows of images, scene accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np


def class_labels_figure(pieces: dict[str, np.ndarray], title: str) -> plt.Figure:
    """One panel per named 1-D vector (the steps from an embedding to class_labels), dimension on the x axis."""
    fig, axes = plt.subplots(len(pieces), 1, figsize=(10, 1.45 * len(pieces)), layout="constrained")
    for ax, (name, vec) in zip(np.atleast_1d(axes), pieces.items()):
        vec = np.asarray(vec, dtype=float)
        ax.plot(np.arange(len(vec)), vec, lw=0.6)
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel("value")
        ax.set_xlim(0, len(vec))
    np.atleast_1d(axes)[-1].set_xlabel("dimension")
    fig.suptitle(title)
    return fig


def curves_figure(histories: dict[str, dict], smooth: int = 20) -> plt.Figure:
    """Loss (moving average of ``smooth`` steps) and learning rate per step of several runs, side by side."""
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    for name, h in histories.items():
        loss = np.asarray(h["loss"], dtype=float)
        k = min(smooth, len(loss))
        ax_loss.plot(np.arange(k - 1, len(loss)), np.convolve(loss, np.ones(k) / k, mode="valid"), label=name)
        ax_lr.plot(np.arange(len(h["lr"])), h["lr"], label=name)
    ax_loss.set(title=f"Training loss (moving average of {smooth} steps)", xlabel="optimiser step",
                ylabel="MSE to the target")
    ax_lr.set(title="Learning rate", xlabel="optimiser step", ylabel="learning rate", yscale="log")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def image_rows(rows: dict[str, Sequence[np.ndarray]], col_titles: Sequence[str], title: str,
               size: float = 1.3) -> plt.Figure:
    """A grid with one named row per model (ground truth first) and one column per recording."""
    n_rows, n_cols = len(rows), len(col_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols + 1.2, size * n_rows + 0.8),
                             layout="constrained", squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(images[c])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_titles[c], fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title)
    return fig


def accuracy_figure(results: dict[str, tuple[float, tuple[float, float]]], chance: float, title: str) -> plt.Figure:
    """Scene accuracy of several conditions with their 95% intervals, and the chance level."""
    names = list(results)
    means = np.array([results[n][0] for n in names])
    lo = means - np.array([results[n][1][0] for n in names])
    hi = np.array([results[n][1][1] for n in names]) - means
    fig, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
    ax.bar(names, means, yerr=[lo, hi], capsize=6, color=[f"C{i}" for i in range(len(names))])
    ax.axhline(chance, color="0.4", ls="--", lw=1, label=f"chance (1/13 = {chance:.3f})")
    ax.set(title=title, ylabel="share of images in the recording's scene", ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    return fig
