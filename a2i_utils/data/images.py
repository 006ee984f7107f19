"""Reading images: one reader for every image file the course opens, with errors that name the file.

:func:`open_image` returns the decoded PIL image or raises :class:`ImageError` naming the file and the problem:

- missing, empty (0 bytes), not an image, truncated or corrupt (``LOAD_TRUNCATED_IMAGES`` stays off: a cut file
  is an error, never a half-grey image) -> ``ImageError``;
- more than ``MAX_IMAGE_PIXELS`` pixels (2**26, 67 Mpx: at most 8192 x 8192; ADVANCE's are 512 x 512)
  -> ``ImageError`` with its size, read from the header before any pixel is decoded: a 20,000 x 20,000 photo
  or a decompression bomb (a small file declaring huge dimensions) is refused without allocating its pixels.

:func:`load_image` turns any mode into 8-bit RGB (or gray): palette (with or without transparency), 1-bit,
gray, CMYK through Pillow's conversions; alpha is dropped (the stored colours, not composited on a background);
16-bit images (``I;16``, and ``I`` as 16-bit PNG/TIFF hold it) are scaled to 8 bits (value / 257, clipped to
0-65535), not clipped at 255; 32-bit float (``F``) images as Pillow converts them (values clipped to 0-255).
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 2**26  # 67 Mpx, 8192 x 8192 (256 MiB as RGBA); Pillow's bomb limits: 89 Mpx warns, 179 Mpx raises
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
                 struct.error, MemoryError, Image.DecompressionBombError)  # what Pillow raises on hostile files


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""


def open_image(path: Path) -> Image.Image:
    """Open and decode an image, turning every failure into an :class:`ImageError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit below is the lower one
            img = Image.open(path)
        _check_size(path, img)
        img.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as err:  # over Pillow's limit (179 Mpx), raised by Image.open itself
        raise ImageError(f"{path}: over the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx ({err})") from err
    except DECODE_ERRORS as err:
        raise ImageError(f"{path}: not a readable image or corrupt data ({type(err).__name__}: {err})") from err
    return img


def _check_size(path: Path, img: Image.Image) -> None:
    """Refuse an image whose header declares more than ``MAX_IMAGE_PIXELS`` pixels (before decoding them)."""
    w, h = img.size
    if w * h > MAX_IMAGE_PIXELS:
        img.close()
        raise ImageError(f"{path}: {w} x {h} pixels ({w * h / 1e6:.0f} Mpx) is over the limit of "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx; resize it first")


def as_8bit(img: Image.Image) -> Image.Image:
    """16-bit gray images scaled to 8-bit gray (value / 257); every other mode unchanged."""
    if img.mode not in SIXTEEN_BIT_MODES:
        return img
    x = np.clip(np.asarray(img).astype(np.float32), 0, 65535)  # (H, W)
    return Image.fromarray(np.round(x / 257).astype(np.uint8))


def load_image(path: str | Path, size: int, gray: bool = False) -> np.ndarray:
    """uint8 (size, size) if ``gray`` else (size, size, 3), resized with Lanczos; ImageError if unreadable."""
    path = Path(path)
    try:
        img = as_8bit(open_image(path)).convert("L" if gray else "RGB")
    except ImageError:
        raise
    except DECODE_ERRORS as err:  # a conversion Pillow cannot do
        raise ImageError(f"{path}: cannot convert the image to 8-bit ({type(err).__name__}: {err})") from err
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)  # (size, size) or (size, size, 3)
