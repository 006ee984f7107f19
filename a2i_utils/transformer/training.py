"""Training the pixel transformer: dataset, Adam with warm-up, exact resume, bits per dimension, train-or-load.

A training run lives in one folder under ``cfg.checkpoints_dir / "transformer"``, named after what it trains
(the run name, the model and optimiser settings, the seed, a fingerprint of the data and ``MODEL_VERSION``). Every
``checkpoint_every`` steps it writes ``step_NNNNNNN.safetensors`` (the weights), ``step_NNNNNNN.state.pt``
(optimiser, schedule, step, data order, random state; plain tensors, read with ``weights_only=True``), and last
``latest.json`` pointing at them: each goes to a temporary name first, then is renamed, so an interrupted run
leaves the previous checkpoint intact. ``losses.csv`` is a log appended to at each checkpoint (one row per step,
exact values), never rewritten; a resume reads the losses back from it, up to the checkpoint's step.
``heldout_bpd.csv`` does the same for the held-out bits per dimension measured every ``eval_every`` steps. The
:class:`~a2i_utils.transformer.features.FeatureNormalizer` the features were standardised with is saved beside
them (``normalizer.safetensors``), so :func:`load_run` gives back a model that can read a new recording.
Resuming restores all of that, so a resumed run continues with exactly the losses of an uninterrupted one.

Interruption and concurrency (tested by killing training with SIGKILL, ``tests/test_interruption_training.py``):
a run killed at any point, in a checkpoint write included, resumes from its last complete checkpoint and ends
with the weights and losses of an uninterrupted run, bit for bit. A half-written file only ever exists under
its temporary name (``.step_NNNNNNN.safetensors.<pid>.tmp``), which no loader reads; the next
:func:`train_or_load` of the run deletes such leftovers. A checkpoint damaged on disk (truncated, garbage, a
pickle that carries code) is refused with a :class:`CheckpointError` naming the file, never skipped: only one
checkpoint is kept, and with atomic writes damage means that something else changed the file. Delete the run
folder to train again. :func:`train_or_load` holds :func:`~a2i_utils.io.file_lock` on the run folder, so two
processes never train the same run at once: the second waits, then loads the finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from a2i_utils.config import Config, TransformerConfig
from a2i_utils.io import CheckpointError, atomic_write, atomic_write_text, cache_key, remove_stale_temps, waiting_lock
from a2i_utils.transformer.features import FeatureNormalizer, features_for_pairs
from a2i_utils.transformer.model import PixelTransformer, image_to_tokens

CHECKPOINT_EVERY = 100  # steps between checkpoints
# Bump when the training code changes what a run computes while keeping the tensor shapes (a new schedule,
# loss or data order): the run key includes it, so old checkpoints are no longer found instead of loaded.
MODEL_VERSION = 2  # 2: losses in an appended log (not in the state), the normaliser saved with the run
# Settings that do not change what a training step computes: a run with more steps resumes from fewer.
_NOT_IN_RUN_KEY = ("steps", "overfit_steps", "overfit_pairs")
LOSS_LOG = "losses.csv"
EVAL_LOG = "heldout_bpd.csv"
NORMALIZER_FILE = "normalizer.safetensors"
__all__ = ["CheckpointError", "MODEL_VERSION", "PixelDataset", "Trainer", "build_pixel_dataset", "bits_per_dim",
           "load_run", "LR_DECAYS", "lr_factor", "mean_abs_pixel_error", "run_dir_for", "run_lock", "train_or_load"]


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
class PixelDataset(torch.utils.data.Dataset):
    """In-memory pairs of audio features (S, F) float32 and pixel tokens (H*W,) long.

    ``normalizer`` is the :class:`FeatureNormalizer` the features were standardised with (saved with a run)."""

    def __init__(self, features: Tensor | np.ndarray, images: np.ndarray | Tensor, ids: list[str] | None = None,
                 normalizer: FeatureNormalizer | None = None):
        self.normalizer = normalizer
        self.features = torch.as_tensor(np.asarray(features), dtype=torch.float32)  # (N, S, F)
        self.images = torch.as_tensor(np.asarray(images))  # (N, H, W) uint8
        self.pixels = image_to_tokens(self.images)  # (N, H*W)
        if self.features.ndim != 3 or len(self.features) != len(self.pixels):
            raise ValueError(f"features must be (N, S, F) with one row per image: got {tuple(self.features.shape)}"
                             f" for {len(self.pixels)} images")
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(self.pixels))]

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.features[i], self.pixels[i]

    def subset(self, idx: list[int]) -> PixelDataset:
        """The pairs at positions ``idx``."""
        return PixelDataset(self.features[idx], self.images[idx], [self.ids[i] for i in idx], self.normalizer)

    def fingerprint(self) -> str:
        """A short hash of the features and pixels (names a checkpoint folder)."""
        h = hashlib.sha1()
        h.update(self.features.numpy().tobytes())
        h.update(self.images.numpy().tobytes())
        return h.hexdigest()[:12]


def build_pixel_dataset(pairs: list, cfg: Config, normalizer: FeatureNormalizer, progress: bool = True) -> PixelDataset:
    """Normalised features and ``cfg.transformer.image_size``-square grayscale images of ``pairs``."""
    from a2i_utils.data.images import load_image

    feats = normalizer(features_for_pairs(pairs, cfg, progress=progress))  # (N, S, F)
    size = cfg.transformer.image_size
    images = np.stack([load_image(p.image_path, size=size, gray=True) for p in pairs])  # (N, H, W) uint8
    return PixelDataset(feats, images, [p.id for p in pairs], normalizer)


# ----------------------------------------------------------------------------------------------------------
# Schedule and metrics
# ----------------------------------------------------------------------------------------------------------
LR_DECAYS = ("inverse_sqrt", "inverse")


def lr_factor(step: int, warmup_steps: int, decay: str = "inverse_sqrt") -> float:
    """Multiplier of the peak lr: linear warm-up to 1 over ``warmup_steps``, then (w/s)^0.5 or w/s.

    The paper (§4.1) warms up linearly "to 1e-7 in 300 batch steps" and "decays proportionally afterwards".
    Ours by default: the same linear warm-up (300 steps in full mode) to a usual peak (``transformer.lr``),
    then the inverse square root decay of Vaswani et al. ``decay="inverse"`` (lr ~ 1/step) is the closer reading
    of "proportionally"; see ``TransformerConfig`` for why the peak is not 1e-7.
    """
    if decay not in LR_DECAYS:
        raise ValueError(f"transformer.lr_decay must be one of {LR_DECAYS}, not {decay!r}")
    s = step + 1
    w = max(1, warmup_steps)
    after = w / s if decay == "inverse" else math.sqrt(w / s)
    return min(s / w, after)


@torch.no_grad()
def bits_per_dim(model: PixelTransformer, dataset: PixelDataset, batch_size: int = 16) -> float:
    """Mean next-pixel cross-entropy over a dataset, in bits per pixel (log2(256) = 8 is a uniform guess)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(dataset), batch_size):
        f = dataset.features[i:i + batch_size].to(device)  # (b, S, F)
        px = dataset.pixels[i:i + batch_size].to(device)  # (b, T)
        logits = model(f, px)  # (b, T, 256)
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), px.flatten(), reduction="sum").item()
        count += px.numel()
    model.train(was_training)
    return total / count / math.log(2)


