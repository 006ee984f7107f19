"""Figures of the pixel transformer (kept apart from the model code)."""

from __future__ import annotations

import matplotlib.pyplot as plt

from a2i_utils.transformer.model import causal_mask, local_attention_mask


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
