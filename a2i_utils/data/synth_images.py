"""The synthetic world's images: 13 aerial scenes drawn from a seeded generator and one ``amount`` per place.

Each ``img_<scene>(rng, S, amount)`` returns a float (S, S, 3) canvas in [0, 1]. ``amount`` in [0, 1] is the
place's one visible detail that its recording also carries (:mod:`a2i_utils.data.synth_sounds` plays the
scene's signature source louder when it is larger): more planes at an airport, more water at a beach, a
wider bridge deck, more ploughed fields, a denser forest, drier grass, more boats, a bigger lake, bigger
orchard crowns, denser houses, barer shrub land, bigger stands at a sports ground, a longer train.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image


def _lerp(a: float, b: float, t: float) -> float:
    """``a`` at t = 0, ``b`` at t = 1."""
    return a + (b - a) * t

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
def img_airport(rng, S, amount: float = 0.5):
    """Grey runways with white centre dashes and threshold stripes, a terminal and 1-6 parked planes (amount)."""
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
    for _ in range(1 + round(5 * amount)):
        px = tx + rng.uniform(-0.2, 0.2) * np.cos(angle) - side * 0.1 * -np.sin(angle)
        py = ty + rng.uniform(-0.2, 0.2) * np.sin(angle) - side * 0.1 * np.cos(angle)
        a = angle + np.pi / 2 + rng.normal(0, 0.2)
        _rect(img, px, py, 0.07, 0.014, a, 0.97)  # fuselage
        _rect(img, px, py, 0.014, 0.07, a, 0.97)  # wings
    return img


def img_beach(rng, S, amount: float = 0.5):
    """Sand against water along a wavy shore (more water with amount), white surf lines, a few parasols."""
    x, y = _coords(S)
    u, v = _rotate(x, y, rng.uniform(0, 2 * np.pi))
    wiggle = rng.uniform(0.02, 0.06) * np.sin(u * rng.uniform(6, 14) + rng.uniform(0, 6))
    shore = _lerp(0.28, -0.28, amount) + rng.uniform(-0.04, 0.04) + wiggle
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


def img_bridge(rng, S, amount: float = 0.5):
    """A river crossing the image and a road bridge over it (wider deck, more traffic, with amount), its shadow."""
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
        bw = _lerp(0.03, 0.075, amount) * rng.uniform(0.9, 1.1)
        shadow = _line_mask(bv, bw * 0.9, bw) & river
        img[shadow] = water * 0.45
        deck = _line_mask(bv, 0, bw)
        img[deck] = _jitter(rng, (0.68, 0.68, 0.66), 0.03)
        img[_line_mask(bv, 0, max(0.004, 1.0 / S)) & ((bu * 25) % 1 < 0.5)] = 0.95
    return img


def img_farmland(rng, S, amount: float = 0.5):
    """A patchwork of fields, each with its crop colour and row direction, and hedges; amount = ploughed share."""
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
        crop = (0.50, 0.36, 0.24) if rng.random() < amount else palette[rng.integers(len(palette))]  # ploughed
        colour = _jitter(rng, crop, 0.05)
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


def img_forest(rng, S, amount: float = 0.5):
    """Overlapping tree crowns in dark greens, lit from one side, with dark gaps (denser with amount)."""
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.08, 0.16, 0.07), 0.02)
    base = _jitter(rng, (0.18, 0.36, 0.15), 0.04)
    n = int(_lerp(170, 340, amount) * rng.uniform(0.95, 1.05))
    for cx, cy, r in zip(rng.random(n), rng.random(n), rng.uniform(0.025, 0.05, n)):
        _disc(img, cx, cy, r, _jitter(rng, base, 0.04), shade=0.55)
    _texture(img, rng, 0.35, cells=20)
    return img


def img_grassland(rng, S, amount: float = 0.5):
    """A smooth meadow in light greens and straw yellows (drier with amount), sometimes with a dirt track."""
    x, y = _coords(S)
    green, straw = _jitter(rng, (0.55, 0.68, 0.33), 0.04), _jitter(rng, (0.78, 0.75, 0.45), 0.04)
    mix = np.clip(_noise(rng, S, 3, 3) + _lerp(-0.45, 0.45, amount), 0, 1)[..., None]
    img = (green * (1 - mix) + straw * mix).astype(np.float32)
    _texture(img, rng, 0.12, cells=40)
    if rng.random() < 0.6:
        u, v = _rotate(x, y, rng.uniform(0, np.pi))
        track = np.abs(v - rng.uniform(-0.3, 0.3) - 0.05 * np.sin(u * rng.uniform(3, 8))) < 0.008
        _blend(img, track, _jitter(rng, (0.70, 0.62, 0.48), 0.03))
    return img


def img_harbour(rng, S, amount: float = 0.5):
    """Concrete quay with coloured containers, piers into the water, moored boats (more with amount)."""
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
            if rng.random() < _lerp(0.1, 1.0, amount):
                bx, by = at(a + side * 0.04, edge + rng.uniform(0.05, length))
                _rect(img, bx, by, 0.025, 0.06, angle, _jitter(rng, (0.95, 0.95, 0.95), 0.03))
    colours = [(0.75, 0.15, 0.12), (0.15, 0.30, 0.70), (0.90, 0.55, 0.10), (0.20, 0.55, 0.30), (0.85, 0.85, 0.2)]
    for a in np.arange(-0.45, 0.45, 0.035):
        for b in np.arange(edge - 0.06, edge - 0.35, -0.03):
            if rng.random() < 0.7:
                cx_, cy_ = at(a, b)
                _rect(img, cx_, cy_, 0.03, 0.02, angle, _jitter(rng, colours[rng.integers(len(colours))], 0.04))
    return img


def img_lake(rng, S, amount: float = 0.5):
    """A single irregular lake (larger with amount) with a reedy shore in green land, trees along the shore."""
    x, y = _coords(S)
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.42, 0.55, 0.28), 0.04)
    _texture(img, rng, 0.3)
    cx, cy = rng.uniform(0.35, 0.65, 2)
    r0 = _lerp(0.16, 0.38, amount) * rng.uniform(0.95, 1.05)
    amps, phases = rng.uniform(0, 0.18, 3), rng.uniform(0, 2 * np.pi, 3)

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


def img_orchard(rng, S, amount: float = 0.5):
    """Regular rows of round trees (bigger crowns with amount) with shadows on bare or grassy soil."""
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, rng.choice([(0.62, 0.52, 0.38), (0.55, 0.60, 0.38)]), 0.04)
    _texture(img, rng, 0.2)
    angle = rng.normal(0, 0.3)
    step_u, step_v = rng.uniform(0.06, 0.09), rng.uniform(0.05, 0.08)
    r = min(step_u, step_v) * _lerp(0.26, 0.46, amount)
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


def img_residential(rng, S, amount: float = 0.5):
    """A street grid (denser with amount) with rows of houses: two-tone pitched roofs, small gardens."""
    x, y = _coords(S)
    angle = rng.normal(0, 0.3)
    u, v = _rotate(x, y, angle)
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.38, 0.52, 0.28), 0.04)
    _texture(img, rng, 0.25)
    block_u, block_v = _lerp(0.36, 0.2, amount) * rng.uniform(0.95, 1.05), _lerp(0.3, 0.17, amount)
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


def img_sparse_shrub_land(rng, S, amount: float = 0.5):
    """Dry ochre ground with faint erosion texture and scattered small dark shrubs (fewer with amount: windier)."""
    img = np.empty((S, S, 3), np.float32)
    img[:] = _jitter(rng, (0.76, 0.64, 0.46), 0.05)
    _blend(img, 0.5 * (_noise(rng, S, 5) > 0.6), _jitter(rng, (0.86, 0.78, 0.62), 0.03))
    _texture(img, rng, 0.22, cells=30)
    n = int(_lerp(110, 15, amount) * rng.uniform(0.9, 1.1))
    shrub = _jitter(rng, (0.33, 0.36, 0.20), 0.04)
    for cx, cy, r in zip(rng.random(n), rng.random(n), rng.uniform(0.006, 0.018, n)):
        _disc(img, cx + r * 0.4, cy + r * 0.4, r, img[0, 0] * 0.6)
        _disc(img, cx, cy, r, _jitter(rng, shrub, 0.03), shade=0.4)
    return img


def img_sports_land(rng, S, amount: float = 0.5):
    """A striped pitch with white markings inside a red running track, grey stands (deeper with amount)."""
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
    depth = _lerp(0.0, 0.14, amount)  # stands along both long sides, outside the track
    stands = (dist > 0.09) & (dist < 0.09 + depth) & (np.abs(u) < L)
    img[stands] = _jitter(rng, (0.62, 0.62, 0.64), 0.03) * (1 + 0.15 * ((dist[stands] * 90) % 1 < 0.5))[:, None]
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


def img_train_station(rng, S, amount: float = 0.5):
    """Parallel tracks (rails on ballast with sleepers), platforms, a roof, a train (longer with amount)."""
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
    if amount > 0.1:  # no train in the station at the quietest places
        off = start + spacing * rng.integers(0, n_tracks)
        colour = _jitter(rng, rng.choice([(0.85, 0.15, 0.12), (0.9, 0.9, 0.9), (0.15, 0.35, 0.7)]), 0.03)
        train_u = rng.uniform(-0.3, 0.1)
        body = _line_mask(v, off, 0.032) & (u > train_u) & (u < train_u + _lerp(0.1, 0.85, amount))
        img[body] = colour
        img[body & ((u * 12) % 1 < 0.04)] = colour * 0.5  # gaps between carriages
    roof_u = rng.uniform(-0.2, 0.2)
    roof = (np.abs(u - roof_u) < rng.uniform(0.08, 0.15)) & (np.abs(v - start - spacing * n_tracks / 2) < 0.2)
    _blend(img, roof, _jitter(rng, (0.70, 0.72, 0.75), 0.03))
    return img


IMAGE_MAKERS: dict[str, Callable] = {
    "airport": img_airport, "beach": img_beach, "bridge": img_bridge, "farmland": img_farmland,
    "forest": img_forest, "grassland": img_grassland, "harbour": img_harbour, "lake": img_lake,
    "orchard": img_orchard, "residential": img_residential, "sparse shrub land": img_sparse_shrub_land,
    "sports land": img_sports_land, "train station": img_train_station,
}  # fmt: skip
