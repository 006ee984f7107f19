"""A scene classifier for images, trained on the training split's images: the judge of generated images.

A small CNN (three conv blocks, global average pooling, a linear layer over the 13 classes), trained with random
flips and quarter turns. Its accuracy on the held-out images says how far to trust it as a judge. It is saved as
safetensors under ``checkpoints/scene_classifier/<key>.safetensors`` (key: config, seed, the images' bytes).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from a2i_utils.config import Config
from a2i_utils.data import CLASSES
from a2i_utils.devices import cpu_threads
from a2i_utils.io import CheckpointError, atomic_write, cache_key

MODEL_VERSION = 1
BAR_INTERVAL_S = 1.0


class SceneClassifier(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, 13) logits."""

    def __init__(self, n_classes: int = len(CLASSES), width: int = 32) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width]
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2))
            for a, b in zip(chans[:-1], chans[1:])
        ])
        self.head = nn.Linear(chans[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of each scene class."""
        h = self.blocks(x)  # (B, 4w, H/8, W/8)
        return self.head(h.mean(dim=(2, 3)))  # (B, 13)


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def predict(model: SceneClassifier, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 images (..., H, W, 3) -> predicted class indices (...)."""
    flat = images.reshape(-1, *images.shape[-3:])  # (M, H, W, 3)
    model.eval()
    preds = [model(to_input(flat[i : i + batch])).argmax(1) for i in range(0, len(flat), batch)]
    return torch.cat(preds).numpy().reshape(images.shape[:-3])


def train_classifier(images: np.ndarray, labels: np.ndarray, cfg: Config, progress: bool = True):
    """Train on uint8 images (N, H, W, 3) with labels (N,): AdamW, one-cycle lr, flips and quarter turns."""
    from a2i_utils.soundiff.latents import dihedral_views

    sc = cfg.soundiff
    torch.manual_seed(cfg.seed)
    model = SceneClassifier()
    x, y = to_input(images), torch.as_tensor(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=sc.clf_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=sc.clf_lr, total_steps=sc.clf_steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed + 13)
    losses = []
    model.train()
    for _ in tqdm(range(sc.clf_steps), desc="scene classifier", disable=not progress, mininterval=BAR_INTERVAL_S):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        view = int(torch.randint(0, 8, (1,), generator=gen))
        xb = dihedral_views(x[idx])[view]  # (B, 3, H, W)
        xb = xb * (1 + 0.1 * torch.randn(len(idx), 1, 1, 1, generator=gen))  # contrast jitter
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), losses


def classifier_key(cfg: Config, pairs) -> str:
    """``scene_clf-v<MODEL_VERSION>-<hash>``: image size, classifier fields, seed and the training images' bytes."""
    from a2i_utils.soundiff.mini import data_fingerprint

    fields = {k: v for k, v in dataclasses.asdict(cfg.soundiff).items() if k.startswith("clf_") or k == "image_size"}
    return cache_key("scene_clf", MODEL_VERSION, {"fields": fields, "seed": cfg.seed, "data": data_fingerprint(pairs)})


def load_images(pairs, size: int) -> np.ndarray:
    """uint8 images (N, size, size, 3) of the pairs."""
    from a2i_utils.data import load_image

    return np.stack([load_image(p.image_path, size) for p in pairs])


def load_or_train_classifier(cfg: Config, dataset, progress: bool = True) -> tuple[SceneClassifier, dict]:
    """(classifier, info): loaded if trained before, else trained on the training images; info holds
    the held-out accuracy over the validation images (``val_acc``, ``n_val``) and the training losses."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file, save_file

    size = cfg.soundiff.image_size
    path = Path(cfg.checkpoints_dir) / "scene_classifier" / f"{classifier_key(cfg, dataset.pairs)}.safetensors"
    model = SceneClassifier()
    if path.is_file():
        print(f"Found scene classifier {path.name}, loading")
        try:
            model.load_state_dict(load_file(str(path)))
            with safe_open(str(path), "pt") as f:
                info = json.loads(f.metadata()["info"])
        except (SafetensorError, OSError, KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path}: unusable scene classifier ({err}); delete it to retrain") from err
        return model.eval(), info
    train, val = dataset.train, dataset.val
    t0 = time.time()
    with cpu_threads(cfg.soundiff.cpu_threads):
        labels = np.array([CLASSES.index(p.label) for p in train])
        model, losses = train_classifier(load_images(train, size), labels, cfg, progress)
    val_labels = np.array([CLASSES.index(p.label) for p in val])
    acc = float((predict(model, load_images(val, size)) == val_labels).mean())
    info = {"val_acc": acc, "n_val": len(val), "loss": losses, "seconds": round(time.time() - t0, 1)}
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"info": json.dumps(info)}))
    return model, info
