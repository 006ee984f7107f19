"""A synthetic soundscape world shaped like ADVANCE: 13 scenes, each with a look and a sound you recognise.

:func:`write_tree` writes ``vision/<class>/<id>.jpg`` (RGB JPEG, any size up to 512 and more) and
``sound/<class>/<id>.wav`` (10 s, 16-bit PCM), ids ``<5 digits>`` and ``<id>_<k>`` (a ``_k`` pair reuses the
recording of its base id with another view of the same place, as in ADVANCE), plus ``synthetic.json``
with the parameters of every pair.

Every scene draws its layout, colours, pitch, timing and loudness from a generator seeded by
``(seed, class, pair)``: the same seed gives the same bytes, two pairs of a class always differ. About one
recording in six is made hard on purpose: ``noisy`` (broadband noise at 0-6 dB SNR), ``quiet`` (-30 dB) or
``mixed`` (another scene's sound on top), and every recording has some background noise.

| scene | image | sound |
| --- | --- | --- |
| airport | grey runways with centre dashes, terminal, planes | jet roar swelling in a fly-by, turbine whine |
| beach | sand / water boundary, surf foam lines | breaking waves every few seconds, gulls |
| bridge | river crossed by a road bridge | traffic hum, cars with expansion-joint thumps |
| farmland | patchwork of striped rectangular fields | tractor engine (low harmonics), wind |
| forest | dense dark-green tree crowns | birdsong (fast chirps 2-6 kHz), rustling |
| grassland | smooth light green / yellow meadow, a track | crickets (pulsed 4-5 kHz), wind |
| harbour | quay, piers, boats, coloured containers | ship horn, lapping water, gulls |
| lake | irregular lake in green land, reedy shore | frogs croaking, gentle water |
| orchard | regular rows of round trees on bare soil | bees buzzing (~220 Hz), a bird |
| residential | street grid, roofs in rows, gardens | traffic, voices, a dog |
| sparse shrub land | ochre ground with scattered shrubs | gusting wind, whistling, near silence |
| sports land | pitch with white lines, red running track | crowd and cheers, referee whistle, kicks |
| train station | parallel tracks, platforms, a train | train rumble, wheel clacks, horn, chime |
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageFilter
from tqdm.auto import tqdm

from a2i_utils.data.classes import CLASSES

SYNTH_VERSION = 3  # bump when the generator changes: trees are cached under a name that includes it
HARD_KINDS = ("noisy", "quiet", "mixed")
HARD_FRACTION = 1 / 6
K_FRACTION = 0.25  # share of places that get extra `_k` views sharing their recording


# ==========================================================================================================
# Image primitives: float (S, S, 3) canvases in [0, 1], shapes in units of the image side
# ==========================================================================================================
def _jitter(rng: np.random.Generator, rgb, amount: float = 0.05) -> np.ndarray:
    """A colour near ``rgb``."""
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.normal(0, amount, 3), 0, 1).astype(np.float32)


def _coords(S: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates x, y in [0, 1), each (S, S)."""
    y, x = np.mgrid[0:S, 0:S].astype(np.float32)
    return (x + 0.5) / S, (y + 0.5) / S


