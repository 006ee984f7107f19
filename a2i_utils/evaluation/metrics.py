"""Metrics of generated images on the held-out split, per system: AIS, IIS, AIC, FD and KD, with intervals.

- **AIS** (audio-image similarity rank): for each generated image, the share of *distractor* recordings whose
  ImageBind audio embedding is less similar (cosine) to the image's ImageBind vision embedding than its own
  recording's is. 1 = its own recording is the closest of all, 0.5 = chance (ties count half).
- **IIS** (image-image similarity rank): the same ranking against the ground-truth images' vision embeddings.
- **AIC** (audio-image consistency): the share of images a scene judge puts in the recording's scene. Demo: the
  scene classifier trained on the synthetic training images (``a2i_utils.evaluation.scene_classifier``); full:
  ImageBind zero-shot, the nearest text embedding of the 13 class prompts. The judge's own accuracy on the
  held-out ground-truth images is reported beside it.
- **FD / KD**: Fréchet and kernel (KID) distances between the features of the generated and the held-out images.
  FD is FID's formula (equal to torchmetrics' to round-off); KD is KID's kernel and unbiased estimator, taken over
  pairs of distinct recordings (:func:`kd_pair_terms`). Full mode: the standard Inception features
  (``inception.py``), so FID and KID. Demo mode: the scene classifier's pooled features, so "FD, scene-classifier
  features", *never* "FID".

AIS, IIS and AIC are averaged over each recording's images first; the interval is a percentile bootstrap over
recordings (the unit that was drawn), as :func:`a2i_utils.evaluation.aic.bootstrap_ci`. FD and KD are set
statistics, which a bootstrap with replacement biases upward (a duplicated feature looks like a close match):
their interval is a jackknife over recordings (leave one recording and its images out, :func:`jackknife_ci`),
and two systems are compared by the jackknife of their paired difference (:func:`paired_set_difference`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import torch
from torch import nn

from a2i_utils.evaluation.aic import bootstrap_ci, hit_rates

PER_RECORDING = ("AIS", "IIS", "AIC")  # metrics averaged per recording, then over recordings
SET_METRICS = ("FD", "KD")  # distances between two sets of features
HIGHER_IS_BETTER = {"AIS": True, "IIS": True, "AIC": True, "FD": False, "KD": False}
VALID_RANGE = {"AIS": (0.0, 1.0), "IIS": (0.0, 1.0), "AIC": (0.0, 1.0), "FD": (0.0, np.inf), "KD": (-np.inf, np.inf)}
N_BOOT = 2000  # bootstrap resamples of the per-recording metrics (cheap)


# ----------------------------------------------------------------------------------------------------------
# Ranking scores (AIS, IIS)
# ----------------------------------------------------------------------------------------------------------
def rank_scores(queries: torch.Tensor, refs: torch.Tensor, owner: Sequence[int]) -> np.ndarray:
    """Share of distractor refs ranked below each query's own ref, by cosine similarity (ties count half).

    queries (M, D) (generated images), refs (R, D) (recordings or ground-truth images), owner (M,): the index in
    ``refs`` of each query's own item. Returns (M,) in [0, 1]; a random pairing gives 0.5 on average.
    """
    owner = torch.as_tensor(np.asarray(owner), dtype=torch.long)
    r = refs.shape[0]
    if r < 2:
        raise ValueError(f"rank_scores needs at least 2 references (distractors), got {r}")
    q = nn.functional.normalize(queries.float(), dim=-1)
    k = nn.functional.normalize(refs.float(), dim=-1)
    sim = q @ k.T  # (M, R)
    own = sim.gather(1, owner[:, None])  # (M, 1)
    below = (sim < own).sum(1).float()  # (M,) own ref is never below itself
    ties = (sim == own).sum(1).float() - 1  # (M,) minus the own ref
    return ((below + 0.5 * ties) / (r - 1)).numpy()


def per_recording(values: np.ndarray, n: int) -> np.ndarray:
    """Scores of images ordered recording by recording (N * n,) -> the mean per recording (N,)."""
    return np.asarray(values, dtype=float).reshape(-1, n).mean(axis=1)  # (N, n) -> (N,)


# ----------------------------------------------------------------------------------------------------------
# Images -> ImageBind vision embeddings (generated images are arrays, not files)
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def embed_images(embedder, images: np.ndarray, batch: int = 64) -> torch.Tensor:
    """uint8 images (..., H, W, 3) -> ImageBind vision embeddings (M, D), through ImageBind's own transform."""
    from PIL import Image

    from a2i_utils.imagebind.preprocess import vision_transform

    flat = images.reshape(-1, *images.shape[-3:])  # (M, H, W, 3)
    tf = vision_transform()
    out = []
    for i in range(0, len(flat), batch):
        x = torch.stack([tf(Image.fromarray(im)) for im in flat[i : i + batch]])  # (b, 3, 224, 224)
        out.append(embedder.embed("vision", x))
    return torch.cat(out) if out else torch.empty(0, embedder.embed_dim)


