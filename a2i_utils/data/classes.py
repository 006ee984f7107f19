"""The 13 scene classes of ADVANCE and their sizes in the real dataset (a leaf module: imports nothing)."""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "airport", "beach", "bridge", "farmland", "forest", "grassland", "harbour",
    "lake", "orchard", "residential", "sparse shrub land", "sports land", "train station",
)  # fmt: skip
# Pairs per class in the real ADVANCE (5,075 in all): imbalanced, unlike the synthetic world.
ADVANCE_COUNTS: dict[str, int] = {
    "airport": 185, "beach": 216, "bridge": 280, "farmland": 430, "forest": 862, "grassland": 150, "harbour": 508,
    "lake": 357, "orchard": 207, "residential": 1056, "sparse shrub land": 405, "sports land": 159,
    "train station": 260,
}  # fmt: skip