def _rotate(x, y, angle: float, cx: float = 0.5, cy: float = 0.5):
    """Coordinates (u along ``angle``, v across it) relative to (cx, cy)."""
    c, s = np.cos(angle), np.sin(angle)
    return (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c


def _noise(rng: np.random.Generator, S: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Smooth fractal value noise (S, S) in [0, 1]: random grids upsampled bicubically, summed over octaves."""
    out = np.zeros((S, S), np.float32)
    for o in range(octaves):
        n = max(2, cells * 2**o)
        small = Image.fromarray(rng.random((n, n), dtype=np.float32), mode="F")
        out += 0.5**o * np.asarray(small.resize((S, S), Image.Resampling.BICUBIC), np.float32)
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _blend(img: np.ndarray, mask: np.ndarray, colour) -> None:
    """Paint ``colour`` ((3,) or (S, S, 3)) onto ``img`` where ``mask`` (bool or [0, 1] floats) says so."""
    m = mask.astype(np.float32)[..., None]
    img *= 1 - m
    img += m * np.asarray(colour, np.float32)


def _texture(img: np.ndarray, rng: np.random.Generator, amount: float, cells: int = 16) -> None:
    """Multiply brightness by a noise texture of relative strength ``amount``."""
    img *= (1 + amount * (_noise(rng, img.shape[0], cells, 3) - 0.5))[..., None]


def _box(S: int, cx: float, cy: float, r: float):
    """Pixel bounds of a square of half-side ``r`` around (cx, cy), clipped; None if empty."""
    x0, x1 = max(0, int((cx - r) * S)), min(S, int((cx + r) * S) + 1)
    y0, y1 = max(0, int((cy - r) * S)), min(S, int((cy + r) * S) + 1)
    return (x0, x1, y0, y1) if x0 < x1 and y0 < y1 else None


def _rect(img, cx, cy, w, h, angle, colour) -> None:
    """A filled rectangle (w along ``angle``, h across), drawn only in its bounding box."""
    S = img.shape[0]
    b = _box(S, cx, cy, 0.5 * np.hypot(w, h))
    if b is None:
        return
    x0, x1, y0, y1 = b
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u, v = _rotate((xs + 0.5) / S, (ys + 0.5) / S, angle, cx, cy)
    m = (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)
    img[y0:y1, x0:x1][m] = colour


def _disc(img, cx, cy, r, colour, shade: float = 0.0) -> None:
    """A filled disc, lit from the upper left when ``shade`` > 0 (a tree crown, a bush)."""
    S = img.shape[0]
    b = _box(S, cx, cy, r)
    if b is None:
        return
    x0, x1, y0, y1 = b
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = (xs + 0.5) / S - cx, (ys + 0.5) / S - cy
    m = dx * dx + dy * dy <= r * r
    light = 1 - shade * (0.5 + 0.5 * (dx + dy) / max(r, 1e-6))  # (h, w): darker towards the lower right
    img[y0:y1, x0:x1][m] = (np.asarray(colour)[None, None, :] * light[..., None])[m]


def _line_mask(v, offset: float, width: float):
    """Pixels within ``width / 2`` of the line v = offset (in rotated coordinates)."""
    return np.abs(v - offset) <= width / 2


# ==========================================================================================================
# The 13 scenes as images
# ==========================================================================================================
def img_airport(rng, S):
    """Grey runways with white centre dashes and threshold stripes, a terminal and parked planes."""
    x, y = _coords(S)
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.50, 0.55, 0.38))
    _blend(img, _noise(rng, S, 3) > 0.55, _jitter(rng, (0.42, 0.50, 0.30)))
    _texture(img, rng, 0.25)
    angle = rng.uniform(0, np.pi)
    u, v = _rotate(x, y, angle)
    offsets = [rng.uniform(-0.2, 0.2)]
    if rng.random() < 0.5:
        offsets.append(offsets[0] + rng.choice([-1, 1]) * rng.uniform(0.18, 0.28))
    asphalt = _jitter(rng, (0.30, 0.30, 0.32), 0.03)
    for off in offsets:
        w = rng.uniform(0.07, 0.1)
        length = rng.uniform(0.42, 0.5)
        runway = _line_mask(v, off, w) & (np.abs(u) < length)
        img[runway] = asphalt
        dashes = _line_mask(v, off, max(0.008, 1.2 / S)) & ((u * 14) % 1 < 0.5) & (np.abs(u) < length - 0.06)
        img[dashes] = 0.95
        keys = (np.abs(np.abs(u) - (length - 0.025)) < 0.02) & _line_mask(v, off, w * 0.8) & ((v * 40) % 1 < 0.5)
        img[keys] = 0.92
    taxi = _line_mask(v, offsets[0] + 0.09, 0.025) & (np.abs(u) < 0.4)
    img[taxi] = asphalt * 1.2
    side = 1 if offsets[0] < 0 else -1
    tx, ty = 0.5 + side * 0.3 * -np.sin(angle), 0.5 + side * 0.3 * np.cos(angle)
    _rect(img, tx, ty, rng.uniform(0.3, 0.45), rng.uniform(0.08, 0.12), angle, _jitter(rng, (0.82, 0.82, 0.85), 0.03))
    for _ in range(rng.integers(2, 6)):
        px = tx + rng.uniform(-0.2, 0.2) * np.cos(angle) - side * 0.1 * -np.sin(angle)
        py = ty + rng.uniform(-0.2, 0.2) * np.sin(angle) - side * 0.1 * np.cos(angle)
        a = angle + np.pi / 2 + rng.normal(0, 0.2)
        _rect(img, px, py, 0.07, 0.014, a, 0.97)  # fuselage
        _rect(img, px, py, 0.014, 0.07, a, 0.97)  # wings
    return img


def img_beach(rng, S):
    """Sand against water along a wavy shore, white surf lines, a few parasols."""
    x, y = _coords(S)
    u, v = _rotate(x, y, rng.uniform(0, 2 * np.pi))
    shore = rng.uniform(-0.2, 0.2) + rng.uniform(0.02, 0.06) * np.sin(u * rng.uniform(6, 14) + rng.uniform(0, 6))
    d = v - shore  # (S, S): > 0 in the water
    sand = np.empty((S, S, 3), np.float32)
    sand[:] = _jitter(rng, (0.87, 0.78, 0.58), 0.04)
    _texture(sand, rng, 0.15, cells=24)
    shallow, deep = _jitter(rng, (0.30, 0.72, 0.75), 0.04), _jitter(rng, (0.05, 0.25, 0.50), 0.04)
    depth = np.clip(d / rng.uniform(0.25, 0.5), 0, 1)[..., None]
    water = shallow * (1 - depth) + deep * depth
    img = np.where((d > 0)[..., None], water, sand).astype(np.float32)
    foam_noise = _noise(rng, S, 12, 2)
    for dist, width in [(0.0, 0.025), (rng.uniform(0.05, 0.09), 0.015), (rng.uniform(0.12, 0.18), 0.01)]:
        band = (np.abs(d - dist) < width) & (foam_noise > 0.25)
        _blend(img, band, (0.96, 0.97, 0.97))
    for _ in range(rng.integers(0, 6)):
        px, py = rng.random(2)
        if d[min(S - 1, int(py * S)), min(S - 1, int(px * S))] < -0.05:  # parasols on the sand only
            colours = [(0.9, 0.2, 0.2), (0.2, 0.4, 0.9), (0.95, 0.8, 0.1)]
            _disc(img, px, py, 0.012, _jitter(rng, colours[rng.integers(3)]))
    return img


def img_bridge(rng, S):
    """A river crossing the image and a road bridge over it, with its shadow on the water."""
    x, y = _coords(S)
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.40, 0.50, 0.30))
    _blend(img, _noise(rng, S, 4) > 0.6, _jitter(rng, (0.62, 0.58, 0.45)))
    _texture(img, rng, 0.3)
    angle = rng.uniform(0, np.pi)
    u, v = _rotate(x, y, angle)
    width = rng.uniform(0.18, 0.3)
    bank = rng.uniform(-0.1, 0.1) + 0.02 * np.sin(u * rng.uniform(4, 9) + rng.uniform(0, 6))
    river = np.abs(v - bank) < width / 2
    water = _jitter(rng, (0.12, 0.28, 0.35), 0.04)
    img[river] = water
    img[(np.abs(v - bank) < width / 2 + 0.015) & ~river] = _jitter(rng, (0.55, 0.52, 0.40))
    for _ in range(1 if rng.random() < 0.7 else 2):
        along = rng.uniform(-0.3, 0.3)
        cross = np.pi / 2 + rng.normal(0, 0.15)
        bu, bv = _rotate(x, y, angle + cross, 0.5 + along * np.cos(angle), 0.5 + along * np.sin(angle))
        bw = rng.uniform(0.035, 0.055)
        shadow = _line_mask(bv, bw * 0.9, bw) & river
        img[shadow] = water * 0.45
        deck = _line_mask(bv, 0, bw)
        img[deck] = _jitter(rng, (0.68, 0.68, 0.66), 0.03)
        img[_line_mask(bv, 0, max(0.004, 1.0 / S)) & ((bu * 25) % 1 < 0.5)] = 0.95
    return img


def img_farmland(rng, S):
    """A patchwork of rectangular fields, each with its own crop colour and row direction, and hedges."""
    x, y = _coords(S)
    angle = rng.normal(0, 0.25)
    u, v = _rotate(x, y, angle)
    cu = np.sort(rng.uniform(-0.6, 0.6, rng.integers(2, 5)))
    cv = np.sort(rng.uniform(-0.6, 0.6, rng.integers(2, 5)))
    iu, iv = np.searchsorted(cu, u), np.searchsorted(cv, v)  # (S, S) field indices
    field_id = iu * 10 + iv
    palette = [(0.45, 0.62, 0.25), (0.80, 0.72, 0.35), (0.55, 0.42, 0.28), (0.62, 0.75, 0.35), (0.35, 0.50, 0.20)]
    img = np.zeros((S, S, 3), np.float32)
    for fid in np.unique(field_id):
        m = field_id == fid
        colour = _jitter(rng, palette[rng.integers(len(palette))], 0.05)
        rows_angle = rng.choice([0, np.pi / 2]) + angle
        ru, _ = _rotate(x, y, rows_angle)
        stripes = 1 + rng.uniform(0.08, 0.2) * np.sin(ru * np.pi * 2 * rng.uniform(25, 45))
        img[m] = colour * stripes[m][:, None]
    _texture(img, rng, 0.15)
    hedge = np.zeros((S, S), bool)
    for c in cu:
        hedge |= np.abs(u - c) < 0.006
    for c in cv:
        hedge |= np.abs(v - c) < 0.006
    img[hedge] = _jitter(rng, (0.22, 0.32, 0.15), 0.03)
    return img


def img_forest(rng, S):
    """Dense overlapping tree crowns in dark greens, lit from one side, with dark gaps."""
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.08, 0.16, 0.07), 0.02)
    base = _jitter(rng, (0.18, 0.36, 0.15), 0.04)
    n = int(rng.uniform(220, 320))
    for cx, cy, r in zip(rng.random(n), rng.random(n), rng.uniform(0.025, 0.05, n)):
        _disc(img, cx, cy, r, _jitter(rng, base, 0.04), shade=0.55)
    _texture(img, rng, 0.35, cells=20)
    return img


def img_grassland(rng, S):
    """A smooth, low-contrast meadow in light greens and straw yellows, sometimes with a dirt track."""
    x, y = _coords(S)
    green, straw = _jitter(rng, (0.55, 0.68, 0.33), 0.04), _jitter(rng, (0.78, 0.75, 0.45), 0.04)
    mix = _noise(rng, S, 3, 3)[..., None]
    img = (green * (1 - mix) + straw * mix).astype(np.float32)
    _texture(img, rng, 0.12, cells=40)
    if rng.random() < 0.6:
        u, v = _rotate(x, y, rng.uniform(0, np.pi))
        track = np.abs(v - rng.uniform(-0.3, 0.3) - 0.05 * np.sin(u * rng.uniform(3, 8))) < 0.008
        _blend(img, track, _jitter(rng, (0.70, 0.62, 0.48), 0.03))
    return img


def img_harbour(rng, S):
    """Concrete quay with coloured containers, piers into the water, moored boats."""
    x, y = _coords(S)
    angle = rng.uniform(0, 2 * np.pi)
    u, v = _rotate(x, y, angle)
    edge = rng.uniform(-0.15, 0.1)
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.10, 0.25, 0.38), 0.04)
    _texture(img, rng, 0.15, cells=8)
    land = v < edge
    img[land] = _jitter(rng, (0.62, 0.62, 0.60), 0.03)
    c, s = np.cos(angle), np.sin(angle)

    def at(a, b):  # rotated (u, v) -> image (x, y)
        return 0.5 + a * c - b * s, 0.5 + a * s + b * c

    for a in np.arange(-0.45, 0.45, rng.uniform(0.12, 0.2)) + rng.uniform(0, 0.05):
        length = rng.uniform(0.15, 0.3)
        px, py = at(a, edge + length / 2)
        _rect(img, px, py, 0.03, length, angle, _jitter(rng, (0.70, 0.70, 0.68), 0.02))
        for side in (-1, 1):
            if rng.random() < 0.7:
                bx, by = at(a + side * 0.04, edge + rng.uniform(0.05, length))
                _rect(img, bx, by, 0.025, 0.06, angle, _jitter(rng, (0.95, 0.95, 0.95), 0.03))
    colours = [(0.75, 0.15, 0.12), (0.15, 0.30, 0.70), (0.90, 0.55, 0.10), (0.20, 0.55, 0.30), (0.85, 0.85, 0.2)]
    for a in np.arange(-0.45, 0.45, 0.035):
        for b in np.arange(edge - 0.06, edge - 0.35, -0.03):
            if rng.random() < 0.7:
                cx_, cy_ = at(a, b)
                _rect(img, cx_, cy_, 0.03, 0.02, angle, _jitter(rng, colours[rng.integers(len(colours))], 0.04))
    return img


def img_lake(rng, S):
    """A single irregular lake with a reedy shore in green land, trees along part of the shore."""
    x, y = _coords(S)
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.42, 0.55, 0.28), 0.04)
    _texture(img, rng, 0.3)
    cx, cy = rng.uniform(0.35, 0.65, 2)
    r0, amps, phases = rng.uniform(0.22, 0.34), rng.uniform(0, 0.18, 3), rng.uniform(0, 2 * np.pi, 3)

    def radius(theta):  # lake outline in polar coordinates around (cx, cy)
        return r0 * (1 + sum(a * np.sin(k * theta + p) for k, a, p in zip((2, 3, 4), amps, phases)))

    theta = np.arctan2(y - cy, x - cx)
    dist = np.hypot(x - cx, y - cy) - radius(theta)  # (S, S): < 0 inside
    img[dist < 0.02] = _jitter(rng, (0.48, 0.50, 0.30), 0.03)  # reedy shore
    for a in rng.uniform(0, 2 * np.pi, rng.integers(10, 30)):  # trees along part of the shore
        rr = radius(a) + rng.uniform(0.04, 0.08)
        _disc(img, cx + rr * np.cos(a), cy + rr * np.sin(a), 0.025, _jitter(rng, (0.15, 0.30, 0.12)), shade=0.5)
    deep, shallow = _jitter(rng, (0.06, 0.18, 0.30), 0.03), _jitter(rng, (0.15, 0.35, 0.38), 0.03)
    t = np.clip(-dist / 0.1, 0, 1)[..., None]
    water = shallow * (1 - t) + deep * t
    inside = dist < 0
    img[inside] = water[inside]
    return img


def img_orchard(rng, S):
    """Regular rows of round trees with shadows on bare or grassy soil."""
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, rng.choice([(0.62, 0.52, 0.38), (0.55, 0.60, 0.38)]), 0.04)
    _texture(img, rng, 0.2)
    angle = rng.normal(0, 0.3)
    step_u, step_v = rng.uniform(0.06, 0.09), rng.uniform(0.05, 0.08)
    r = min(step_u, step_v) * rng.uniform(0.3, 0.42)
    crown = _jitter(rng, (0.20, 0.42, 0.16), 0.04)
    c, s = np.cos(angle), np.sin(angle)
    for a in np.arange(-0.8, 0.8, step_u):
        for b in np.arange(-0.8, 0.8, step_v):
            if rng.random() < 0.06:
                continue  # a missing tree
            a_, b_ = a + rng.normal(0, 0.004), b + rng.normal(0, 0.004)
            px, py = 0.5 + a_ * c - b_ * s, 0.5 + a_ * s + b_ * c
            if -0.05 < px < 1.05 and -0.05 < py < 1.05:
                _disc(img, px + r * 0.35, py + r * 0.35, r, np.asarray(img[0, 0]) * 0.45)  # shadow
                _disc(img, px, py, r, _jitter(rng, crown, 0.03), shade=0.5)
    return img


def img_residential(rng, S):
    """A street grid with rows of houses: two-tone pitched roofs in reds and greys, small gardens."""
    x, y = _coords(S)
    angle = rng.normal(0, 0.3)
    u, v = _rotate(x, y, angle)
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.38, 0.52, 0.28), 0.04)
    _texture(img, rng, 0.25)
    block_u, block_v = rng.uniform(0.22, 0.32), rng.uniform(0.18, 0.26)
    road = rng.uniform(0.025, 0.035)
    streets = (((u + 0.5) % block_u) < road) | (((v + 0.5) % block_v) < road)
    img[streets] = _jitter(rng, (0.45, 0.45, 0.46), 0.03)
    roofs = [(0.65, 0.25, 0.18), (0.55, 0.30, 0.22), (0.45, 0.45, 0.48), (0.75, 0.45, 0.30), (0.30, 0.30, 0.33)]
    c, s = np.cos(angle), np.sin(angle)
    hw, hh = rng.uniform(0.045, 0.06), rng.uniform(0.05, 0.07)
    for bu in np.arange(-1.0, 1.0, block_u):
        for bv in np.arange(-1.0, 1.0, block_v):
            for row in (0.3, 0.72):
                for a in np.arange(bu + road + 0.035, bu + block_u - 0.03, hw + 0.02):
                    b = bv + road + row * (block_v - road)
                    px, py = 0.5 + a * c - b * s, 0.5 + a * s + b * c
                    if not (-0.1 < px < 1.1 and -0.1 < py < 1.1) or rng.random() < 0.08:
                        continue
                    colour = _jitter(rng, roofs[rng.integers(len(roofs))], 0.04)
                    _rect(img, px, py, hw, hh, angle, colour)
                    ox, oy = -s * hh / 4, c * hh / 4
                    _rect(img, px + ox, py + oy, hw, hh / 2, angle, colour * 0.72)  # the roof's shaded side
    return img


def img_sparse_shrub_land(rng, S):
    """Dry ochre ground with faint erosion texture and scattered small dark shrubs."""
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.76, 0.64, 0.46), 0.05)
    _blend(img, 0.5 * (_noise(rng, S, 5) > 0.6), _jitter(rng, (0.86, 0.78, 0.62), 0.03))
    _texture(img, rng, 0.22, cells=30)
    n = int(rng.uniform(25, 90))
    shrub = _jitter(rng, (0.33, 0.36, 0.20), 0.04)
    for cx, cy, r in zip(rng.random(n), rng.random(n), rng.uniform(0.006, 0.018, n)):
        _disc(img, cx + r * 0.4, cy + r * 0.4, r, img[0, 0] * 0.6)
        _disc(img, cx, cy, r, _jitter(rng, shrub, 0.03), shade=0.4)
    return img


def img_sports_land(rng, S):
    """A striped grass pitch with white markings inside a red running track, sometimes a tennis court."""
    x, y = _coords(S)
    angle = rng.normal(0, 0.4)
    cx, cy = rng.uniform(0.4, 0.6, 2)
    u, v = _rotate(x, y, angle, cx, cy)
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.45, 0.55, 0.35), 0.04)
    _texture(img, rng, 0.2)
    L, W = rng.uniform(0.26, 0.33), rng.uniform(0.16, 0.2)  # half length / half width of the pitch
    ru = np.maximum(np.abs(u) - L, 0)
    dist = np.hypot(ru, v) - (W + 0.02)  # rounded-rectangle distance around the pitch
    track = (dist > 0) & (dist < rng.uniform(0.06, 0.08))
    img[track] = _jitter(rng, (0.72, 0.30, 0.22), 0.03)
    img[track & ((dist * 120) % 1 < 0.12)] = 0.95  # lane lines
    pitch = (np.abs(u) < L) & (np.abs(v) < W)
    green = _jitter(rng, (0.25, 0.58, 0.22), 0.03)
    img[pitch] = green * (1 + 0.12 * ((u[pitch] * 12) % 1 < 0.5))[:, None]
    lw = max(0.005, 1.0 / S)
    lines = (np.abs(np.abs(u) - L) < lw) & (np.abs(v) < W) | (np.abs(np.abs(v) - W) < lw) & (np.abs(u) < L)
    lines |= (np.abs(u) < lw) & (np.abs(v) < W)
    lines |= np.abs(np.hypot(u, v) - 0.06) < lw
    box = (np.abs(np.abs(u) - (L - 0.06)) < lw) & (np.abs(v) < 0.09) | (np.abs(np.abs(v) - 0.09) < lw) & (
        np.abs(u) > L - 0.06) & (np.abs(u) < L)
    img[lines | box] = 0.97
    if rng.random() < 0.6:
        tx, ty = rng.choice([0.12, 0.88]), rng.uniform(0.15, 0.85)
        _rect(img, tx, ty, 0.14, 0.2, angle, _jitter(rng, (0.25, 0.45, 0.65), 0.04))
        _rect(img, tx, ty, 0.11, 0.005, angle, (0.95, 0.95, 0.95))
    return img


def img_train_station(rng, S):
    """Many parallel tracks (rails on ballast with sleepers), long platforms, a roof, sometimes a train."""
    x, y = _coords(S)
    angle = rng.uniform(0, np.pi)
    u, v = _rotate(x, y, angle)
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.50, 0.48, 0.44), 0.03)
    _texture(img, rng, 0.2)
    n_tracks = int(rng.integers(5, 11))
    spacing = rng.uniform(0.06, 0.075)
    start = -spacing * (n_tracks - 1) / 2 + rng.uniform(-0.1, 0.1)
    rail_w = max(0.004, 0.9 / S)
    platform_after = set(rng.choice(n_tracks - 1, size=rng.integers(1, 3), replace=False).tolist())
    for i in range(n_tracks):
        off = start + i * spacing
        img[_line_mask(v, off, 0.04)] = _jitter(rng, (0.42, 0.38, 0.34), 0.02)
        img[_line_mask(v, off, 0.03) & ((u * 90) % 1 < 0.35)] = (0.35, 0.28, 0.22)  # sleepers
        for r in (-0.011, 0.011):
            img[_line_mask(v, off + r, rail_w)] = (0.18, 0.18, 0.2)
        if i in platform_after:
            img[_line_mask(v, off + spacing / 2, spacing * 0.35) & (np.abs(u) < 0.4)] = 0.78
    if rng.random() < 0.7:
        off = start + spacing * rng.integers(0, n_tracks)
        colour = _jitter(rng, rng.choice([(0.85, 0.15, 0.12), (0.9, 0.9, 0.9), (0.15, 0.35, 0.7)]), 0.03)
        train_u = rng.uniform(-0.3, 0.1)
        body = _line_mask(v, off, 0.032) & (u > train_u) & (u < train_u + rng.uniform(0.35, 0.6))
        img[body] = colour
        img[body & ((u * 12) % 1 < 0.04)] = colour * 0.5  # gaps between carriages
    roof_u = rng.uniform(-0.2, 0.2)
    roof = (np.abs(u - roof_u) < rng.uniform(0.08, 0.15)) & (np.abs(v - start - spacing * n_tracks / 2) < 0.2)
    _blend(img, roof, _jitter(rng, (0.70, 0.72, 0.75), 0.03))
    return img


# ==========================================================================================================
# Audio primitives: float32 (n,) at rate sr
# ==========================================================================================================
def _band(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    """Band-pass by an FFT mask with smooth (one-octave) edges."""
    spec = np.fft.rfft(np.asarray(x, np.float32)) * _band_gain(len(x), sr, lo, hi)  # complex64
    return np.fft.irfft(spec, len(x)).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=64)
def _band_gain(n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """Gain of the smooth (about one octave wide edges) band-pass at the rFFT frequencies of n samples."""
    logf = np.log2(np.maximum(np.fft.rfftfreq(n, 1 / sr), 1.0))
    gain = 1 / ((1 + np.exp(-6 * (logf - np.log2(max(lo, 1.0))))) * (1 + np.exp(6 * (logf - np.log2(hi)))))
    return gain.astype(np.float32)  # float32 keeps the FFTs in single precision (twice as fast)


def _noise_band(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    """Band-limited Gaussian noise, made in the frequency domain (white noise has i.i.d. complex bins)."""
    k = n // 2 + 1
    spec = np.empty(k, np.complex64)  # (k,)
    spec.real = rng.standard_normal(k, dtype=np.float32)
    spec.imag = rng.standard_normal(k, dtype=np.float32)
    spec *= _band_gain(n, sr, lo, hi)
    return np.fft.irfft(spec, n).astype(np.float32, copy=False)


def _saw(freq, n: int, sr: int) -> np.ndarray:
    """A sawtooth (all harmonics, 1/h) following ``freq``; band-limit it with :func:`_band` afterwards."""
    ph = np.cumsum(np.broadcast_to(np.asarray(freq, np.float64), (n,))) / sr  # (n,) cycles
    return (2 * (ph % 1.0) - 1).astype(np.float32)


def _norm(x: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """Scale to the given peak."""
    return (x * (peak / max(float(np.abs(x).max()), 1e-9))).astype(np.float32)


def _smooth_env(rng, n: int, sr: int, rate_hz: float, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """A slowly varying random envelope in [lo, hi] (about ``rate_hz`` changes per second)."""
    k = max(2, int(n / sr * rate_hz) + 2)
    pts = rng.random(k)
    env = np.interp(np.linspace(0, k - 1, n), np.arange(k), pts)
    return (lo + (hi - lo) * env).astype(np.float32)


def _tone(freq, n: int, sr: int, harmonics=(1.0,), phase: float = 0.0) -> np.ndarray:
    """A harmonic tone with frequency ``freq`` (scalar or (n,) track in Hz) and harmonic amplitudes."""
    f = np.broadcast_to(np.asarray(freq, np.float64), (n,))
    ph = phase + 2 * np.pi * np.cumsum(f) / sr
    out = np.zeros(n, np.float64)
    s_prev, s, c2 = np.zeros(n), np.sin(ph), 2 * np.cos(ph)
    for h, a in enumerate(harmonics, start=1):  # sin((h+1)x) = 2 cos(x) sin(hx) - sin((h-1)x): no sin per harmonic
        if a:
            out += a * s * (h * f < sr / 2)
        s_prev, s = s, c2 * s - s_prev
    return out.astype(np.float32)


def _ad(n: int, sr: int, attack: float, decay: float) -> np.ndarray:
    """An attack-decay envelope of ``n`` samples (linear rise, exponential fall)."""
    t = np.arange(n) / sr
    return np.where(t < attack, t / max(attack, 1e-6), np.exp(-(t - attack) / max(decay, 1e-6))).astype(np.float32)


def _add(out: np.ndarray, event: np.ndarray, start_s: float, sr: int, gain: float = 1.0) -> None:
    """Mix ``event`` into ``out`` starting at ``start_s`` seconds (clipped at the end)."""
    i = int(start_s * sr)
    if i >= len(out) or i + len(event) <= 0:
        return
    j = max(i, 0)
    seg = event[j - i : len(out) - i]
    out[j : j + len(seg)] += gain * seg


def _chirp_bird(rng, sr: int, base: float) -> np.ndarray:
    """One bird phrase: 2-6 fast frequency sweeps around ``base`` Hz."""
    parts = []
    for _ in range(rng.integers(2, 7)):
        d = rng.uniform(0.05, 0.14)
        m = int(d * sr)
        f0, f1 = base * rng.uniform(0.7, 1.3), base * rng.uniform(0.7, 1.4)
        f = np.linspace(f0, f1, m)
        parts += [_tone(f, m, sr, (1.0, 0.15)) * np.sin(np.linspace(0, np.pi, m)) ** 2, np.zeros(int(rng.uniform(0.02,
                                                                                                       0.08) * sr))]
    return np.concatenate(parts).astype(np.float32)


def _gull(rng, sr: int) -> np.ndarray:
    """A gull's 'kyow': a falling harmonic call."""
    m = int(rng.uniform(0.25, 0.45) * sr)
    f = np.linspace(rng.uniform(1300, 1700), rng.uniform(800, 1000), m)
    return _tone(f, m, sr, (1.0, 0.6, 0.35, 0.2)) * _ad(m, sr, 0.03, 0.15)


def _voice(rng, sr: int, seconds: float) -> np.ndarray:
    """Speech-like babble: voiced syllables with vowel formants and pauses."""
    out = np.zeros(int(seconds * sr), np.float32)
    f0 = rng.uniform(95, 230)
    vowels = [(730, 1090), (270, 2290), (300, 870), (530, 1840), (660, 1720), (440, 1020)]
    t = rng.uniform(0, 0.3)
    while t < seconds - 0.3:
        d = rng.uniform(0.12, 0.28)
        m = int(d * sr)
        f1, f2 = vowels[rng.integers(len(vowels))]
        amps = [np.exp(-(((h * f0 - f1) / 160) ** 2)) + 0.6 * np.exp(-(((h * f0 - f2) / 220) ** 2)) + 0.05
                for h in range(1, 30)]
        pitch = f0 * np.linspace(1, rng.uniform(0.85, 1.15), m)
        _add(out, _tone(pitch, m, sr, amps) * np.sin(np.linspace(0, np.pi, m)) ** 0.7, t, sr)
        t += d + (rng.uniform(0.3, 0.8) if rng.random() < 0.2 else rng.uniform(0.02, 0.08))
    return out


# ==========================================================================================================
# The 13 scenes as sounds: each returns a clean soundscape of n samples
# ==========================================================================================================
def snd_airport(rng, n, sr):
    """Jet roar swelling as a plane flies over, a Doppler-falling turbine whine, distant idle rumble."""
    t = np.arange(n) / sr
    t0, width = rng.uniform(2.5, 7.5), rng.uniform(1.2, 2.5)
    env = 0.12 + np.exp(-(((t - t0) / width) ** 2))
    roar = _noise_band(rng, n, sr, 50, rng.uniform(1500, 3000)) * env
    f_whine = rng.uniform(2500, 4500) * (1 - 0.06 * np.tanh((t - t0) / 0.8))
    whine = _tone(f_whine, n, sr, (1.0, 0.3)) * env**2 * rng.uniform(0.05, 0.15)
    return _norm(roar) + whine


def snd_beach(rng, n, sr):
    """Breaking waves every few seconds (a rising then slowly fading roar), wash, sometimes gulls."""
    out = 0.15 * _norm(_noise_band(rng, n, sr, 100, 800))
    surf = np.zeros(n, np.float32)
    period = rng.uniform(3.0, 5.5)
    t = rng.uniform(-1.0, 1.5)
    while t < n / sr:
        m = int(rng.uniform(3, 5) * sr)
        _add(surf, _ad(m, sr, rng.uniform(0.3, 0.8), rng.uniform(1.0, 2.0)) * rng.uniform(0.6, 1.0), t, sr)
        t += period * rng.uniform(0.85, 1.15)
    out += _norm(_noise_band(rng, n, sr, 150, 5000)) * surf
    for _ in range(rng.integers(0, 3) if rng.random() < 0.4 else 0):
        _add(out, _gull(rng, sr), rng.uniform(0, 9.5), sr, 0.3)
    return out


def snd_bridge(rng, n, sr):
    """Traffic hum on a bridge: cars swelling past, each with the double thump of an expansion joint."""
    out = 0.3 * _norm(_noise_band(rng, n, sr, 40, 500))
    f_thump = rng.uniform(45, 75)
    for tc in np.sort(rng.uniform(0.3, 9.3, rng.integers(3, 8))):
        m = int(2.5 * sr)
        whoosh = _noise_band(rng, m, sr, 100, 2500) * np.exp(-(((np.arange(m) / sr - 1.25) / 0.5) ** 2))
        _add(out, _norm(whoosh), tc - 1.25, sr, rng.uniform(0.3, 0.7))
        mt = int(0.25 * sr)
        thump = _tone(f_thump, mt, sr, (1.0, 0.5)) * _ad(mt, sr, 0.003, 0.05)
        gap = rng.uniform(0.1, 0.18)
        _add(out, thump, tc, sr, 0.9)
        _add(out, thump, tc + gap, sr, 0.8)
    return out


def snd_farmland(rng, n, sr):
    """A tractor's diesel: low harmonic series with combustion pulses and slow rpm drift, plus wind."""
    t = np.arange(n) / sr
    f0 = rng.uniform(22, 38) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6)))
    engine = _saw(f0, n, sr)
    engine *= 0.7 + 0.3 * np.sin(np.cumsum(2 * np.pi * f0 / 2) / sr) ** 2  # combustion pulses
    engine = _band(engine, sr, 20, 2000)
    wind = _noise_band(rng, n, sr, 80, 900) * _smooth_env(rng, n, sr, 0.6, 0.2, 1.0)
    return _norm(engine) * rng.uniform(0.5, 1.0) + 0.35 * _norm(wind)


