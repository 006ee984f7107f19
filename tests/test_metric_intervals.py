"""FD/KD intervals on simulated features (seconds): coverage of the truth, no duplicated features, paired differences.

Each simulated "recording" has one real feature vector and ``n`` generated ones. The truths: KD is unbiased, so its
truth is the population distance (0 for the same distribution), estimated where it is not known as the mean of
many independent estimates; FD is biased upward at a finite size, so its interval targets the FD expected at this
many recordings, E[FD_N], also estimated from many independent draws.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2i_utils.evaluation.metrics import (
    SystemResult,
    frechet_distance,
    jackknife_ci,
    kd_pair_terms,
    paired_set_difference,
    set_metric_ci,
    set_metric_values,
)
from a2i_utils.evaluation.report import verdict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_REC, N_IMG, DIM = 30, 2, 4  # recordings, images per recording, feature dims: small, so 200 repetitions take seconds
REPS = 200


def draw(g: torch.Generator, reps: int, shift: float = 0.0, n_rec: int = N_REC, dim: int = DIM):
    """reps simulated evaluations: real (reps, N, F), fake (reps, N * n, F), fake's first dim shifted by ``shift``."""
    real = torch.randn(reps, n_rec, dim, generator=g, dtype=torch.float64)
    fake = torch.randn(reps, n_rec * N_IMG, dim, generator=g, dtype=torch.float64)
    fake[..., 0] += shift
    return real, fake


def kd_values(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """KD of evaluations real (..., N, F), fake (..., N * n, F): the mean of the pair terms over distinct pairs."""
    n_rec = real.shape[-2]
    h = kd_pair_terms(real, fake.reshape(*fake.shape[:-2], n_rec, N_IMG, -1))  # (..., N, N)
    return h.sum((-2, -1)) / (n_rec * (n_rec - 1))


def truths(g: torch.Generator, shift: float, draws: int = 2000) -> dict:
    """E[FD_N] and E[KD_N] (= the population KD) over ``draws`` independent evaluations."""
    real, fake = draw(g, draws, shift)
    return {"FD": float(frechet_distance(real, fake).mean()),
            "KD": float(kd_values(real, fake).mean())}


def coverage(ci_fn, shift: float, seed: int) -> dict:
    """Share of REPS seeded evaluations whose 95% interval covers the truth, per metric; ci_fn(real, fake) -> CIs."""
    g = torch.Generator().manual_seed(seed)
    truth = truths(g, shift)
    real, fake = draw(g, REPS, shift)
    hits = {"FD": 0, "KD": 0}
    for r, f in zip(real, fake):
        for metric, (_, (lo, hi)) in ci_fn(r, f).items():
            hits[metric] += lo <= truth[metric] <= hi
    return {k: v / REPS for k, v in hits.items()}


def jackknife(real, fake):
    return set_metric_ci(real, fake, N_IMG)[0]


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_fd_kd_intervals_cover_the_truth_about_95_percent(shift):
    """Same distribution (KD's truth 0) and a known shift: coverage within 88-99% over 200 seeded repetitions.

    The old percentile bootstrap with replacement covered neither truth: its intervals lay above the estimates.
    """
    cov = coverage(jackknife, shift, seed=int(10 * shift))
    for metric, c in cov.items():
        assert 0.88 <= c <= 0.99, (metric, shift, c)


def test_kd_is_unbiased_for_the_same_distribution():
    """KD over pairs of distinct recordings averages to 0 when real and generated features share a distribution."""
    g = torch.Generator().manual_seed(3)
    real, fake = draw(g, 2000)
    values = kd_values(real, fake).numpy()
    assert abs(values.mean()) < 3 * values.std() / np.sqrt(len(values))


def test_kd_ignores_a_recordings_own_images_even_when_they_copy_its_real_image():
    """Images that copy their recording's real image are no closer to the real set than any independent set.

    A paired estimator that compared each image with its own real image would see a perfect match (KD far below 0).
    """
    g = torch.Generator().manual_seed(4)
    real, _ = draw(g, 1)
    copies = real[0].repeat_interleave(N_IMG, 0)  # (N * n, F): every image equals its recording's real image
    h = kd_pair_terms(real[0], copies.reshape(N_REC, N_IMG, DIM))
    assert torch.all(h.diagonal() == 0)
    assert float(kd_values(real[0], copies)) == pytest.approx(0.0, abs=1e-9)  # identical sets: every term cancels


def test_intervals_contain_their_estimate_and_the_issue_example_is_no_longer_above_it():
    """The issue's example: 51 recordings, 128 features, one distribution. Old: both intervals above the point."""
    g = torch.Generator().manual_seed(5)
    real, fake = draw(g, 1, n_rec=51, dim=128)
    out = set_metric_ci(real[0], fake[0], N_IMG)[0]
    for metric, (value, (lo, hi)) in out.items():
        assert lo <= value <= hi, (metric, value, lo, hi)
    assert out["KD"][1][0] <= 0.0 <= out["KD"][1][1]  # KD's truth, 0, is inside


@pytest.mark.parametrize("dim", [DIM, 40])  # fewer and more feature dims than recordings
def test_leave_one_out_values_are_the_metric_without_that_recording(dim):
    g = torch.Generator().manual_seed(6)
    real, fake = draw(g, 1, n_rec=8, dim=dim)
    values = set_metric_values(real[0], fake[0], N_IMG, chunk_elems=600)  # several chunks
    assert values["FD"][0] == pytest.approx(float(frechet_distance(real[0], fake[0])))
    fake_by_rec = fake[0].reshape(8, N_IMG, dim)
    for i in (0, 5, 7):
        keep = [k for k in range(8) if k != i]
        r, f = real[0][keep], fake_by_rec[keep].reshape(-1, dim)  # (7, F), (7 * n, F)
        assert values["FD"][1][i] == pytest.approx(float(frechet_distance(r, f)))
        assert values["KD"][1][i] == pytest.approx(float(kd_values(r, f)))


def test_jackknife_ci_of_a_mean_is_the_textbook_interval():
    x = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    loo = (x.sum() - x) / (len(x) - 1)
    lo, hi = jackknife_ci(x.mean(), loo)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert (lo, hi) == pytest.approx((x.mean() - 1.959964 * se, x.mean() + 1.959964 * se))


def test_too_few_recordings_or_mismatched_images_raise():
    with pytest.raises(ValueError, match="at least 3 recordings"):
        set_metric_values(torch.randn(2, 4), torch.randn(2, 4), 1)
    with pytest.raises(ValueError, match="5 image features for 4 recordings"):
        set_metric_values(torch.randn(4, 4), torch.randn(5, 4), 1)


# ----------------------------------------------------------------------------------------------------------
# FD against torchmetrics (and the closed form), KD against KID's estimator
# ----------------------------------------------------------------------------------------------------------
def torchmetrics_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = real.shape[1]

        def forward(self, x):
            return x

    fid = FrechetInceptionDistance(feature=Identity(), reset_real_features=True)
    fid.set_dtype(torch.float64)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


@pytest.mark.parametrize(("n_real", "n_fake", "dim"), [(50, 100, 6), (12, 24, 40)])  # F below and above the counts
def test_fd_equals_torchmetrics(n_real, n_fake, dim):
    g = torch.Generator().manual_seed(7)
    real = torch.randn(n_real, dim, generator=g, dtype=torch.float64)
    fake = torch.randn(n_fake, dim, generator=g, dtype=torch.float64) * 1.5 + 0.3
    assert float(frechet_distance(real, fake)) == pytest.approx(torchmetrics_fid(real, fake), rel=1e-6, abs=1e-8)


def test_kd_equals_kid_without_the_same_recording_cross_terms():
    """torchmetrics' KID on one subset holding every row = our KD plus the same-recording terms it also counts."""
    from torchmetrics.image.kid import KernelInceptionDistance

    from a2i_utils.evaluation.metrics import kid_kernel

    g = torch.Generator().manual_seed(8)
    n = 20
    real = torch.randn(n, 5, generator=g, dtype=torch.float64)
    fake = real + 0.5 * torch.randn(n, 5, generator=g, dtype=torch.float64)  # images that depend on their recording

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=n)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    kid_value = float(kid.compute()[0])
    k_rf = kid_kernel(real, fake)  # (n, n)
    ours = float(kd_values(real, fake.repeat_interleave(N_IMG, 0)))  # each image twice: the same KD
    # KID's cross term averages all n^2 pairs; ours leaves out the n same-recording ones
    want = kid_value + 2 * k_rf.sum().item() / n**2 - 2 * (k_rf.sum() - k_rf.diagonal().sum()).item() / (n * (n - 1))
    assert ours == pytest.approx(want, rel=1e-9)