def mean_abs_pixel_error(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Mean absolute difference of two uint8 image stacks, in intensity levels (0..255)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image stacks differ in shape: {a.shape} vs {b.shape}")
    return float(np.abs(a - b).mean())


# ----------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------
class Trainer:
    """Teacher-forced next-pixel training with Adam, warm-up, clipping, and exactly resumable checkpoints."""

    def __init__(self, model: PixelTransformer, dataset: PixelDataset, tcfg: TransformerConfig, run_dir: Path,
                 seed: int = 42, checkpoint_every: int = CHECKPOINT_EVERY, val_set: PixelDataset | None = None,
                 eval_every: int = 0):
        if len(dataset) == 0:
            raise ValueError("cannot train on an empty dataset")
        self.model, self.dataset, self.tcfg, self.run_dir = model, dataset, tcfg, Path(run_dir)
        self.checkpoint_every = checkpoint_every
        self.val_set, self.eval_every = val_set, eval_every  # held-out bits/dim every eval_every steps (0: never)
        self.evals: list[tuple[int, float]] = []  # (step, held-out bits/dim)
        self.device = next(model.parameters()).device
        self.opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=(0.9, 0.98))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, tcfg.warmup_steps, tcfg.lr_decay))
        self.step = 0
        self.losses: list[float] = []
        self.data_gen = torch.Generator().manual_seed(seed)  # order of the pairs
        self.order = torch.randperm(len(dataset), generator=self.data_gen)  # current epoch's permutation
        self.pos = 0  # next index into self.order
        # Dropout's random state, kept apart from the caller's: a generator of its own seeded with seed + 1, whose
        # state is swapped into the global one during run(). Nothing global is seeded here (torch.manual_seed
        # would also reseed every CUDA generator, and fork_rng(devices=[]) would not restore them).
        self.seed = seed
        self.rng_state = torch.Generator().manual_seed(seed + 1).get_state()
        self.cuda_rng_state: Tensor | None = None  # the same on a GPU, set when the first run starts
        self._logged: int | None = None  # rows of LOSS_LOG known to match self.losses (None: start it anew)
        self._evals_logged: int | None = None  # the same for EVAL_LOG and self.evals

    # --- data order ---------------------------------------------------------------------------------------
    def _next_batch(self) -> tuple[Tensor, Tensor]:
        """The next batch of (features, pixels), walking through shuffled epochs."""
        take = []
        while len(take) < min(self.tcfg.batch_size, len(self.dataset)):
            if self.pos == len(self.order):
                self.order = torch.randperm(len(self.dataset), generator=self.data_gen)
                self.pos = 0
            take.append(int(self.order[self.pos]))
            self.pos += 1
        f, px = self.dataset.features[take], self.dataset.pixels[take]  # (B, S, F), (B, T)
        return f.to(self.device), px.to(self.device)

    # --- training -----------------------------------------------------------------------------------------
    def train_step(self) -> float:
        """One optimiser step on the next batch; returns its loss (nats per pixel)."""
        f, px = self._next_batch()
        loss = self.model.loss(f, px)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        return loss.item()

    def run(self, steps: int, progress: bool = True, desc: str = "training") -> list[float]:
        """Train until ``steps`` total steps, checkpointing every ``checkpoint_every`` and at the end."""
        from tqdm.auto import tqdm

        self.model.train()
        bar = tqdm(total=steps, initial=self.step, desc=desc, disable=not progress, mininterval=1.0)
        with torch.random.fork_rng(devices=self._cuda_devices()):  # the caller's states come back afterwards
            torch.set_rng_state(self.rng_state)
            if self.device.type == "cuda":
                if self.cuda_rng_state is None:  # a state of its own, seeded like the CPU one: nothing global
                    self.cuda_rng_state = torch.Generator(device=self.device).manual_seed(self.seed + 1).get_state()
                torch.cuda.set_rng_state(self.cuda_rng_state, self.device)
            while self.step < steps:
                self.losses.append(self.train_step())
                recent = self.losses[-20:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", lr=f"{self.sched.get_last_lr()[0]:.1e}",
                                refresh=False)  # drawn by update(), at most once a second
                bar.update(1)
                if self.val_set is not None and self.eval_every and self.step % self.eval_every == 0:
                    self.evals.append((self.step, bits_per_dim(self.model, self.val_set)))  # no randomness used
                if self.step % self.checkpoint_every == 0 or self.step == steps:
                    self._keep_rng()
                    self.save()
            self._keep_rng()
        bar.close()
        return self.losses

    def _cuda_devices(self) -> list[int]:
        """The CUDA device whose random state dropout uses, if any."""
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _keep_rng(self) -> None:
        """Remember the random state that dropout has reached."""
        self.rng_state = torch.get_rng_state()
        if self.device.type == "cuda":
            self.cuda_rng_state = torch.cuda.get_rng_state(self.device)

    # --- checkpoints --------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        """Everything but the weights, as plain tensors, numbers and dicts (loadable with weights_only)."""
        return {
            "step": self.step,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "order": self.order.clone(),
            "pos": self.pos,
            "rng": self.rng_state.clone(),
            "cuda_rng": self.cuda_rng_state.clone() if self.cuda_rng_state is not None else torch.empty(0),
        }

    def save(self) -> Path:
        """Write weights and state for the current step, append the new losses, then point ``latest.json`` at them."""
        stem = f"step_{self.step:07d}"
        weights, state = self.run_dir / f"{stem}.safetensors", self.run_dir / f"{stem}.state.pt"
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write(weights, lambda tmp: save_file(tensors, str(tmp)))
        atomic_write(state, lambda tmp: torch.save(self._state(), tmp))
        self._append_losses()
        norm = self.dataset.normalizer
        if norm is not None:
            atomic_write(self.run_dir / NORMALIZER_FILE, lambda tmp: save_file(norm.state_dict(), str(tmp)))
        meta = {"step": self.step, "weights": weights.name, "state": state.name,
                "config": dataclasses.asdict(self.tcfg), "n_pairs": len(self.dataset),
                "n_sections": self.model.n_sections, "n_bins": self.model.n_bins,
                "normalizer": NORMALIZER_FILE if norm is not None else None}
        atomic_write_text(self.run_dir / "latest.json", json.dumps(meta, indent=1))
        for old in self.run_dir.glob("step_*"):
            if not old.name.startswith(stem):
                old.unlink(missing_ok=True)
        return weights

    def _append_losses(self) -> None:
        """Append the losses and held-out evaluations since the last checkpoint to their logs."""
        steps = list(range(1, len(self.losses) + 1))
        self._logged = _append_log(self.run_dir / LOSS_LOG, "step,loss", list(zip(steps, self.losses)), self._logged)
        if self.val_set is not None or self.evals:
            self._evals_logged = _append_log(self.run_dir / EVAL_LOG, "step,heldout_bpd", self.evals,
                                             self._evals_logged)

    def _read_losses(self, step: int) -> list[float]:
        """The losses of steps 1..``step`` from ``losses.csv`` (and the held-out evaluations up to ``step``)."""
        rows = _read_log(self.run_dir / LOSS_LOG, step)
        if [s for s, _ in rows] != list(range(1, step + 1)):
            raise CheckpointError(f"{self.run_dir / LOSS_LOG} holds the losses of {len(rows)} steps in order, "
                                  f"but the checkpoint is at step {step}")
        self.evals = _read_log(self.run_dir / EVAL_LOG, step) if (self.run_dir / EVAL_LOG).is_file() else []
        self._evals_logged = len(self.evals)
        return [v for _, v in rows]

    def latest_step(self) -> int | None:
        """The step of the checkpoint in ``run_dir``, or None when there is none."""
        meta_path = self.run_dir / "latest.json"
        if not meta_path.exists():
            return None
        try:
            return int(json.loads(meta_path.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError, OverflowError) as err:
            raise CheckpointError(f"cannot read {meta_path}: {type(err).__name__}: {err}") from err

    def load(self) -> int:
        """Restore the latest checkpoint of ``run_dir`` (weights, optimiser, schedule, data order, RNG); its step."""
        path = self.run_dir / "latest.json"
        try:
            meta = json.loads(path.read_text())
            weights_path, state_path = _run_file(path, meta, "weights"), _run_file(path, meta, "state")
            path = weights_path
            weights = load_file(str(path), device=str(self.device))
            path = state_path
            state = torch.load(path, map_location=self.device, weights_only=True)
        except (OSError, ValueError, KeyError, TypeError, OverflowError, RuntimeError, EOFError,
                pickle.UnpicklingError,
                SafetensorError) as err:
            raise CheckpointError(f"cannot read the checkpoint in {self.run_dir}: {path.name}: "
                                  f"{type(err).__name__}: {err}") from err
        _load_weights(self.model, weights, weights_path)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.data_gen.set_state(state["data_gen"].cpu())
        self.order, self.pos = state["order"].cpu(), int(state["pos"])
        self.rng_state = state["rng"].cpu()
        cuda_rng = state.get("cuda_rng")
        self.cuda_rng_state = cuda_rng.cpu() if cuda_rng is not None and cuda_rng.numel() else None
        self.step = int(state["step"])
        self.losses = self._read_losses(self.step)
        self._logged = self.step
        return self.step


def _append_log(path: Path, header: str, rows: list[tuple[int, float]], logged: int | None) -> int:
    """Append ``rows[logged:]`` as ``step,value`` lines to ``path``; the number of rows now logged.

    ``logged`` None starts a new file. Values are written with ``repr`` (the exact float), so a resume reads
    back the very same numbers."""
    if logged is None or not path.is_file():
        atomic_write_text(path, header + "\n")
        logged = 0
    if rows[logged:]:
        with open(path, "a") as f:
            f.write("".join(f"{step},{value!r}\n" for step, value in rows[logged:]))
    return len(rows)


def _read_log(path: Path, upto_step: int) -> list[tuple[int, float]]:
    """The ``(step, value)`` rows of a log up to ``upto_step``; later ones (a run stopped mid-checkpoint) are cut.

    A last row without its newline (a kill while appending) is one of those later rows: the rows are appended
    before ``latest.json`` moves, so every row up to the checkpoint's step was complete before it was written."""
    try:
        text = path.read_text()
        lines = text.splitlines()
        partial = len(lines) > 1 and not text.endswith("\n")
        rows = [(int(a), float(b)) for a, b in (line.split(",") for line in lines[1:len(lines) - partial])]
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    kept = [r for r in rows if r[0] <= upto_step]
    if len(kept) < len(rows) or partial:
        atomic_write_text(path, lines[0] + "\n" + "".join(f"{s},{v!r}\n" for s, v in kept))
    return kept


def _run_file(meta_path: Path, meta: dict, key: str) -> Path:
    """The file ``meta[key]`` of the run folder holding ``meta_path``; a CheckpointError for any other path."""
    name = meta[key]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise CheckpointError(f"{meta_path}: {key} {name!r} is not a file name: it points outside the run folder")
    return meta_path.parent / name


def _bounded(meta: dict, key: str, meta_path: Path, limit: int = 100_000) -> int:
    """``meta[key]`` as a size between 1 and ``limit``; a CheckpointError for anything else (a tampered file)."""
    value = meta[key]
    if type(value) is not int or not 0 < value <= limit:
        raise CheckpointError(f"{meta_path}: {key} = {value!r} is not a size between 1 and {limit}")
    return value


def _load_weights(model: PixelTransformer, weights: dict[str, Tensor], path: Path) -> None:
    """Load ``weights`` (read from ``path``) into ``model``; a CheckpointError naming ``path`` if they do not fit."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise CheckpointError(f"{path} does not fit this model: {err}") from err
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")


def load_normalizer(run_dir: Path) -> FeatureNormalizer | None:
    """The feature normaliser saved with the run in ``run_dir``, or None when the run has none."""
    path = Path(run_dir) / NORMALIZER_FILE
    if not path.is_file():
        return None
    try:
        return FeatureNormalizer.from_state_dict(load_file(str(path)))
    except (OSError, KeyError, SafetensorError) as err:
        raise CheckpointError(f"cannot read {path}: {type(err).__name__}: {err}") from err


def load_run(run_dir: Path, device: str = "cpu", need_normalizer: bool = True
             ) -> tuple[PixelTransformer, FeatureNormalizer | None]:
    """The trained model of a run folder, built from its ``latest.json``, and the normaliser its features need.

    Raw features of a new recording go through the normaliser, then the model: ``model.sample(norm(feats))``.
    """
    run_dir = Path(run_dir)
    meta_path = run_dir / "latest.json"
    try:
        meta = json.loads(meta_path.read_text())
        tcfg = TransformerConfig(**meta["config"])
        n_sections, n_bins = _bounded(meta, "n_sections", meta_path), _bounded(meta, "n_bins", meta_path)
        weights_path = _run_file(meta_path, meta, "weights")
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as err:
        raise CheckpointError(f"cannot read {meta_path}: {type(err).__name__}: {err}") from err
    model = PixelTransformer(tcfg, n_sections=n_sections, n_bins=n_bins).to(device)
    try:
        weights = load_file(str(weights_path), device=str(device))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"cannot read {weights_path}: {type(err).__name__}: {err}") from err
    _load_weights(model, weights, weights_path)
    norm = load_normalizer(run_dir)
    if norm is None and need_normalizer:
        raise CheckpointError(f"{run_dir / NORMALIZER_FILE} is missing: this run was trained on features given "
                              "already normalised; pass need_normalizer=False and normalise them yourself")
    return model.eval(), norm


# ----------------------------------------------------------------------------------------------------------
# Train or load, for the notebooks
# ----------------------------------------------------------------------------------------------------------
def run_dir_for(cfg: Config, name: str, dataset: PixelDataset) -> Path:
    """The checkpoint folder of run ``name`` with this config, data and ``MODEL_VERSION``."""
    keyed = {k: v for k, v in dataclasses.asdict(cfg.transformer).items() if k not in _NOT_IN_RUN_KEY}
    payload = {"t": keyed, "seed": cfg.seed, "data": dataset.fingerprint(), "shape": list(dataset.features.shape)}
    return cfg.checkpoints_dir / "transformer" / cache_key(name, MODEL_VERSION, payload)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the lock of a run folder for the ``with`` block; when another process holds it, say so and wait.

    The lock is the hidden file ``.<name>.lock`` beside the folder (outside it: a fresh run deletes the folder)."""
    lock = run_dir.with_name(f".{run_dir.name}")  # file_lock adds ".lock"
    with waiting_lock(lock, f"{run_dir.name} is being trained by another process: waiting for it to finish"):
        yield


def heldout_eval_every(steps: int) -> int:
    """Steps between held-out evaluations of a training run: ten per run, the last at the end (notebook 03)."""
    return max(1, steps // 10)


def train_or_load(cfg: Config, dataset: PixelDataset, name: str, steps: int, progress: bool = True,
                  checkpoint_every: int = CHECKPOINT_EVERY, val_set: PixelDataset | None = None,
                  eval_every: int = 0) -> tuple[PixelTransformer, dict[str, Any]]:
    """Load run ``name`` when its checkpoint is at ``steps``, resume it when short of it, else train; (model, history).

    A checkpoint past ``steps`` is never loaded for a shorter request (its weights are not those of a
    ``steps``-step run): the run is trained again from scratch to ``steps``, replacing the longer one.
    With ``val_set`` and ``eval_every``, the held-out bits/dim is measured every ``eval_every`` steps; the
    history holds ``losses`` (nats/pixel per step), ``evals`` ((step, bits/dim) pairs), ``step``, ``run_dir``
    and the ``normalizer`` saved with the run. (The evaluations do not change the run, so they are not in its key.)
    The run folder is locked meanwhile (:func:`run_lock`): a second process asking for the same run waits, then
    loads it. A run killed before ``steps`` resumes from its last checkpoint.
    """
    run_dir = run_dir_for(cfg, name, dataset)
    with run_lock(run_dir):
        return _train_or_load(cfg, dataset, name, run_dir, steps, progress, checkpoint_every, val_set, eval_every)


def _train_or_load(cfg: Config, dataset: PixelDataset, name: str, run_dir: Path, steps: int, progress: bool,
                   checkpoint_every: int, val_set: PixelDataset | None, eval_every: int
                   ) -> tuple[PixelTransformer, dict[str, Any]]:
    """:func:`train_or_load` into ``run_dir``, holding its lock."""
    torch.manual_seed(cfg.seed)
    S, F_ = dataset.features.shape[1:]
    model = PixelTransformer(cfg.transformer, n_sections=S, n_bins=F_).to(cfg.resolved_device())
    remove_stale_temps(run_dir)  # a killed run's half-written files
    trainer = Trainer(model, dataset, cfg.transformer, run_dir, seed=cfg.seed, checkpoint_every=checkpoint_every,
                      val_set=val_set, eval_every=eval_every)
    found = trainer.latest_step()
    if found == steps:
        print(f"Found checkpoint {run_dir.name} at step {found}, loading")
        trainer.load()
    else:
        if found is not None and found < steps:
            print(f"Found checkpoint {run_dir.name} at step {found}, resuming to step {steps}")
            trainer.load()
        elif found is not None:
            print(f"Found checkpoint {run_dir.name} at step {found}, past the {steps} asked: "
                  f"training {steps} steps from scratch")
        else:
            print(f"No checkpoint for {run_dir.name}: training {steps} steps")
        start = time.perf_counter()
        trainer.run(steps, progress=progress, desc=name)
        print(f"Trained {name} to step {trainer.step} in {time.perf_counter() - start:.0f} s")
    model.eval()
    return model, {"losses": trainer.losses, "evals": trainer.evals, "step": trainer.step, "run_dir": run_dir,
                   "normalizer": load_normalizer(run_dir)}