def snd_forest(rng, n, sr):
    """Birdsong: one to three birds repeating short high chirp phrases, over rustling leaves."""
    out = 0.06 * _norm(_noise_band(rng, n, sr, 1500, 9000)) * _smooth_env(rng, n, sr, 0.5, 0.3, 1.0)
    for _ in range(rng.integers(1, 4)):
        base = rng.uniform(2200, 5500)
        phrase = _chirp_bird(rng, sr, base)
        gap = rng.uniform(1.2, 3.0)
        t = rng.uniform(0, 1.5)
        gain = rng.uniform(0.3, 1.0)
        while t < n / sr:
            _add(out, phrase, t, sr, gain * rng.uniform(0.7, 1.0))
            t += len(phrase) / sr + gap * rng.uniform(0.7, 1.3)
    return out


def snd_grassland(rng, n, sr):
    """Crickets (trains of 4-5 kHz pulses) in a steady rhythm, over low wind."""
    out = 0.4 * _norm(_noise_band(rng, n, sr, 60, 600)) * _smooth_env(rng, n, sr, 0.4, 0.2, 1.0)
    for _ in range(rng.integers(1, 4)):
        carrier = rng.uniform(3800, 5200)
        pulse_rate, n_pulses = rng.uniform(25, 45), int(rng.integers(3, 7))
        m = int(n_pulses / pulse_rate * sr)
        tt = np.arange(m) / sr
        chirp = _tone(carrier, m, sr) * (np.sin(np.pi * pulse_rate * tt) ** 4)
        period, t, gain = rng.uniform(0.35, 0.8), rng.uniform(0, 0.5), rng.uniform(0.2, 0.6)
        while t < n / sr:
            _add(out, chirp, t, sr, gain)
            t += period * rng.uniform(0.95, 1.05)
    return out