# ----------------------------------------------------------------------------------------------------------
# Scene judges (AIC)
# ----------------------------------------------------------------------------------------------------------
class ClassifierJudge:
    """Demo mode: the scene classifier trained on the synthetic training images."""

    name = "scene classifier (trained on the training images)"

    def __init__(self, model) -> None:
        self.model = model

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (..., H, W, 3) -> class indices (...)."""
        from a2i_utils.evaluation.scene_classifier import predict

        return predict(self.model, images)


class ZeroShotJudge:
    """Full mode: ImageBind zero-shot, the class prompt whose text embedding is nearest the image's."""

    name = "ImageBind zero-shot (text embeddings of the 13 class prompts)"

    def __init__(self, embedder, class_text: torch.Tensor) -> None:
        self.embedder = embedder
        self.text = nn.functional.normalize(class_text.float(), dim=-1)  # (13, D)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (..., H, W, 3) -> class indices (...)."""
        emb = nn.functional.normalize(embed_images(self.embedder, images), dim=-1)  # (M, D)
        return (emb @ self.text.T).argmax(1).numpy().reshape(images.shape[:-3])


def load_judge(cfg, dataset, embedder, progress: bool = False):
    """The scene judge of the preset: the trained classifier (demo) or ImageBind zero-shot (full)."""
    if cfg.imagebind.model == "huge":
        from a2i_utils.data import CLASSES
        from a2i_utils.imagebind.cache import embed_texts
        from a2i_utils.imagebind.preprocess import class_prompts

        return ZeroShotJudge(embedder, embed_texts(embedder, class_prompts(CLASSES), cfg))
    from a2i_utils.evaluation.scene_classifier import load_or_train_classifier

    model, _ = load_or_train_classifier(cfg, dataset, progress=progress)
    return ClassifierJudge(model)


# ----------------------------------------------------------------------------------------------------------
# Feature distances (FD, KD) and their jackknife intervals
# ----------------------------------------------------------------------------------------------------------
class ClassifierFeatures(nn.Module):
    """The scene classifier's pooled features: uint8 (B, 3, H, W) -> float64 (B, 4w)."""

    def __init__(self, classifier) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = classifier.head.in_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features before the classifier's linear head."""
        h = self.classifier.blocks(x.float() / 127.5 - 1.0)  # (B, 4w, H/8, W/8)
        return h.mean(dim=(2, 3)).double()  # (B, 4w)


