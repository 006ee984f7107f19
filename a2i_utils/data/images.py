"""Reading images: one reader for every image file the course opens, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""


def open_image(path: Path) -> Image.Image:
    """Open an image lazily, turning every failure into an :class:`ImageError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes)")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: not a readable image or corrupt data ({err})") from err
    return img


def load_image(path: str | Path, size: int, gray: bool = False) -> np.ndarray:
    """uint8 (size, size) if ``gray`` else (size, size, 3), resized with Lanczos; ImageError if unreadable."""
    img = open_image(Path(path)).convert("L" if gray else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)  # (size, size) or (size, size, 3)