def snd_harbour(rng, n, sr):
    """A ship's deep horn, water lapping against the quay, gulls calling."""
    t = np.arange(n) / sr
    out = 0.4 * _norm(_noise_band(rng, n, sr, 100, 1200)) * (
        0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t) ** 2)
    d = rng.uniform(1.5, 3.0)
    m = int(d * sr)
    horn = _tone(rng.uniform(80, 160), m, sr, [1 / h**0.6 for h in range(1, 16)])
    horn *= np.minimum(1, np.minimum(np.arange(m) / (0.1 * sr), (m - np.arange(m)) / (0.3 * sr)))
    _add(out, _norm(horn), rng.uniform(0.5, 10 - d), sr, rng.uniform(0.6, 1.0))
    for _ in range(rng.integers(1, 4)):
        _add(out, _gull(rng, sr), rng.uniform(0, 9.5), sr, rng.uniform(0.2, 0.5))
    return out


def snd_lake(rng, n, sr):
    """Frogs croaking in buzzing 'ribbits' and gentle water."""
    t = np.arange(n) / sr
    out = 0.15 * _norm(_noise_band(rng, n, sr, 100, 700)) * (
        0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t))
    for _ in range(rng.integers(1, 4)):
        f0, buzz = rng.uniform(150, 350), rng.uniform(70, 120)
        m = int(0.07 * sr)
        am = np.sin(np.pi * buzz * np.arange(m) / sr) ** 4  # (m,): smooth buzz pulses, no clicks
        pulse = _tone(f0, m, sr, (1.0, 0.7, 0.4, 0.2)) * am
        pulse *= np.sin(np.linspace(0, np.pi, m))
        period, tt, gain = rng.uniform(0.6, 1.5), rng.uniform(0, 1), rng.uniform(0.4, 1.0)
        while tt < n / sr:
            for k in range(rng.integers(2, 4)):
                _add(out, pulse, tt + k * 0.09, sr, gain)
            tt += period * rng.uniform(0.8, 1.2)
    return out


