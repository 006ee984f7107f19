"""The scene classifier that judges generated images, and the bootstrap intervals of scene accuracy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from a2i_utils.config import get_config
from a2i_utils.data import CLASSES, Pair
from a2i_utils.evaluation.aic import bootstrap_ci, compare, hit_rates
from a2i_utils.evaluation.scene_classifier import load_or_train_classifier, predict, train_classifier
from a2i_utils.io import CheckpointError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def colour_scenes(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 16, 16, 3) images: class k is a flat colour of its own plus noise."""
    rng = np.random.default_rng(seed)
    colours = np.random.default_rng(0).integers(0, 256, (len(CLASSES), 3))
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    images = colours[labels][:, None, None, :] + rng.normal(0, 12, (len(labels), 16, 16, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def test_classifier_learns_separable_scenes():
    cfg = get_config("demo", {"soundiff.clf_steps": 80})
    x, y = colour_scenes(6, seed=1)
    model, losses = train_classifier(x, y, cfg, progress=False)
    assert losses[-1] < losses[0]
    xt, yt = colour_scenes(3, seed=2)
    assert (predict(model, xt) == yt).mean() >= 0.9
    assert predict(model, xt.reshape(13, 3, 16, 16, 3)).shape == (13, 3)  # any leading shape


@pytest.fixture
def tiny_dataset(tmp_path):
    """2 training and 1 validation image per class, written as PNGs."""
    x, y = colour_scenes(3, seed=3)
    pairs = []
    for i, (img, label) in enumerate(zip(x, y)):
        path = tmp_path / f"{i:05d}.png"
        Image.fromarray(img).save(path)
        pairs.append(Pair(f"{i:05d}", f"{i:05d}", CLASSES[label], path, path, "val" if i % 3 == 2 else "train"))
    return SimpleNamespace(pairs=pairs, train=[p for p in pairs if p.split == "train"],
                           val=[p for p in pairs if p.split == "val"])


def test_classifier_is_cached_and_a_damaged_file_is_named(tmp_path, tiny_dataset):
    cfg = get_config("demo", {"soundiff.clf_steps": 40, "soundiff.image_size": 16, "cache_dir": tmp_path / "c"})
    model, info = load_or_train_classifier(cfg, tiny_dataset, progress=False)
    assert info["n_val"] == 13 and 0.0 <= info["val_acc"] <= 1.0
    again, info2 = load_or_train_classifier(cfg, tiny_dataset, progress=False)
    assert info2 == info
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    (path,) = (tmp_path / "c" / "checkpoints" / "scene_classifier").glob("*.safetensors")
    path.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=path.name):
        load_or_train_classifier(cfg, tiny_dataset, progress=False)


def test_hit_rates_and_bootstrap_intervals():
    preds = np.array([[0, 0, 1, 0], [2, 2, 2, 2], [1, 3, 3, 3]])
    assert np.allclose(hit_rates(preds, np.array([0, 2, 1])), [0.75, 1.0, 0.25])
    assert bootstrap_ci(np.full(10, 0.4)) == pytest.approx((0.4, 0.4))
    values = np.random.default_rng(0).random(40)
    lo, hi = bootstrap_ci(values)
    assert lo < values.mean() < hi
    lo_small, hi_small = bootstrap_ci(values[:10])
    assert hi_small - lo_small > hi - lo  # fewer recordings, wider interval
    c = compare(np.zeros(20), np.r_[np.ones(10), np.zeros(10)])
    assert c["diff"] == pytest.approx(0.5) and 0.2 < c["diff_ci"][0] < 0.5 < c["diff_ci"][1] <= 0.8
