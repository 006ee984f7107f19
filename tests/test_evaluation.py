"""Evaluation on small synthetic inputs (seconds): AIS/IIS ranks, FD/KD, verdicts, reranking, Inception download."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from a2i_utils.evaluation.metrics import (
    SystemResult,
    frechet_distance,
    per_recording,
    rank_scores,
    set_metric_ci,
    spread_over_classes,
)
from a2i_utils.evaluation.report import difference_rows, differences_markdown, table_rows, to_csv, to_markdown, verdict
from a2i_utils.evaluation.rerank import audio_image_similarity, best_index, rerank_table


def paired_embeddings(n: int = 40, d: int = 32, noise: float = 0.5, seed: int = 0):
    """Recording embeddings (n, d) and image embeddings near them (n, d)."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(n, d, generator=g)
    return audio, audio + noise * torch.randn(n, d, generator=g)


# ----------------------------------------------------------------------------------------------------------
# AIS / IIS
# ----------------------------------------------------------------------------------------------------------
def test_rank_scores_by_hand():
    refs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = torch.tensor([[1.0, 0.1], [1.0, 0.1]])
    # query 0 belongs to ref 0 (the nearest): both distractors below -> 1; query 1 to ref 2 (the farthest) -> 0
    assert rank_scores(q, refs, [0, 2]).tolist() == [1.0, 0.0]
    # a tie with the only other distractor counts half
    assert rank_scores(torch.tensor([[1.0, 1.0]]), refs, [0]).tolist() == [0.75]


def test_rank_scores_lie_in_range_and_paired_images_score_high():
    audio, images = paired_embeddings()
    s = rank_scores(images, audio, np.arange(len(audio)))
    assert s.shape == (40,) and (s >= 0).all() and (s <= 1).all()
    assert s.mean() > 0.9


def test_shuffling_the_pairing_drops_ais_to_chance():
    """With the recording-image pairing shuffled, AIS is chance (0.5) within sampling error."""
    audio, images = paired_embeddings(n=200)
    rng = np.random.default_rng(0)
    means = [rank_scores(images, audio, rng.permutation(200)).mean() for _ in range(20)]
    assert abs(np.mean(means) - 0.5) < 0.02
    assert rank_scores(images, audio, np.arange(200)).mean() > 0.9


def test_rank_scores_need_distractors():
    with pytest.raises(ValueError, match="at least 2"):
        rank_scores(torch.randn(1, 4), torch.randn(1, 4), [0])


def test_per_recording_averages_consecutive_images():
    assert per_recording(np.array([1, 0, 1, 1, 0, 0]), 2).tolist() == [0.5, 1.0, 0.0]


def test_spread_over_classes_is_round_robin():
    class P:
        def __init__(self, label, i):
            self.label, self.id = label, i

    pairs = [P("a", 0), P("a", 1), P("a", 2), P("b", 3), P("c", 4)]
    assert [p.id for p in spread_over_classes(pairs, 4)] == [0, 3, 4, 1]


# ----------------------------------------------------------------------------------------------------------
# FD / KD (their intervals: tests/test_metric_intervals.py)
# ----------------------------------------------------------------------------------------------------------
def distances(real: torch.Tensor, fake: torch.Tensor) -> dict:
    """FD and KD of real (N, F) against fake (N, F), one image per recording."""
    return {k: v for k, (v, _) in set_metric_ci(real, fake, n=1)[0].items()}


def test_feature_distances_grow_with_a_shift():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 8, generator=g, dtype=torch.float64)
    same = torch.randn(200, 8, generator=g, dtype=torch.float64)
    far = same + 2.0
    near_d, far_d = distances(real, same), distances(real, far)
    assert 0 <= near_d["FD"] < 1.0 < far_d["FD"]
    assert far_d["FD"] == pytest.approx(8 * 4.0, rel=0.25)  # ||mu_r - mu_f||^2 = 8 * 2^2
    assert abs(near_d["KD"]) < 0.05 < far_d["KD"]