def snd_orchard(rng, n, sr):
    """Bees buzzing past (sawtooth ~220 Hz with vibrato), a distant bird, light wind."""
    t = np.arange(n) / sr
    bees = np.zeros(n, np.float32)
    for _ in range(rng.integers(2, 5)):
        f = rng.uniform(190, 260) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(5, 10) * t))
        fly = np.exp(-(((t - rng.uniform(0, 10)) / rng.uniform(0.8, 2.5)) ** 2))
        bees += _saw(f, n, sr) * fly * rng.uniform(0.3, 0.8)
    out = _band(bees, sr, 150, 3000) + 0.1 * _norm(_noise_band(rng, n, sr, 100, 1000))
    if rng.random() < 0.5:
        _add(out, _chirp_bird(rng, sr, rng.uniform(2500, 4500)), rng.uniform(0, 9), sr, 0.15)
    return out


def snd_residential(rng, n, sr):
    """Street traffic, people talking, sometimes a dog barking."""
    out = 0.4 * _norm(_noise_band(rng, n, sr, 50, 1500)) * _smooth_env(rng, n, sr, 0.3, 0.4, 1.0)
    for _ in range(rng.integers(1, 3)):
        out += _norm(_voice(rng, sr, n / sr)) * rng.uniform(0.3, 0.7)
    if rng.random() < 0.6:
        t = rng.uniform(0, 8)
        for _ in range(rng.integers(2, 5)):
            m = int(rng.uniform(0.1, 0.18) * sr)
            bark = _tone(rng.uniform(400, 700), m, sr, (1, 0.8, 0.6, 0.4, 0.3)) * _ad(m, sr, 0.01, 0.05)
            bark += 0.3 * _noise_band(rng, m, sr, 500, 3000) * _ad(m, sr, 0.005, 0.03)
            _add(out, bark, t, sr, 0.6)
            t += rng.uniform(0.25, 0.5)
    return out


