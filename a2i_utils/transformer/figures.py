"""Figures of the pixel transformer (kept apart from the model code): masks, the architecture, loss curves."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from a2i_utils.config import TransformerConfig
from a2i_utils.transformer.model import causal_mask, local_attention_mask, window_start


def plot_attention_masks(T: int = 256, block_len: int = 64, mem_len: int = 64) -> plt.Figure:
    """Draw the local 1D mask next to the full causal mask for a sequence of T positions."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    masks = {
        f"local 1D (block {block_len}, memory {mem_len})": local_attention_mask(T, block_len, mem_len),
        "full causal": causal_mask(T),
    }
    for ax, (title, mask) in zip(axes, masks.items()):
        ax.imshow(mask.numpy(), cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
        share = mask.float().mean().item()
        ax.set(title=f"{title}\n{share:.0%} of the T x T pairs", xlabel="key position (pixel index)",
               ylabel="query position (pixel index)")
        for edge in range(block_len, T, block_len):
            if "local" in title:
                ax.axhline(edge - 0.5, color="tab:orange", lw=0.6)
    fig.suptitle(f"Which earlier pixels each pixel attends to (T = {T})")
    fig.tight_layout()
    return fig


# Colours of the attention-window picture: not visible, memory, own block (earlier), the query, later pixels.
_WINDOW_COLOURS = ["#eeeeee", "#9ecae1", "#3182bd", "#e6550d", "#ffffff"]
_WINDOW_LABELS = ["earlier, not visible", "memory (mem_len before the block)", "own block, up to the query",
                  "the query pixel", "later pixels (not drawn yet)"]


def attention_window_codes(side: int, block_len: int, mem_len: int, pos: int) -> np.ndarray:
    """(side, side) codes 0..4 of what the query pixel ``pos`` sees (see ``_WINDOW_LABELS``), row by row."""
    p = np.arange(side * side)
    b0 = (pos // block_len) * block_len
    codes = np.zeros(side * side, int)  # 0: earlier, not visible
    codes[(p >= window_start(pos, block_len, mem_len)) & (p < b0)] = 1  # memory
    codes[(p >= b0) & (p < pos)] = 2  # own block, before the query
    codes[p == pos] = 3
    codes[p > pos] = 4
    return codes.reshape(side, side)  # (H, W)


def plot_attention_window(side: int, block_len: int, mem_len: int, positions: Sequence[int]) -> plt.Figure:
    """On the image grid: which pixels a query pixel attends to under local 1D attention, for a few queries."""
    fig, axes = plt.subplots(1, len(positions), figsize=(3.6 * len(positions), 4.6), layout="constrained")
    axes = np.atleast_1d(axes)
    cmap = ListedColormap(_WINDOW_COLOURS)
    for ax, pos in zip(axes, positions):
        ax.imshow(attention_window_codes(side, block_len, mem_len, pos), cmap=cmap, vmin=-0.5, vmax=4.5)
        ax.set_xticks(np.arange(-0.5, side, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, side, 1), minor=True)
        ax.grid(which="minor", color="#bbbbbb", lw=0.3)
        ax.tick_params(which="minor", length=0)
        ax.set(title=f"query {pos}: row {pos // side}, column {pos % side}", xlabel="column (pixel)",
               ylabel="row (pixel)")
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c, ec="#888888") for c in _WINDOW_COLOURS]
    fig.legend(handles, _WINDOW_LABELS, loc="outside lower center", ncol=3, fontsize=8)
    fig.suptitle(f"Local 1D attention on a {side}x{side} image: blocks of {block_len} pixels, "
                 f"memory of {mem_len}", fontsize=11)
    return fig


def _box(ax: plt.Axes, xy: tuple[float, float], w: float, h: float, text: str, colour: str) -> None:
    """A rounded box with centred text."""
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=colour, ec="#444444"))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=8.5)


def _arrow(ax: plt.Axes, a: tuple[float, float], b: tuple[float, float], colour: str = "#444444") -> None:
    """An arrow from a to b."""
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color=colour, lw=1.2))


