"""Metrics of generated images on the held-out split, per system: AIS, IIS, AIC, FD and KD, with intervals.

- **AIS** (audio-image similarity rank): for each generated image, the share of *distractor* recordings whose
  ImageBind audio embedding is less similar (cosine) to the image's ImageBind vision embedding than its own
  recording's is. 1 = its own recording is the closest of all, 0.5 = chance (ties count half).
- **IIS** (image-image similarity rank): the same ranking against the ground-truth images' vision embeddings.
- **AIC** (audio-image consistency): the share of images a scene judge puts in the recording's scene. Demo: the
  scene classifier trained on the synthetic training images (``a2i_utils.evaluation.scene_classifier``); full:
  ImageBind zero-shot, the nearest text embedding of the 13 class prompts. The judge's own accuracy on the
  held-out ground-truth images is reported beside it.
- **FD / KD**: Fréchet and kernel (KID) distances between the features of the generated and the held-out images,
  computed by ``torchmetrics``. Full mode: the standard Inception features (``inception.py``), so FID and KID.
  Demo mode: the scene classifier's pooled features, so "FD, scene-classifier features", *never* "FID".

AIS, IIS and AIC are averaged over each recording's images first; the interval is a percentile bootstrap over
recordings (the unit that was drawn), as :func:`a2i_utils.evaluation.aic.bootstrap_ci`. FD and KD are set
statistics: their interval resamples recordings (with their images) and recomputes them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from a2i_utils.evaluation.aic import bootstrap_ci, hit_rates

PER_RECORDING = ("AIS", "IIS", "AIC")  # metrics averaged per recording, then over recordings
SET_METRICS = ("FD", "KD")  # distances between two sets of features
HIGHER_IS_BETTER = {"AIS": True, "IIS": True, "AIC": True, "FD": False, "KD": False}
VALID_RANGE = {"AIS": (0.0, 1.0), "IIS": (0.0, 1.0), "AIC": (0.0, 1.0), "FD": (0.0, np.inf), "KD": (-np.inf, np.inf)}
N_BOOT = 2000  # bootstrap resamples of the per-recording metrics (cheap)
N_BOOT_SET = 200  # resamples of FD/KD (each recomputes a distance)


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
# Feature distances (FD, KD) with torchmetrics
# ----------------------------------------------------------------------------------------------------------
class ClassifierFeatures(nn.Module):
    """The scene classifier's pooled features: uint8 (B, 3, H, W) -> float64 (B, 4w), a torchmetrics extractor."""

    def __init__(self, classifier) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = classifier.head.in_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features before the classifier's linear head."""
        h = self.classifier.blocks(x.float() / 127.5 - 1.0)  # (B, 4w, H/8, W/8)
        return h.mean(dim=(2, 3)).double()  # (B, 4w)


class Precomputed(nn.Module):
    """Features already computed pass through: lets torchmetrics recompute distances on bootstrap resamples."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity."""
        return x


def to_chw(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> uint8 (M, 3, H, W), as torchmetrics' image metrics take them."""
    flat = images.reshape(-1, *images.shape[-3:])  # (M, H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(flat)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def extract(extractor: nn.Module, images: np.ndarray, batch: int = 128) -> torch.Tensor:
    """Features (M, F) of uint8 images (..., H, W, 3)."""
    x = to_chw(images)
    return torch.cat([extractor(x[i : i + batch]).double().cpu() for i in range(0, len(x), batch)])


def feature_distances(real: torch.Tensor, fake: torch.Tensor, kid_subsets: int = 50, seed: int = 0) -> dict:
    """FD and KD (mean over subsets) between feature sets real (R, F) and fake (G, F), by torchmetrics."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    nf = real.shape[1]
    fid = FrechetInceptionDistance(feature=Precomputed(nf), reset_real_features=True)
    fid.set_dtype(torch.float64)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    subset = min(len(real), len(fake), 100)
    torch.manual_seed(seed)  # KID draws its subsets with torch's global generator
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=Precomputed(nf), subsets=kid_subsets, subset_size=subset)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    kd_mean, _ = kid.compute()
    return {"FD": max(0.0, float(fid.compute())), "KD": float(kd_mean)}  # FD >= 0 (clip round-off)


def set_metric_ci(real: torch.Tensor, fake: torch.Tensor, n: int, n_boot: int = N_BOOT_SET, seed: int = 0) -> dict:
    """FD and KD with percentile intervals from resampling recordings: real (N, F), fake (N * n, F)."""
    point = feature_distances(real, fake, seed=seed)
    rng = np.random.default_rng(seed)
    fake_by_rec = fake.reshape(len(real), n, -1)  # (N, n, F)
    boots = {k: [] for k in SET_METRICS}
    for b in range(n_boot):
        idx = torch.as_tensor(rng.integers(0, len(real), len(real)))
        d = feature_distances(real[idx], fake_by_rec[idx].reshape(-1, real.shape[1]), kid_subsets=10, seed=seed + b)
        for k in SET_METRICS:
            boots[k].append(d[k])
    return {k: (point[k], tuple(float(q) for q in np.quantile(boots[k], [0.025, 0.975]))) for k in SET_METRICS}


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
    """Per-recording scores (N,) of AIS, IIS, AIC; FD and KD with intervals; the images themselves."""

    name: str
    per_recording: dict
    set_metrics: dict
    images: np.ndarray = field(repr=False, default=None)

    def summary(self, n_boot: int = N_BOOT, seed: int = 0) -> dict:
        """{metric: (mean, (lo, hi))} for every metric."""
        out = {k: (float(v.mean()), bootstrap_ci(v, n_boot, seed)) for k, v in self.per_recording.items()}
        return out | self.set_metrics


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


def evaluate_images(ctx: EvalContext, name: str, images: np.ndarray, n_boot_set: int = N_BOOT_SET,
                    seed: int = 0, set_metrics: bool = True) -> SystemResult:
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
        sets = set_metric_ci(ctx.real_features, fake, images.shape[1], n_boot=n_boot_set, seed=seed)
    else:
        sets = {k: (float("nan"), (float("nan"), float("nan"))) for k in SET_METRICS}
    return SystemResult(name, per_rec, sets, images)


def build_context(cfg, dataset, embedder, n_recordings: int | None = None, progress: bool = False) -> EvalContext:
    """The held-out recordings (one pair per recording, the first ``n_recordings``), their embeddings and judge."""
    from a2i_utils.data import CLASSES, load_image
    from a2i_utils.imagebind.cache import embed_files
    from a2i_utils.imagebind.retrieval import one_pair_per_recording

    pairs = one_pair_per_recording(dataset.val)
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