def snd_sparse_shrub_land(rng, n, sr):
    """Gusting wind with a whistling resonance over near silence, rarely an insect."""
    gusts = _smooth_env(rng, n, sr, 0.5, 0.0, 1.0) ** 2
    wind = _norm(_noise_band(rng, n, sr, 150, 1500)) * gusts
    whistle = _norm(_noise_band(rng, n, sr, rng.uniform(600, 900), rng.uniform(950, 1300))) * gusts
    out = wind + 0.5 * whistle
    if rng.random() < 0.3:
        m = int(rng.uniform(1, 3) * sr)
        buzz = _tone(rng.uniform(300, 600), m, sr, (1, 0.5, 0.3)) * np.sin(np.linspace(0, np.pi, m))
        _add(out, buzz, rng.uniform(0, 7), sr, 0.1)
    return out * rng.uniform(0.3, 0.6)


def snd_sports_land(rng, n, sr):
    """A crowd murmuring and cheering, a referee's trilled whistle, the thud of kicks."""
    t = np.arange(n) / sr
    cheer = sum(np.exp(-(((t - rng.uniform(0, 10)) / rng.uniform(0.6, 1.5)) ** 2)) for _ in range(rng.integers(1, 3)))
    out = _norm(_noise_band(rng, n, sr, 300, 3500)) * (0.25 + 0.75 * cheer)
    for _ in range(rng.integers(1, 4)):
        d = rng.uniform(0.3, 1.0)
        m = int(d * sr)
        f = rng.uniform(2800, 3500) + 150 * np.sin(2 * np.pi * rng.uniform(25, 35) * np.arange(m) / sr)
        whistle = _tone(f, m, sr, (1.0, 0.2)) * np.minimum(1, np.minimum(np.arange(m), m - np.arange(m)) / 200)
        _add(out, whistle, rng.uniform(0, 10 - d), sr, rng.uniform(0.4, 0.8))
    for tk in rng.uniform(0, 9.8, rng.integers(2, 6)):
        m = int(0.12 * sr)
        _add(out, _tone(rng.uniform(70, 110), m, sr, (1, 0.4)) * _ad(m, sr, 0.002, 0.03), tk, sr, 0.7)
    return out