def plot_architecture(tcfg: TransformerConfig, n_sections: int = 500, n_bins: int = 220) -> plt.Figure:
    """A diagram of the encoder-decoder: audio features in, pixel logits out, cross-attention between them."""
    fig, ax = plt.subplots(figsize=(11, 5.8))
    ax.set(xlim=(0, 11), ylim=(0, 7.4))
    ax.axis("off")
    n_px, d = tcfg.image_size**2, tcfg.d_model
    enc, dec = "#dbe9f6", "#fde0c5"
    # encoder column (left)
    _box(ax, (0.1, 0.3), 4.0, 0.8, f"audio features ({n_sections} sections x {n_bins} bins)", "#eeeeee")
    _box(ax, (0.1, 1.6), 4.0, 0.8, f"linear {n_bins} -> {d} + sinusoidal positions", enc)
    _box(ax, (0.1, 2.9), 4.0, 1.6, f"x {tcfg.n_enc_layers} encoder layers:\nfull self-attention over\n"
         f"the {n_sections} sections + feed-forward", enc)
    _box(ax, (0.1, 5.0), 4.0, 0.8, f"encoder output ({n_sections} x {d})", enc)
    for y0, y1 in ((1.1, 1.6), (2.4, 2.9), (4.5, 5.0)):
        _arrow(ax, (2.1, y0), (2.1, y1))
    # decoder column (right)
    _box(ax, (5.7, 0.3), 4.6, 0.8, f"start token + pixels 0 .. {n_px - 2} (shifted right)", "#eeeeee")
    _box(ax, (5.7, 1.6), 4.6, 0.8, f"token embedding (258 rows) + positions, {d}-d", dec)
    _box(ax, (5.7, 2.9), 4.6, 0.7, f"local 1D causal self-attention (block {tcfg.block_len}, memory "
         f"{tcfg.mem_len})", dec)
    _box(ax, (5.7, 3.9), 4.6, 0.7, "cross-attention: queries = self-attention output", dec)
    _box(ax, (5.7, 4.9), 4.6, 0.5, "feed-forward", dec)
    _box(ax, (5.7, 5.8), 4.6, 0.8, f"head: 256 logits for each of pixels 0 .. {n_px - 1}", "#eeeeee")
    ax.plot([10.45, 10.55, 10.55, 10.45], [2.9, 2.9, 5.4, 5.4], color="#444444", lw=1)
    ax.text(10.62, 4.15, f"x {tcfg.n_dec_layers}", fontsize=11, va="center")
    for y0, y1 in ((1.1, 1.6), (2.4, 2.9), (3.6, 3.9), (4.6, 4.9), (5.4, 5.8)):
        _arrow(ax, (8.0, y0), (8.0, y1))
    _arrow(ax, (4.1, 5.4), (5.7, 4.25), colour="tab:red")
    ax.text(4.95, 5.45, "keys, values\n(once per image)", color="tab:red", fontsize=8.5, ha="center")
    ax.text(2.1, 6.6, "ENCODER: reads the sound", ha="center", fontsize=11, weight="bold")
    ax.text(8.0, 6.95, "DECODER: writes the image, one pixel per step", ha="center", fontsize=11, weight="bold")
    ax.set_title("The pixel transformer (pre-norm layers; residual connections not drawn)")
    return fig


def centred_mean(values: Sequence[float], window: int) -> tuple[np.ndarray, np.ndarray]:
    """Moving average over ``window`` steps, each drawn at the centre of its window: (steps, means), from step 1."""
    y = np.asarray(values, dtype=float)
    if window <= 1 or len(y) < window:
        return np.arange(1, len(y) + 1), y
    means = np.convolve(y, np.ones(window) / window, mode="valid")  # (N - window + 1,)
    return np.arange(window, len(y) + 1) - (window - 1) / 2, means  # window [s - w + 1, s] drawn at its middle


def plot_loss_curves(runs: dict[str, Sequence[float]], window: int, heldout: dict[str, Sequence] | None = None,
                     ylabel: str = "cross-entropy (bits/pixel)") -> plt.Figure:
    """One panel per run: the per-step loss (thin), its ``window``-step moving average (thick), held-out points.

    Losses are given in nats/pixel and drawn in bits (divided by ln 2); ``heldout`` holds (step, bits) pairs.
    The panels share both axes: optimiser steps from 1, each average drawn at the centre of its window."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.6 * len(runs), 3.8), sharex=True, sharey=True,
                             layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, (name, losses) in zip(axes, runs.items()):
        bits = np.asarray(losses, dtype=float) / math.log(2)
        ax.plot(np.arange(1, len(bits) + 1), bits, color="tab:blue", lw=0.5, alpha=0.35, label="training, per step")
        x, y = centred_mean(bits, window)
        ax.plot(x, y, color="tab:blue", lw=1.8, label=f"training, moving average of {window} steps")
        if heldout and heldout.get(name):
            hx, hy = zip(*heldout[name])
            ax.plot(hx, hy, "o-", color="tab:red", ms=4, lw=1.2, label="held-out recordings")
        ax.set(title=name, xlabel="optimiser step", xlim=(0, max(len(v) for v in runs.values()) + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(ylabel)
    return fig