def test_fd_equals_the_closed_form_for_gaussians():
    """FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), here for diagonal covariances."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(5000, 3, generator=g, dtype=torch.float64) * 2 + 1
    ca, cb = np.cov(a.T.numpy()), np.cov(b.T.numpy())
    want = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(ca + cb - 2 * np.diag(np.sqrt(np.diag(ca) *
                                                                                               np.diag(cb))))
    assert float(frechet_distance(a, b)) == pytest.approx(want, rel=0.02)


def test_set_metric_intervals_contain_the_estimate_and_lie_in_the_valid_range():
    """The jackknife interval is centred on its estimate (the old bootstrap's lay above it); FD's starts at >= 0."""
    g = torch.Generator().manual_seed(2)
    real = torch.randn(30, 4, generator=g, dtype=torch.float64)
    fake = torch.randn(60, 4, generator=g, dtype=torch.float64) + 0.5
    out, loo = set_metric_ci(real, fake, n=2)
    for k in ("FD", "KD"):
        point, (lo, hi) = out[k]
        assert lo < point < hi
        assert loo[k].shape == (30,)
    assert out["FD"][1][0] >= 0
    near, _ = set_metric_ci(real, torch.randn(60, 4, generator=g, dtype=torch.float64), n=2)
    assert 0.0 <= near["FD"][1][0] < near["FD"][0]  # clipped at 0, never below


# ----------------------------------------------------------------------------------------------------------
# Table and verdicts
# ----------------------------------------------------------------------------------------------------------
def result(name, aic, fd_loo=None):
    """A system's result with AIC ``aic`` (N,) and, when given, FD's leave-one-out values around FD = mean(fd_loo)."""
    aic = np.asarray(aic, dtype=float)
    loo = {} if fd_loo is None else {"FD": np.asarray(fd_loo, dtype=float), "KD": np.zeros(len(aic))}
    fd = float(np.mean(fd_loo)) if fd_loo is not None else 1.0
    return SystemResult(name, {"AIS": np.full_like(aic, 0.5), "IIS": np.full_like(aic, 0.5), "AIC": aic},
                        {"FD": (fd, (fd - 0.2, fd + 0.2)), "KD": (0.0, (-0.05, 0.05))}, None, loo)


def test_a_win_inside_the_interval_is_not_called_better():
    rng = np.random.default_rng(0)
    a = result("a", rng.random(20) > 0.5)
    noisy = result("b", np.where(rng.random(20) < 0.1, 1 - a.per_recording["AIC"], a.per_recording["AIC"]))
    assert verdict(a, noisy, "AIC")["verdict"] == "no clear difference"
    clearly = result("c", np.ones(20))
    assert verdict(a, clearly, "AIC")["verdict"] == "c better"
    assert verdict(clearly, a, "AIC")["verdict"] == "c better"


def test_fd_verdicts_come_from_the_paired_difference_and_lower_is_better():
    """Overlapping intervals, yet b is lower on every recording left out: the paired jackknife calls it better."""
    rng = np.random.default_rng(0)
    shared = 5.0 + rng.normal(0, 1.0, 20)  # what both systems share (the recordings drawn) moves FD a lot
    a = result("a", [1, 0] * 10, fd_loo=shared)
    b = result("b", [1, 0] * 10, fd_loo=shared - 0.3 + rng.normal(0, 0.01, 20))
    v = verdict(a, b, "FD")
    assert v["diff"] == pytest.approx(-0.3, abs=0.02) and v["ci"][1] < 0 and v["verdict"] == "b better"
    assert verdict(b, a, "FD")["verdict"] == "b better"
    noisy = result("c", [1, 0] * 10, fd_loo=shared - 0.3 + rng.normal(0, 0.5, 20))
    assert verdict(a, noisy, "FD")["verdict"] == "no clear difference"


def test_difference_rows_compare_every_system_with_the_baseline():
    rng = np.random.default_rng(1)
    shared = 5.0 + rng.normal(0, 1.0, 20)
    reference = SystemResult("reference", result("r", [1] * 20).per_recording,
                             {k: (float("nan"), (float("nan"), float("nan"))) for k in ("FD", "KD")})
    base, tuned = result("baseline", [0, 1] * 10, fd_loo=shared), result("tuned", [1] * 20, fd_loo=shared - 1)
    rows = difference_rows([reference, base, tuned], "baseline")
    assert [(r["b"], r["metric"]) for r in rows] == [("tuned", m) for m in ("AIS", "IIS", "AIC", "FD", "KD")]
    md = differences_markdown(rows)
    assert "| tuned | FD | -1.000 [-1.000, -1.000] | tuned better |" in md
    assert "| tuned | AIC | +0.500 [" in md


def test_table_has_every_metric_with_intervals_and_renders():
    rows = table_rows([result("a", [1, 0, 1, 1]), result("b", [0, 0, 1, 0])], n_boot=200)
    assert rows[0]["AIC"] == 0.75 and rows[0]["AIC_lo"] <= 0.75 <= rows[0]["AIC_hi"]
    csv_text, md = to_csv(rows), to_markdown(rows, "toy features")
    assert csv_text.splitlines()[0].startswith("system,n_recordings,AIS,AIS_lo")
    assert "| a | 4 |" in md and "toy features" in md and "FID" not in md


# ----------------------------------------------------------------------------------------------------------
# Reranking
# ----------------------------------------------------------------------------------------------------------
def test_best_index_picks_the_candidate_nearest_the_recording():
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cands = torch.tensor([[[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]], [[1.0, 0.0], [0.2, 1.0], [0.0, 1.0]]])
    assert best_index(cands, audio).tolist() == [1, 2]
    assert best_index(cands, audio, k=2).tolist() == [1, 1]
    assert audio_image_similarity(cands, audio).shape == (2, 3)


def test_rerank_helps_when_similarity_predicts_the_hit_and_not_when_it_is_noise():
    rng = np.random.default_rng(0)
    n, k, d = 300, 8, 16
    audio = torch.randn(n, d, dtype=torch.float64)
    sim_noise = torch.randn(n, k, d, dtype=torch.float64)
    emb = audio[:, None, :] * 0.3 + sim_noise  # candidates with random similarity
    sim = audio_image_similarity(emb, audio).numpy()
    informative = {"AIC": (sim > np.median(sim)).astype(float), "AIS": sim}
    useless = {"AIC": (rng.random((n, k)) < 0.5).astype(float), "AIS": rng.random((n, k))}
    rows = {(r["N"], r["metric"]): r for r in rerank_table(informative, emb, audio, (1, 8))}
    gain = rows[(8, "AIC")]["best_of_n"].mean() - rows[(8, "AIC")]["independent"].mean()
    assert gain > 0.3
    assert np.array_equal(rows[(1, "AIC")]["best_of_n"], rows[(1, "AIC")]["first"])
    rows_u = {(r["N"], r["metric"]): r for r in rerank_table(useless, emb, audio, (8,))}
    assert abs(rows_u[(8, "AIC")]["best_of_n"].mean() - rows_u[(8, "AIC")]["independent"].mean()) < 0.1


# ----------------------------------------------------------------------------------------------------------
# Full mode's Inception weights: downloaded once, hash-checked (tested on local files)
# ----------------------------------------------------------------------------------------------------------
def test_fetch_verified_downloads_checks_and_reuses(tmp_path):
    from a2i_utils.evaluation.inception import fetch_verified

    src = tmp_path / "weights.pth"
    src.write_bytes(b"inception weights" * 100)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "w.pth"
    assert fetch_verified(src.as_uri(), dest, good, progress=False).read_bytes() == src.read_bytes()
    src.unlink()  # a second call must not need the source: the cached, verified file is reused
    assert fetch_verified(src.as_uri(), dest, good, progress=False) == dest


def test_fetch_verified_refuses_a_wrong_hash_and_replaces_a_damaged_file(tmp_path):
    from a2i_utils.evaluation.inception import fetch_verified
    from a2i_utils.io import CheckpointError

    src = tmp_path / "weights.pth"
    src.write_bytes(b"the real bytes")
    dest = tmp_path / "cache" / "w.pth"
    with pytest.raises(CheckpointError, match="SHA-256"):
        fetch_verified(src.as_uri(), dest, "0" * 64, progress=False)
    assert not dest.exists()  # a wrong download is not left to be trusted later
    dest.write_bytes(b"damaged")
    good = hashlib.sha256(b"the real bytes").hexdigest()
    assert fetch_verified(src.as_uri(), dest, good, progress=False).read_bytes() == b"the real bytes"


def test_inception_address_and_hash_are_the_published_ones():
    from a2i_utils.evaluation import inception

    assert inception.INCEPTION_URL.endswith(inception.INCEPTION_FILENAME)
    assert inception.INCEPTION_SHA256.startswith("6726825d")  # the file name carries the hash prefix