def snd_train_station(rng, n, sr):
    """A train's rumble and clack-clack of wheels on rail joints, its two-tone horn, a station chime."""
    t = np.arange(n) / sr
    arrive = np.clip((t - rng.uniform(-3, 4)) / rng.uniform(2, 4), 0.1, 1)
    out = _norm(_noise_band(rng, n, sr, 25, 400)) * arrive
    period = rng.uniform(0.55, 1.0)
    m = int(0.03 * sr)
    click = _noise_band(rng, m, sr, 500, 4000) * _ad(m, sr, 0.001, 0.008)
    tc = rng.uniform(0, period)
    while tc < n / sr:
        g = 0.8 * arrive[min(n - 1, int(tc * sr))]
        _add(out, click, tc, sr, g)
        _add(out, click, tc + rng.uniform(0.1, 0.14), sr, g)
        tc += period
    d = rng.uniform(0.8, 2.0)
    mh = int(d * sr)
    f1 = rng.uniform(260, 340)
    horn = _tone(f1, mh, sr, [1 / h for h in range(1, 10)]) + _tone(f1 * 1.19, mh, sr, [1 / h for h in range(1, 10)])
    horn *= np.minimum(1, np.minimum(np.arange(mh) / (0.05 * sr), (mh - np.arange(mh)) / (0.2 * sr)))
    _add(out, _norm(horn), rng.uniform(0.2, 10 - d), sr, rng.uniform(0.5, 0.9))
    if rng.random() < 0.5:
        tb = rng.uniform(0, 8)
        for k, f in enumerate((659.3, 523.3)):
            mb = int(1.2 * sr)
            _add(out, _tone(f, mb, sr, (1, 0.3)) * _ad(mb, sr, 0.005, 0.4), tb + 0.5 * k, sr, 0.35)
    return out


IMAGE_MAKERS: dict[str, Callable] = {
    "airport": img_airport, "beach": img_beach, "bridge": img_bridge, "farmland": img_farmland,
    "forest": img_forest, "grassland": img_grassland, "harbour": img_harbour, "lake": img_lake,
    "orchard": img_orchard, "residential": img_residential, "sparse shrub land": img_sparse_shrub_land,
    "sports land": img_sports_land, "train station": img_train_station,
}  # fmt: skip
SOUND_MAKERS: dict[str, Callable] = {
    "airport": snd_airport, "beach": snd_beach, "bridge": snd_bridge, "farmland": snd_farmland,
    "forest": snd_forest, "grassland": snd_grassland, "harbour": snd_harbour, "lake": snd_lake,
    "orchard": snd_orchard, "residential": snd_residential, "sparse shrub land": snd_sparse_shrub_land,
    "sports land": snd_sports_land, "train station": snd_train_station,
}  # fmt: skip