def to_chw(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> uint8 (M, 3, H, W), as torchmetrics' image metrics take them."""
    flat = images.reshape(-1, *images.shape[-3:])  # (M, H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(flat)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def extract(extractor: nn.Module, images: np.ndarray, batch: int = 128) -> torch.Tensor:
    """Features (M, F) of uint8 images (..., H, W, 3)."""
    x = to_chw(images)
    return torch.cat([extractor(x[i : i + batch]).double().cpu() for i in range(0, len(x), batch)])


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """FD of feature sets real (..., R, F) and fake (..., G, F), batched over the leading dims: (...).

    FD = |mu_r - mu_f|^2 + tr S_r + tr S_f - 2 tr (S_r^1/2 S_f S_r^1/2)^1/2, the formula of FID. With centred
    features C_r, C_f, the last trace is the sum of the singular values of C_r C_f^T / sqrt((R-1)(G-1)), computed
    here from the QR factors (min(R, F) x min(G, F)): no matrix square root, and cheap when F >> R.
    """
    real, fake = real.double(), fake.double()
    mr, mf = real.mean(-2), fake.mean(-2)  # (..., F)
    cr, cf = real - mr.unsqueeze(-2), fake - mf.unsqueeze(-2)  # (..., R, F), (..., G, F)
    r, g = real.shape[-2], fake.shape[-2]
    traces = cr.pow(2).sum((-2, -1)) / (r - 1) + cf.pow(2).sum((-2, -1)) / (g - 1)  # (...)
    rr, rf = torch.linalg.qr(cr, mode="r")[1], torch.linalg.qr(cf, mode="r")[1]  # (..., min(R, F), F), ...
    cross = torch.linalg.svdvals(rr @ rf.transpose(-1, -2)).sum(-1) / ((r - 1) * (g - 1)) ** 0.5  # (...)
    return ((mr - mf).pow(2).sum(-1) + traces - 2 * cross).clamp_min(0.0)  # >= 0 (clip round-off)


def fd_from_grams(sum_rr: torch.Tensor, tr_rr: torch.Tensor, sum_ff: torch.Tensor, tr_ff: torch.Tensor,
                  g_rf: torch.Tensor) -> torch.Tensor:
    """FD from dot products of the features: the sums and traces of the Gram matrices of the real (R, R) and the
    fake (G, G) set, each (...), and the cross products g_rf (..., R, G) -> (...).

    The same FD as :func:`frechet_distance`: |mu_r - mu_f|^2 from the means of the Gram matrices, tr S from their
    centred traces, and the cross trace as the sum of the square roots of the eigenvalues of K K^T (R x R), K the
    double-centred g_rf. Leaving a recording out only deletes rows and columns, so the jackknife of FD needs no new
    products of F-dim features (2,048 for Inception).
    """
    r, g = g_rf.shape[-2:]
    mean_sq = sum_rr / r**2 + sum_ff / g**2 - 2 * g_rf.mean((-2, -1))  # (...)
    traces = (tr_rr - sum_rr / r) / (r - 1) + (tr_ff - sum_ff / g) / (g - 1)  # (...) tr S_r + tr S_f
    k = g_rf - g_rf.mean(-1, keepdim=True) - g_rf.mean(-2, keepdim=True) + g_rf.mean((-2, -1), keepdim=True)
    cross = torch.linalg.eigvalsh(k @ k.transpose(-1, -2)).clamp_min(0.0).sqrt().sum(-1) / ((r - 1) * (g - 1)) ** 0.5
    return (mean_sq + traces - 2 * cross).clamp_min(0.0)


def kid_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KID's polynomial kernel (a.b / F + 1)^3 of a (..., A, F) and b (..., B, F): (..., A, B)."""
    return (a @ b.transpose(-1, -2) / a.shape[-1] + 1.0) ** 3


def kd_pair_terms(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """KD's terms for each pair of distinct recordings: real (..., N, F), fake (..., N, n, F) -> h (..., N, N).

    h(i, j) = k(x_i, x_j) + k(Y_i, Y_j) - k(x_i, Y_j) - k(x_j, Y_i), where Y_i are recording i's n images and
    k(., Y) averages over them; h(i, i) = 0. KD is the mean of h over ordered pairs i != j: KID's unbiased MMD^2
    estimator with every comparison inside one recording left out (a recording's images are not compared with each
    other nor with its own real image, which they depend on), so it stays unbiased although the images are paired.
    """
    *batch, n_rec, n, nf = fake.shape
    flat = fake.reshape(*batch, n_rec * n, nf).double()  # (..., N * n, F)
    real = real.double()
    k_rr = kid_kernel(real, real)  # (..., N, N)
    k_ff = kid_kernel(flat, flat).reshape(*batch, n_rec, n, n_rec, n).mean((-3, -1))  # (..., N, N)
    k_rf = kid_kernel(real, flat).reshape(*batch, n_rec, n_rec, n).mean(-1)  # (..., N, N): real i, images of j
    off = 1.0 - torch.eye(n_rec, dtype=k_rr.dtype)  # (N, N) zero on the diagonal
    return (k_rr + k_ff - k_rf - k_rf.transpose(-1, -2)) * off


def set_metric_values(real: torch.Tensor, fake: torch.Tensor, n: int, chunk_elems: int = 2**24) -> dict:
    """FD and KD of real (N, F) against fake (N * n, F), and their N leave-one-recording-out values.

    Returns {metric: (value, loo (N,))}: loo[i] is the metric recomputed without recording i (its real image and
    its n images), the jackknife's resamples: subsets, so no feature is ever duplicated. With more features than
    recordings the leave-one-out FDs come from the Gram matrices (:func:`fd_from_grams`); batched in chunks of about
    ``chunk_elems`` numbers.
    """
    n_rec, nf = real.shape
    if n_rec < 3:
        raise ValueError(f"FD/KD intervals need at least 3 recordings, got {n_rec}")
    if fake.shape[0] != n_rec * n:
        raise ValueError(f"{fake.shape[0]} image features for {n_rec} recordings x {n} images")
    fake_by_rec = fake.double().reshape(n_rec, n, nf)  # (N, n, F)
    real, fake = real.double(), fake.double()
    fd = float(frechet_distance(real, fake))
    keep = torch.arange(n_rec).expand(n_rec, n_rec)[~torch.eye(n_rec, dtype=torch.bool)].reshape(n_rec, -1)  # (N, N-1)
    if nf < n_rec:  # few features: recompute FD on the kept features
        step = max(1, chunk_elems // ((n_rec - 1) * (n + 1) * nf))
        fd_loo = torch.cat([frechet_distance(real[kr], fake_by_rec[kr].reshape(len(kr), -1, nf))  # (b,)
                            for kr in keep.split(step)])
    else:  # many (Inception's 2,048): from the Gram matrices, only rows and columns deleted
        fd_loo = _fd_loo_from_grams(real, fake, n, keep, chunk_elems)
    h = kd_pair_terms(real, fake_by_rec)  # (N, N)
    total, rows = h.sum(), h.sum(1)  # (), (N,)
    kd = float(total / (n_rec * (n_rec - 1)))
    kd_loo = (total - 2 * rows) / ((n_rec - 1) * (n_rec - 2))  # (N,) the mean over pairs without recording i
    return {"FD": (fd, fd_loo.numpy()), "KD": (kd, kd_loo.numpy())}


def _fd_loo_from_grams(real: torch.Tensor, fake: torch.Tensor, n: int, keep: torch.Tensor,
                       chunk_elems: int) -> torch.Tensor:
    """FD without each recording, from the Gram matrices: real (N, F), fake (N * n, F), keep (N, N-1) -> (N,)."""
    n_rec = len(real)
    g_rr, g_ff, g_rf = real @ real.T, fake @ fake.T, real @ fake.T  # (N, N), (N n, N n), (N, N n)
    d_rr, d_ff = g_rr.diagonal(), g_ff.diagonal().reshape(n_rec, n)  # (N,), (N, n)
    own_ff = torch.einsum("iaib->i", g_ff.reshape(n_rec, n, n_rec, n))  # (N,) the block of i's images
    sum_rr = g_rr.sum() - 2 * g_rr.sum(1) + d_rr  # (N,) the Gram sums and traces without recording i
    sum_ff = g_ff.sum() - 2 * g_ff.sum(1).reshape(n_rec, n).sum(1) + own_ff
    tr_rr, tr_ff = d_rr.sum() - d_rr, d_ff.sum() - d_ff.sum(1)
    keep_f = (keep[:, :, None] * n + torch.arange(n)).reshape(n_rec, -1)  # (N, (N-1) n) the kept images
    step = max(1, chunk_elems // ((n_rec - 1) ** 2 * n))
    return torch.cat([fd_from_grams(sum_rr[i], tr_rr[i], sum_ff[i], tr_ff[i], g_rf[kr[:, :, None], kf[:, None, :]])
                      for i, kr, kf in zip(torch.arange(n_rec).split(step), keep.split(step), keep_f.split(step))])


def jackknife_ci(value: float, loo: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Normal interval value +- z * se from leave-one-out values loo (N,): se^2 = (N-1)/N sum (loo - mean)^2.

    The jackknife standard error (Quenouille, Tukey) of a statistic computed on N independent units. It never
    duplicates a unit, and by the Efron-Stein inequality its variance errs on the wide side: most when two
    feature sets have the same distribution, where FD and KD are second-order statistics.
    """
    loo = np.asarray(loo, dtype=float)
    n = len(loo)
    se = float(np.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum()))
    z = NormalDist().inv_cdf((1 + level) / 2)
    return value - z * se, value + z * se


def set_metric_ci(real: torch.Tensor, fake: torch.Tensor, n: int, level: float = 0.95) -> tuple[dict, dict]:
    """FD and KD of real (N, F) against fake (N * n, F) with jackknife intervals over recordings.

    Returns ({metric: (value, (lo, hi))}, {metric: leave-one-out values (N,)}); the second lets two systems
    measured on the same recordings be compared by a paired jackknife (:func:`paired_set_difference`). FD's
    interval is clipped at 0. Its target: FD is biased upward at a finite N (by an amount that depends on N and
    the features), so the interval is for the FD expected at this many recordings, not for the FD of infinitely
    many. KD is unbiased, so its interval is for the distance itself.
    """
    values = set_metric_values(real, fake, n)
    out = {}
    for metric, (value, loo) in values.items():
        lo, hi = jackknife_ci(value, loo, level)
        out[metric] = (value, (max(lo, VALID_RANGE[metric][0]), hi))
    return out, {metric: loo for metric, (_, loo) in values.items()}


# ----------------------------------------------------------------------------------------------------------
# One context for all systems, one result per system
# ----------------------------------------------------------------------------------------------------------
@dataclass
class EvalContext:
    """What every system is measured against: the held-out recordings, one pair per recording.

    labels (N,) class indices; audio (N, D) ImageBind audio embeddings; gt_images uint8 (N, H, W, 3) at the
    generated size; gt_vision (N, D) their ImageBind vision embeddings; real_features (N, F) for FD/KD.
    """

    pairs: list
    labels: np.ndarray
    audio: torch.Tensor
    gt_images: np.ndarray
    gt_vision: torch.Tensor
    embedder: object
    judge: object
    extractor: nn.Module
    feature_name: str
    real_features: torch.Tensor = field(default=None)
    judge_accuracy: float = float("nan")

    def __post_init__(self) -> None:
        if self.real_features is None:
            self.real_features = extract(self.extractor, self.gt_images)
        if np.isnan(self.judge_accuracy):
            self.judge_accuracy = float((self.judge.predict(self.gt_images) == self.labels).mean())


@dataclass
class SystemResult:
    """Per-recording scores (N,) of AIS, IIS, AIC; FD and KD with intervals; the images themselves.

    ``set_loo`` holds FD's and KD's leave-one-recording-out values (N,), for paired comparisons.
    """

    name: str
    per_recording: dict
    set_metrics: dict
    images: np.ndarray = field(repr=False, default=None)
    set_loo: dict = field(repr=False, default_factory=dict)

    def summary(self, n_boot: int = N_BOOT, seed: int = 0) -> dict:
        """{metric: (mean, (lo, hi))} for every metric."""
        out = {k: (float(v.mean()), bootstrap_ci(v, n_boot, seed)) for k, v in self.per_recording.items()}
        return out | self.set_metrics


def paired_set_difference(a: SystemResult, b: SystemResult, metric: str,
                          level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """b - a on FD or KD, with the jackknife interval of the paired difference: (diff, (lo, hi)).

    Both systems were measured on the same recordings, so leaving recording i out of both gives the leave-one-out
    value of the difference; what the two share (the real features, the recordings drawn) cancels.
    """
    for r in (a, b):
        if metric not in r.set_loo:
            raise ValueError(f"{r.name}: no leave-one-out values of {metric} (measured with set_metrics=False?)")
    if len(a.set_loo[metric]) != len(b.set_loo[metric]):
        raise ValueError(f"{a.name} and {b.name} were measured on {len(a.set_loo[metric])} and "
                         f"{len(b.set_loo[metric])} recordings: not a paired comparison")
    diff = b.set_metrics[metric][0] - a.set_metrics[metric][0]
    return diff, jackknife_ci(diff, b.set_loo[metric] - a.set_loo[metric], level)


def image_scores(ctx: EvalContext, images: np.ndarray) -> dict:
    """Per-image AIS, IIS and AIC hits of images (N, n, H, W, 3): each (N, n)."""
    n_rec, n = images.shape[:2]
    owner = np.repeat(np.arange(n_rec), n)  # (N * n,)
    emb = embed_images(ctx.embedder, images)  # (N * n, D)
    return {
        "AIS": rank_scores(emb, ctx.audio, owner).reshape(n_rec, n),
        "IIS": rank_scores(emb, ctx.gt_vision, owner).reshape(n_rec, n),
        "AIC": (ctx.judge.predict(images) == ctx.labels[:, None]).astype(float),
        "emb": emb.reshape(n_rec, n, -1),
    }


def evaluate_images(ctx: EvalContext, name: str, images: np.ndarray, set_metrics: bool = True) -> SystemResult:
    """All metrics of one system's images (N, n, H, W, 3), image j of recording i drawn for ``ctx.pairs[i]``.

    ``set_metrics=False`` leaves FD/KD undefined (NaN): for the held-out images themselves, a set compared with
    itself (KD's unbiased estimator is not even defined for identical samples).
    """
    if images.shape[0] != len(ctx.pairs):
        raise ValueError(f"{name}: {images.shape[0]} rows of images for {len(ctx.pairs)} recordings")
    scores = image_scores(ctx, images)
    per_rec = {k: scores[k].mean(axis=1) for k in PER_RECORDING}  # (N,) each
    assert np.allclose(per_rec["AIC"], hit_rates(ctx.judge.predict(images), ctx.labels))
    if set_metrics:
        fake = extract(ctx.extractor, images)  # (N * n, F)
        sets, loo = set_metric_ci(ctx.real_features, fake, images.shape[1])
    else:
        sets, loo = {k: (float("nan"), (float("nan"), float("nan"))) for k in SET_METRICS}, {}
    return SystemResult(name, per_rec, sets, images, loo)


def build_context(cfg, dataset, embedder, n_recordings: int | None = None, progress: bool = False) -> EvalContext:
    """The test recordings (one pair per recording, the first ``n_recordings``), their embeddings and judge.

    Test, not validation: sampling settings are chosen on validation, every reported number is on test."""
    from a2i_utils.data import CLASSES, load_image
    from a2i_utils.imagebind.cache import embed_files
    from a2i_utils.imagebind.retrieval import one_pair_per_recording

    pairs = one_pair_per_recording(dataset.test)
    if n_recordings:
        pairs = spread_over_classes(pairs, n_recordings)
    size = cfg.soundiff.image_size
    gt = np.stack([load_image(p.image_path, size) for p in pairs])  # (N, size, size, 3)
    audio = embed_files(embedder, [p.audio_path for p in pairs], "audio", cfg, progress=progress)  # (N, D)
    judge = load_judge(cfg, dataset, embedder, progress=progress)
    extractor, name = feature_extractor(cfg, judge)
    return EvalContext(pairs, np.array([CLASSES.index(p.label) for p in pairs]), audio, gt, embed_images(embedder, gt),
                       embedder, judge, extractor, name)


def spread_over_classes(pairs: list, n: int) -> list:
    """The first ``n`` pairs taken round-robin over the classes (so a small evaluation still sees every scene)."""
    by_class: dict[str, list] = {}
    for p in pairs:
        by_class.setdefault(p.label, []).append(p)
    queues = [list(v) for _, v in sorted(by_class.items())]
    out = []
    while len(out) < min(n, len(pairs)):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def feature_extractor(cfg, judge) -> tuple[nn.Module, str]:
    """(module, name) of the FD/KD features: Inception (full: FID/KID) or the scene classifier's (demo: FD/KD)."""
    if cfg.imagebind.model == "huge":
        from a2i_utils.evaluation.inception import load_inception

        return load_inception(cfg), "Inception-v3 pool features (FID / KID)"
    return ClassifierFeatures(judge.model), "scene-classifier features (FD / KD, not FID)"