# ----------------------------------------------------------------------------------------------------------
# Paired differences and verdicts
# ----------------------------------------------------------------------------------------------------------
def system(name: str, real: torch.Tensor, fake: torch.Tensor) -> SystemResult:
    sets, loo = set_metric_ci(real, fake, N_IMG)
    ones = np.ones(len(real))
    return SystemResult(name, {"AIS": ones, "IIS": ones, "AIC": ones}, sets, None, loo)


def test_paired_difference_covers_zero_between_equal_systems_about_95_percent():
    """Two systems with the same (imperfect) distribution, on the same recordings: the paired interval of b - a
    covers 0 in 88-99% of 200 repetitions; a clearly better system is called better."""
    g = torch.Generator().manual_seed(9)
    real, fake_a = draw(g, REPS, shift=1.0)
    _, fake_b = draw(g, REPS, shift=1.0)
    hits = {"FD": 0, "KD": 0}
    for r, fa, fb in zip(real, fake_a, fake_b):
        a, b = system("a", r, fa), system("b", r, fb)
        for metric in hits:
            _, (lo, hi) = paired_set_difference(a, b, metric)
            hits[metric] += lo <= 0.0 <= hi
    for metric, h in hits.items():
        assert 0.88 <= h / REPS <= 0.99, (metric, h / REPS)
    better = system("better", real[0], fake_a[0])  # shifted by 1
    worse = system("worse", real[0], fake_a[0] + torch.tensor([2.0, 0, 0, 0], dtype=torch.float64))  # by 3
    for metric in ("FD", "KD"):
        v = verdict(worse, better, metric)
        assert v["diff"] < 0 and v["ci"][1] < 0 and v["verdict"] == "better better", v


def test_paired_difference_needs_the_same_recordings():
    g = torch.Generator().manual_seed(10)
    real, fake = draw(g, 1)
    a = system("a", real[0], fake[0])
    b = system("b", real[0][:10], fake[0][: 10 * N_IMG])
    with pytest.raises(ValueError, match="not a paired comparison"):
        paired_set_difference(a, b, "FD")
    reference = SystemResult("reference", a.per_recording, a.set_metrics)
    with pytest.raises(ValueError, match="reference: no leave-one-out values of KD"):
        paired_set_difference(reference, a, "KD")
