"""The comparison's pixel-transformer column uses notebook 03's very run, held-out evaluations included."""

from __future__ import annotations

import pytest

from a2i_utils.config import get_config
from a2i_utils.data import prepare_dataset
from a2i_utils.evaluation import systems
from a2i_utils.transformer import training


class _Called(Exception):
    pass


def test_pixel_transformer_column_trains_notebook_03s_run_with_its_held_out_evaluations(tmp_path, monkeypatch):
    cfg = get_config("demo", {"cache_dir": tmp_path / "cache", "device": "cpu", "data.per_class": 2,
                              "data.image_size": 32})
    ds = prepare_dataset(cfg, progress=False)
    seen = {}

    def fake_train_or_load(cfg_, dataset, name, steps, progress=True, **kwargs):
        seen.update(name=name, steps=steps, **kwargs)
        raise _Called

    monkeypatch.setattr(training, "train_or_load", fake_train_or_load)
    with pytest.raises(_Called):
        systems.pixel_transformer_samples(cfg, ds, ds.val[:1])
    # the same name, steps and evaluations as notebook 03, so both find one run in the cache (not two that clash)
    assert seen["name"] == "train-split" and seen["steps"] == cfg.transformer.steps
    assert seen.get("val_set") is not None and len(seen["val_set"]) == len(ds.val)
    steps = cfg.transformer.steps
    assert seen.get("eval_every") == training.heldout_eval_every(steps) == max(1, steps // 10)  # notebook 03's
