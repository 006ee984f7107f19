"""Training the pixel transformer: dataset, Adam with warm-up, exact resume, bits per dimension, train-or-load.

A training run lives in one folder under ``cfg.checkpoints_dir / "transformer"``, named after what it trains
(the run name, the model and optimiser settings, the seed, a fingerprint of the data and ``MODEL_VERSION``). Every
``checkpoint_every`` steps it writes ``step_NNNNNNN.safetensors`` (the weights), ``step_NNNNNNN.state.pt``
(optimiser, schedule, step, data order, random state, losses; plain tensors, read with ``weights_only=True``),
``losses.csv``, and last ``latest.json`` pointing at them: each file goes to a temporary name first, then is
renamed, so an interrupted run leaves the previous checkpoint intact. Resuming restores all of that, so a
resumed run continues with exactly the losses of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from a2i_utils.config import Config, TransformerConfig
from a2i_utils.io import CheckpointError, atomic_write, atomic_write_text, cache_key
from a2i_utils.transformer.model import PixelTransformer, image_to_tokens

CHECKPOINT_EVERY = 100  # steps between checkpoints
# Bump when the training code changes what a run computes while keeping the tensor shapes (a new schedule,
# loss or data order): the run key includes it, so old checkpoints are no longer found instead of loaded.
MODEL_VERSION = 1
# Settings that do not change what a training step computes: a run with more steps resumes from fewer.
_NOT_IN_RUN_KEY = ("steps", "overfit_steps", "overfit_pairs")
__all__ = ["CheckpointError", "MODEL_VERSION", "PixelDataset", "Trainer", "build_pixel_dataset", "bits_per_dim",
           "lr_factor", "mean_abs_pixel_error", "run_dir_for", "train_or_load"]


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
class PixelDataset(torch.utils.data.Dataset):
    """In-memory pairs of audio features (S, F) float32 and pixel tokens (H*W,) long."""

    def __init__(self, features: Tensor | np.ndarray, images: np.ndarray | Tensor, ids: list[str] | None = None):
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
        return PixelDataset(self.features[idx], self.images[idx], [self.ids[i] for i in idx])

    def fingerprint(self) -> str:
        """A short hash of the features and pixels (names a checkpoint folder)."""
        h = hashlib.sha1()
        h.update(self.features.numpy().tobytes())
        h.update(self.images.numpy().tobytes())
        return h.hexdigest()[:12]


def build_pixel_dataset(pairs: list, cfg: Config, normalizer, progress: bool = True) -> PixelDataset:
    """Normalised features and ``cfg.transformer.image_size``-square grayscale images of ``pairs``."""
    from a2i_utils.data.images import load_image
    from a2i_utils.transformer.features import features_for_pairs

    feats = normalizer(features_for_pairs(pairs, cfg, progress=progress))  # (N, S, F)
    size = cfg.transformer.image_size
    images = np.stack([load_image(p.image_path, size=size, gray=True) for p in pairs])  # (N, H, W) uint8
    return PixelDataset(feats, images, [p.id for p in pairs])


# ----------------------------------------------------------------------------------------------------------
# Schedule and metrics
# ----------------------------------------------------------------------------------------------------------
def lr_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then decay as sqrt(warmup / step) (Vaswani et al.)."""
    s = step + 1
    w = max(1, warmup_steps)
    return min(s / w, math.sqrt(w / s))


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
                 seed: int = 42, checkpoint_every: int = CHECKPOINT_EVERY):
        if len(dataset) == 0:
            raise ValueError("cannot train on an empty dataset")
        self.model, self.dataset, self.tcfg, self.run_dir = model, dataset, tcfg, Path(run_dir)
        self.checkpoint_every = checkpoint_every
        self.device = next(model.parameters()).device
        self.opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=(0.9, 0.98))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, tcfg.warmup_steps))
        self.step = 0
        self.losses: list[float] = []
        self.data_gen = torch.Generator().manual_seed(seed)  # order of the pairs
        self.order = torch.randperm(len(dataset), generator=self.data_gen)  # current epoch's permutation
        self.pos = 0  # next index into self.order
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.rng_state = torch.get_rng_state()  # dropout's random state, kept apart from the caller's
        self.cuda_rng_state: Tensor | None = None  # the same on a GPU, once a run has started

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
        bar = tqdm(total=steps, initial=self.step, desc=desc, disable=not progress)
        with torch.random.fork_rng(devices=self._cuda_devices()):
            torch.set_rng_state(self.rng_state)
            if self.cuda_rng_state is not None:
                torch.cuda.set_rng_state(self.cuda_rng_state, self.device)
            while self.step < steps:
                self.losses.append(self.train_step())
                recent = self.losses[-20:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", lr=f"{self.sched.get_last_lr()[0]:.1e}")
                bar.update(1)
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
            "losses": torch.tensor(self.losses, dtype=torch.float64),
        }

    def save(self) -> Path:
        """Write weights, state and losses for the current step, then point ``latest.json`` at them."""
        stem = f"step_{self.step:07d}"
        weights, state = self.run_dir / f"{stem}.safetensors", self.run_dir / f"{stem}.state.pt"
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        atomic_write(weights, lambda tmp: save_file(tensors, str(tmp)))
        atomic_write(state, lambda tmp: torch.save(self._state(), tmp))
        atomic_write_text(self.run_dir / "losses.csv", "step,loss\n" + "".join(
            f"{i + 1},{v:.6f}\n" for i, v in enumerate(self.losses)))
        meta = {"step": self.step, "weights": weights.name, "state": state.name,
                "config": dataclasses.asdict(self.tcfg), "n_pairs": len(self.dataset)}
        atomic_write_text(self.run_dir / "latest.json", json.dumps(meta, indent=1))
        for old in self.run_dir.glob("step_*"):
            if not old.name.startswith(stem):
                old.unlink(missing_ok=True)
        return weights

    def latest_step(self) -> int | None:
        """The step of the checkpoint in ``run_dir``, or None when there is none."""
        meta_path = self.run_dir / "latest.json"
        if not meta_path.exists():
            return None
        try:
            return int(json.loads(meta_path.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"cannot read {meta_path}: {type(err).__name__}: {err}") from err

    def load(self) -> int:
        """Restore the latest checkpoint of ``run_dir`` (weights, optimiser, schedule, data order, RNG); its step."""
        path = self.run_dir / "latest.json"
        try:
            meta = json.loads(path.read_text())
            weights_path, state_path = self.run_dir / meta["weights"], self.run_dir / meta["state"]
            path = weights_path
            weights = load_file(str(path), device=str(self.device))
            path = state_path
            state = torch.load(path, map_location=self.device, weights_only=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError,
                SafetensorError) as err:
            raise CheckpointError(f"cannot read the checkpoint in {self.run_dir}: {path.name}: "
                                  f"{type(err).__name__}: {err}") from err
        try:
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
        except RuntimeError as err:  # a tensor of another shape
            raise CheckpointError(f"{self.run_dir / meta['weights']} does not fit this model: {err}") from err
        if missing or unexpected:
            raise CheckpointError(f"{self.run_dir / meta['weights']} does not fit this model: "
                                  f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.data_gen.set_state(state["data_gen"].cpu())
        self.order, self.pos = state["order"].cpu(), int(state["pos"])
        self.rng_state = state["rng"].cpu()
        cuda_rng = state.get("cuda_rng")
        self.cuda_rng_state = cuda_rng.cpu() if cuda_rng is not None and cuda_rng.numel() else None
        self.losses = state["losses"].tolist()
        self.step = int(state["step"])
        return self.step


# ----------------------------------------------------------------------------------------------------------
# Train or load, for the notebooks
# ----------------------------------------------------------------------------------------------------------
def run_dir_for(cfg: Config, name: str, dataset: PixelDataset) -> Path:
    """The checkpoint folder of run ``name`` with this config, data and ``MODEL_VERSION``."""
    keyed = {k: v for k, v in dataclasses.asdict(cfg.transformer).items() if k not in _NOT_IN_RUN_KEY}
    payload = {"t": keyed, "seed": cfg.seed, "data": dataset.fingerprint(), "shape": list(dataset.features.shape)}
    return cfg.checkpoints_dir / "transformer" / cache_key(name, MODEL_VERSION, payload)


def train_or_load(cfg: Config, dataset: PixelDataset, name: str, steps: int, progress: bool = True,
                  checkpoint_every: int = CHECKPOINT_EVERY) -> tuple[PixelTransformer, dict[str, Any]]:
    """Load run ``name`` when its checkpoint is at ``steps``, resume it when short of it, else train; (model, history).

    A checkpoint past ``steps`` is never loaded for a shorter request (its weights are not those of a
    ``steps``-step run): the run is trained again from scratch to ``steps``, replacing the longer one.
    """
    torch.manual_seed(cfg.seed)
    S, F_ = dataset.features.shape[1:]
    model = PixelTransformer(cfg.transformer, n_sections=S, n_bins=F_).to(cfg.resolved_device())
    run_dir = run_dir_for(cfg, name, dataset)
    trainer = Trainer(model, dataset, cfg.transformer, run_dir, seed=cfg.seed, checkpoint_every=checkpoint_every)
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
    return model, {"losses": trainer.losses, "step": trainer.step, "run_dir": run_dir}
