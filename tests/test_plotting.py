"""Generic figures: image grids keep titles off the images, figures are saved as PNG atomically."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from a2i_utils.plotting import image_grid, save_figure


def collisions(fig: plt.Figure) -> list[str]:
    """Every title that overlaps another panel's image, and a suptitle that overlaps any title or image."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.images]
    found = [f"{a.get_title()!r} on image {b.get_title()!r}" for a in axes for b in axes
             if a is not b and a.title.get_window_extent(r).overlaps(b.images[0].get_window_extent(r))]
    titles = [a.title.get_window_extent(r) for a in axes]
    found += [f"titles {i} and {i + 1} overlap" for i in range(len(titles) - 1) if titles[i].overlaps(titles[i + 1])]
    if fig.get_suptitle():
        sup = fig._suptitle.get_window_extent(r)
        found += [f"suptitle on {a.get_title()!r}" for a in axes
                  if sup.overlaps(a.title.get_window_extent(r)) or sup.overlaps(a.images[0].get_window_extent(r))]
    return found


@pytest.mark.parametrize("ncols,n,size", [(10, 20, 1.6), (7, 13, 1.6), (4, 8, 1.6), (13, 13, 1.1)])
def test_image_grid_titles_never_cover_images(ncols, n, size):
    """Notebook 03's two-row grids with a long suptitle: second-row titles used to sit on first-row images."""
    rng = np.random.default_rng(0)
    pics = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(n)]
    titles = [f"from sound {i}" if i >= ncols else f"original {i}" for i in range(n)]
    fig = image_grid(pics, titles, ncols=ncols, size=size,
                     suptitle="(a) fitted to 20 beach pairs: originals (top) and greedy samples (bottom), MAE 5.6")
    try:
        assert collisions(fig) == []
        assert len(fig.axes) == ncols * int(np.ceil(n / ncols))
    finally:
        plt.close(fig)


def test_image_grid_accepts_float_rgb_and_no_titles():
    imgs = [np.random.default_rng(i).random((16, 16, 3)) for i in range(3)]
    fig = image_grid(imgs)
    try:
        assert [ax.images[0].get_array().shape for ax in fig.axes] == [(16, 16, 3)] * 3
        assert collisions(fig) == []
    finally:
        plt.close(fig)


def test_save_figure_writes_png_atomically(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    target = tmp_path / "figs" / "line.png"
    assert save_figure(fig, target) == target
    plt.close(fig)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["line.png"]  # no temporary file left behind
