"""The metric table in demo mode on the real trained models (minutes when they must be trained; ~1-2 min cached).

It uses ``get_config("demo")`` with the cache of the environment (``A2I_CACHE``): in ``make test`` it shares the
miniature UnCLIP, the fine-tunes and the scene classifier that the SounDiff tests and notebook 05 train into the
same cache. It asserts relations that can fail, never fixed numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from a2i_utils.cli import main
from a2i_utils.config import get_config
from a2i_utils.evaluation.evaluate import REFERENCE, evaluate_systems
from a2i_utils.evaluation.metrics import VALID_RANGE, rank_scores
from a2i_utils.evaluation.report import table_rows, verdict
from a2i_utils.evaluation.systems import Loader


@pytest.fixture(scope="module")
def evaluation():
    from a2i_utils.devices import cpu_threads

    with cpu_threads(1):
        loader = Loader(get_config("demo"), progress=False)
        return evaluate_systems(loader, ["baseline", "soundiff-l"], ("",), seeds=2, rerank_n=4, progress=False)


def test_the_judge_is_accurate_on_real_held_out_images(evaluation):
    assert evaluation.ctx.judge_accuracy >= 0.8
    assert evaluation.result(REFERENCE).per_recording["AIC"].mean() == pytest.approx(evaluation.ctx.judge_accuracy)


def test_every_metric_lies_in_its_valid_range(evaluation):
    for row in table_rows(evaluation.results, n_boot=200):
        for metric, (lo, hi) in VALID_RANGE.items():
            if row["system"] == REFERENCE and metric in ("FD", "KD"):
                assert np.isnan(row[metric])  # a set against itself: not defined, not a fake 0
                continue
            for key in (metric, f"{metric}_lo", f"{metric}_hi"):
                assert lo - 1e-9 <= row[key] <= hi, (row["system"], key, row[key])
            assert row[f"{metric}_lo"] <= row[metric] + 1e-9 <= row[f"{metric}_hi"] + 2e-9


def test_soundiff_l_beats_the_zero_shot_baseline_on_aic(evaluation):
    base, tuned = evaluation.result("baseline"), evaluation.result("SounDiff-L")
    assert tuned.per_recording["AIC"].mean() > base.per_recording["AIC"].mean()
    # and its images are closer to their own recordings for ImageBind, outside the paired interval
    assert verdict(base, tuned, "AIS")["verdict"] == "SounDiff-L better"
    for metric in ("FD", "KD"):  # paired jackknife differences: finite intervals around the difference
        v = verdict(base, tuned, metric)
        assert v["ci"][0] <= v["diff"] <= v["ci"][1], v


def test_shuffling_the_recording_image_pairing_drops_ais_to_chance(evaluation):
    ctx, images = evaluation.ctx, evaluation.result("SounDiff-L").images[:, :2]
    from a2i_utils.evaluation.metrics import embed_images

    emb = embed_images(ctx.embedder, images)  # (N * 2, D)
    owner = np.repeat(np.arange(len(ctx.pairs)), 2)
    paired = rank_scores(emb, ctx.audio, owner).mean()
    rng = np.random.default_rng(0)
    shuffled = np.mean([rank_scores(emb, ctx.audio, owner[rng.permutation(len(owner))]).mean() for _ in range(30)])
    assert paired > 0.65
    assert abs(shuffled - 0.5) < 0.05


def test_reranking_with_n_above_one_does_not_lower_aic(evaluation):
    rows = {(r["N"], r["metric"]): r for r in evaluation.rerank}
    for n in (2, 4):
        r = rows[(n, "AIC")]
        assert r["gain_vs_independent_ci"][1] >= 0  # not significantly below the same compute without selection
        assert r["best_of_n"] >= r["first"] - 0.05
    assert rows[(1, "AIC")]["best_of_n"] == rows[(1, "AIC")]["first"]


def test_a2i_evaluate_writes_its_files(tmp_path, evaluation):
    out = tmp_path / "eval"
    assert main(["evaluate", "--models", "baseline", "--prompts", "none", "--n-recordings", "13", "--seeds", "1",
                 "--rerank", "2", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"metrics.csv", "metrics.md", "metrics.png", "rerank.csv", "rerank.md", "judge.txt"} <= names
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("system,n_recordings,AIS,AIS_lo,AIS_hi") and len(lines) == 3  # reference + baseline
    assert "13" in lines[2].split(",")[1]
    md = (out / "metrics.md").read_text()
    assert "| FD ↓ |" in md and "FID ↓" not in md and "scene-classifier features (FD / KD, not FID)" in md