# ==========================================================================================================
# One pair, and the whole tree
# ==========================================================================================================
def make_image(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 (size, size, 3) image of a scene, drawn at 2x and downsampled (anti-aliased) up to 256 px."""
    scale = 2 if size <= 256 else 1
    img = IMAGE_MAKERS[label](rng, size * scale)  # (S, S, 3) float
    img = np.clip(img + rng.normal(0, 0.015, img.shape).astype(np.float32), 0, 1)  # sensor grain
    pil = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
    if scale > 1:
        pil = pil.resize((size, size), Image.Resampling.LANCZOS)
    else:
        pil = pil.filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(pil)


def make_sound(label: str, rng: np.random.Generator, sample_rate: int, duration_s: float,
               hard: str | None = None) -> tuple[np.ndarray, dict]:
    """float32 (n,) recording of a scene in [-1, 1], and what was done to it (gain, noise, hard kind)."""
    n = round(sample_rate * duration_s)
    wave = _norm(SOUND_MAKERS[label](rng, n, sample_rate), 1.0)
    info: dict = {"hard": hard}
    if hard == "mixed":
        other = CLASSES[(CLASSES.index(label) + rng.integers(1, len(CLASSES))) % len(CLASSES)]
        level = rng.uniform(0.5, 0.8)
        wave = _norm(wave + level * _norm(SOUND_MAKERS[other](rng, n, sample_rate)), 1.0)
        info.update(mixed_with=other, mix_level=round(float(level), 3))
    if hard == "noisy":
        snr_db = rng.uniform(0, 6)
        noise = _noise_band(rng, n, sample_rate, 50, 8000)
        noise *= np.sqrt(np.mean(wave**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
        wave = _norm(wave + noise, 1.0)
        info["snr_db"] = round(float(snr_db), 1)
    gain_db = rng.uniform(-36, -30) if hard == "quiet" else rng.uniform(-12, -1)
    wave = wave * 10 ** (gain_db / 20)
    floor_db = rng.uniform(-60, -42)
    wave = wave + 10 ** (floor_db / 20) * _noise_band(rng, n, sample_rate, 30, 10000) / 0.3
    info.update(gain_db=round(float(gain_db), 1), noise_floor_db=round(float(floor_db), 1))
    return np.clip(wave, -1, 1).astype(np.float32), info


def plan_tree(per_class: int, seed: int) -> list[dict]:
    """Which pairs to write: id, base id, class, view number k (0 = base), whether the recording is hard."""
    rng = np.random.default_rng([seed, 7919])
    ids = rng.choice(100_000, size=len(CLASSES) * per_class, replace=False)
    plan, next_id = [], 0
    for label in CLASSES:
        made = 0
        while made < per_class:
            base = f"{ids[next_id]:05d}"
            next_id += 1
            hard = HARD_KINDS[rng.integers(len(HARD_KINDS))] if rng.random() < HARD_FRACTION else None
            views = 1 + (int(rng.integers(1, 3)) if rng.random() < K_FRACTION else 0)
            for k in range(min(views, per_class - made)):
                plan.append({"id": base if k == 0 else f"{base}_{k}", "base_id": base, "label": label, "k": k,
                             "hard": hard})
                made += 1
    return plan


def _view(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another view of the same place (a `_k` image): rotated/flipped, slightly different light."""
    out = np.rot90(img, int(rng.integers(1, 4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out.astype(np.float32) * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)


def write_tree(out: str | Path, per_class: int = 24, seed: int = 42, image_size: int = 128,
               sample_rate: int = 22_050, duration_s: float = 10.0, progress: bool = True) -> Path:
    """Write the synthetic ADVANCE-shaped tree to ``out`` (atomically: built beside it, then renamed).

    An existing ``out`` is replaced only when it is empty or an earlier synthetic tree (it has ``synthetic.json``);
    anything else raises :class:`FileExistsError` before any work is done.
    """
    out = Path(out)
    if per_class < 1 or image_size < 8:
        raise ValueError(f"per_class must be >= 1 and image_size >= 8 (got {per_class}, {image_size})")
    check_replaceable(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for label in CLASSES:
        (tmp / "vision" / label).mkdir(parents=True)
        (tmp / "sound" / label).mkdir(parents=True)
    plan = plan_tree(per_class, seed)
    meta, base_images = {}, {}
    for item in tqdm(plan, desc="synthesising pairs", disable=not progress):
        label, base = item["label"], item["base_id"]
        rng = np.random.default_rng([seed, CLASSES.index(label), int(base), item["k"]])
        img_path = tmp / "vision" / label / f"{item['id']}.jpg"
        wav_path = tmp / "sound" / label / f"{item['id']}.wav"
        if item["k"] == 0:
            base_images[base] = make_image(label, rng, image_size)
            Image.fromarray(base_images[base]).save(img_path, quality=90)
            wave, info = make_sound(label, rng, sample_rate, duration_s, item["hard"])
            sf.write(wav_path, wave, sample_rate, subtype="PCM_16")
            meta[item["id"]] = {**item, **info}
        else:
            Image.fromarray(_view(base_images[base], rng)).save(img_path, quality=90)
            shutil.copyfile(tmp / "sound" / label / f"{base}.wav", wav_path)  # same place, same recording
            meta[item["id"]] = {**item, **meta[base], "id": item["id"], "k": item["k"]}
    params = {"version": SYNTH_VERSION, "per_class": per_class, "seed": seed, "image_size": image_size,
              "sample_rate": sample_rate, "duration_s": duration_s}
    (tmp / "synthetic.json").write_text(json.dumps({"params": params, "pairs": meta}, indent=1))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(out)
    return out


def check_replaceable(out: Path) -> None:
    """Raise FileExistsError unless ``out`` is absent, an empty folder or a synthetic tree written by us."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; refusing to replace it (choose another --out)")
    if any(out.iterdir()) and not (out / "synthetic.json").is_file():
        raise FileExistsError(f"{out}: folder is not empty and is not a synthetic tree (no synthetic.json); "
                              "refusing to delete it (choose another --out, or empty the folder yourself)")


def tree_name(cfg) -> str:
    """Cache folder name of the synthetic tree for ``cfg``: every generator parameter is in it."""
    d = cfg.data
    return (f"synthetic-v{SYNTH_VERSION}-n{d.per_class}-px{d.image_size}-sr{d.sample_rate}"
            f"-{d.duration_s:g}s-seed{cfg.seed}")


def ensure_synthetic(cfg, progress: bool = True) -> Path:
    """The synthetic tree of ``cfg`` in ``cfg.datasets_dir``, written first if it is not there."""
    root = Path(cfg.datasets_dir) / tree_name(cfg)
    if not (root / "synthetic.json").is_file():
        d = cfg.data
        write_tree(root, d.per_class, cfg.seed, d.image_size, d.sample_rate, d.duration_s, progress=progress)
    return root
