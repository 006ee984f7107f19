"""Demo mode: a miniature ImageBind. The same class, :class:`imagebind.models.imagebind_model.ImageBindModel`,
built at small widths
(``cfg.imagebind.mini_*``) and trains it the way ImageBind was made, in two stages:

1. vision (and text) as a CLIP: images against the text prompts of their scene class, cross-entropy over
   the 13 prompts with the text head's learnable logit scale, plus (synthetic data) the same against the
   captions that also name the place's visible detail ("... with many boats"), so that the image embedding
   keeps more than the scene, as OpenCLIP's does (ImageBind takes this stage ready-made from OpenCLIP,
   trained on captioned web images);
2. audio, with vision and text frozen: InfoNCE between each recording and the embedding of its own image
   over the batch, symmetric, at ImageBind's fixed audio temperature (its audio head multiplies the unit
   embedding by 20, so ``audio @ image.T`` are the logits at temperature 1/20). ``_k`` pairs reuse their
   base id's recording: other pairs of the same recording in a batch are masked out of the logits (with
   ``imagebind.mini_mask_same_recording``), never counted as negatives.

The trained weights are saved as safetensors under ``cfg.checkpoints_dir`` keyed by the config and the
data, and reused; a finished stage 1 is kept, so an interrupted run resumes at stage 2. Within a stage, an
in-stage checkpoint every ``imagebind.mini_checkpoint_every`` steps (:class:`a2i_utils.checkpoints.StageCheckpoint`)
lets a killed run go on from its last one, to bitwise the same weights and losses as a run never stopped. One process
trains a given miniature at a time (:func:`a2i_utils.io.file_lock`): a second one waits, then loads it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from a2i_utils.checkpoints import StageCheckpoint, find_shipped, remove_stage_checkpoint
from a2i_utils.compat import import_imagebind
from a2i_utils.config import Config, ImageBindConfig
from a2i_utils.data import CLASSES
from a2i_utils.devices import cpu_threads
from a2i_utils.imagebind.huge import check_state_dict
from a2i_utils.imagebind.model import Embedder
from a2i_utils.imagebind.preprocess import (
    PROMPT,
    class_prompts,
    load_audio_inputs,
    load_text_inputs,
    load_vision_inputs,
)
from a2i_utils.io import CheckpointError, atomic_write, cache_key, sha256_file, waiting_lock

BAR_INTERVAL_S = 1.0  # progress bars redraw at most once a second: in a notebook each redraw is a kernel message,
# and thousands of them overflow the kernel's message queue (nbval then loses the end of the cell)
MODEL_VERSION = 1  # part of the miniature's cache key: bump when the training code changes but not the shapes
NOT_IN_KEY = ("mini_checkpoint_every",)  # how often progress is saved never changes the weights
SHIPPED_NAME = "imagebind_mini"  # a2i_utils/pretrained/imagebind_mini.card.json (scripts/pretrain_miniatures.py)
SHIPPED_FILE = "imagebind_mini.safetensors"


def build_mini(cfg: Config) -> nn.Module:
    """An ``ImageBindModel`` at the small sizes of ``cfg.imagebind`` (all six towers, as the class builds them)."""
    ib = cfg.imagebind
    small = {"embed_dim": ib.mini_side_dim, "num_blocks": 1, "num_heads": 2}
    side = {f"{m}_{k}": v for m in ("depth", "thermal", "imu") for k, v in small.items()}
    return import_imagebind().ImageBindModel(
        kernel_size=(2, ib.mini_vision_patch, ib.mini_vision_patch),
        audio_kernel_size=ib.mini_audio_patch,
        audio_stride=ib.mini_audio_patch,
        out_embed_dim=ib.embed_dim,
        vision_embed_dim=ib.mini_dim,
        vision_num_blocks=ib.mini_blocks,
        vision_num_heads=ib.mini_heads,
        audio_embed_dim=ib.mini_dim,
        audio_num_blocks=ib.mini_blocks,
        audio_num_heads=ib.mini_heads,
        audio_drop_path=ib.mini_audio_drop_path,
        text_embed_dim=ib.mini_text_dim,
        text_num_blocks=1,
        text_num_heads=2,
        **side,
    )


def recipe_config(cfg: Config) -> dict:
    """The fields of ``cfg.imagebind`` that make the miniature (its sizes and training), as in its key and card."""
    return {k: v for k, v in dataclasses.asdict(cfg.imagebind).items()
            if (k.startswith("mini_") or k == "embed_dim") and k not in NOT_IN_KEY}


def mini_key(cfg: Config, pairs) -> str:
    """The miniature's cache key (``mini-v<MODEL_VERSION>-<hash>``): config, seed, the data's bytes, prompt."""
    data = [(p.id, p.label, p.split, sha256_file(p.image_path), sha256_file(p.audio_path))  # the bytes, not names
            for p in sorted(pairs, key=lambda p: (p.label, p.id))]
    captions = sorted(_captions(pairs).items())
    return cache_key("mini", MODEL_VERSION, {"imagebind": recipe_config(cfg), "seed": cfg.seed, "data": data,
                                             "prompt": PROMPT, "captions": captions})


def _captions(pairs) -> dict[str, str]:
    """``{pair id: caption}`` from the synthetic trees the pairs come from (empty for other data)."""
    from a2i_utils.data.synth import read_captions

    out: dict[str, str] = {}
    for root in {p.image_path.parents[min(2, len(p.image_path.parents) - 1)] for p in pairs}:  # <root>/vision/<c>/
        out.update(read_captions(root))
    return out


def mini_checkpoint_path(cfg: Config, key: str, stage: str = "final") -> Path:
    """``checkpoints/imagebind_mini/<key>[-<stage>].safetensors``: final, ``vision`` (stage 1 done), or the
    in-stage checkpoints ``vision-progress`` and ``audio-progress``."""
    suffix = "" if stage == "final" else f"-{stage}"
    return Path(cfg.checkpoints_dir) / "imagebind_mini" / f"{key}{suffix}.safetensors"


def save_mini(model: nn.Module, path: Path, info: dict) -> None:
    """Save weights as safetensors (atomic), with ``info`` (history, metrics) as JSON metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"info": json.dumps(info)}))


def load_mini_weights(model: nn.Module, path: Path) -> dict:
    """Load a miniature's safetensors into ``model`` (checked) and return its ``info``."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            info = json.loads((f.metadata() or {}).get("info", "{}"))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from err
    check_state_dict(sd, model, path)
    model.load_state_dict(sd, strict=True)
    return info


def load_or_train_mini(cfg: Config, dataset=None, progress: bool = True) -> Embedder:
    """The miniature ImageBind of ``cfg``: the shipped one (``a2i_utils/pretrained/``) when it was made with this very
    config and data (hash checked), else loaded from the cache if trained before, else trained and saved.

    Training holds a lock on the final file: a second process asking for the same miniature meanwhile waits,
    then loads what the first one saved.
    """
    from a2i_utils.data import prepare_dataset

    dataset = dataset or prepare_dataset(cfg, progress=progress)
    key = mini_key(cfg, dataset.pairs)
    final = mini_checkpoint_path(cfg, key)
    torch.manual_seed(cfg.seed)
    model = build_mini(cfg)
    info = None
    shipped = None if final.is_file() else find_shipped(SHIPPED_NAME, key, "miniature ImageBind")
    if shipped is not None:
        info = load_mini_weights(model, shipped / SHIPPED_FILE)
    elif not final.is_file():
        with waiting_lock(final, f"{final.name} is being trained by another process: waiting for it to finish"):
            if not final.is_file():
                print(f"No checkpoint {final.name} yet: training the miniature ImageBind")
                with cpu_threads(cfg.imagebind.cpu_threads):
                    info = train_mini(cfg, model, dataset, key, progress=progress)
    if info is None:
        print(f"Found checkpoint {final.name}, loading")
        info = load_mini_weights(model, final)
    model = model.eval().requires_grad_(False)
    return Embedder(model, key, "cpu", torch.float32, info)


def train_mini(cfg: Config, model: nn.Module, dataset, key: str, progress: bool = True) -> dict:
    """Stage 1 (vision+text CLIP on scene prompts), then stage 2 (audio InfoNCE on frozen vision); saved."""
    ib = cfg.imagebind
    train = dataset.train
    labels = torch.tensor([CLASSES.index(p.label) for p in train])
    images = load_vision_inputs([p.image_path for p in train])  # (N, 3, 224, 224)
    stage1 = mini_checkpoint_path(cfg, key, "vision")
    if stage1.is_file():
        print(f"Found stage-1 checkpoint {stage1.name}, loading (resuming at the audio stage)")
        info = load_mini_weights(model, stage1)
    else:
        t0 = time.time()
        caps = _captions(train)
        captions = [caps[p.id] for p in train] if all(p.id in caps for p in train) else None
        progress_file = mini_checkpoint_path(cfg, key, "vision-progress")
        info = {"vision_loss": train_vision_text(model, images, labels, CLASSES, ib, cfg.seed, progress, captions,
                                                 checkpoint=progress_file)}
        info["vision_seconds"] = round(time.time() - t0, 1)
        save_mini(model, stage1, info)
        remove_stage_checkpoint(progress_file)
    audio = load_audio_inputs([p.audio_path for p in train])  # (N, 3, 1, 128, 204)
    with torch.no_grad():
        model.eval()
        targets = embed_in_batches(model, "vision", images, ib.batch_size)  # (N, D), unit norm, frozen
    t0 = time.time()
    groups = recording_groups(train) if ib.mini_mask_same_recording else None
    progress_file = mini_checkpoint_path(cfg, key, "audio-progress")
    info["audio_loss"] = train_audio(model, audio, targets, ib, cfg.seed, progress, groups, checkpoint=progress_file)
    info["audio_seconds"] = round(time.time() - t0, 1)
    save_mini(model, mini_checkpoint_path(cfg, key), info)
    remove_stage_checkpoint(progress_file)
    return info


def embed_in_batches(model: nn.Module, modality: str, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Run one modality of ``model`` over ``inputs`` in batches -> (N, D)."""
    return torch.cat([model({modality: inputs[i : i + batch_size]})[modality] for i in range(0, len(inputs),
                                                                                           batch_size)])


def augment_images(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns of a batch (B, 3, H, W): an aerial scene has no up or left."""
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(-1)
    k = int(torch.randint(0, 4, (1,), generator=gen).item())
    return torch.rot90(x, k, dims=(-2, -1))


def epoch_batches(n: int, bs: int, epochs: int, gen: torch.Generator, start: int = 0,
                  perm: torch.Tensor | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(step, the epoch's permutation, batch indices) from step ``start`` on, ``ceil(n / bs)`` batches an epoch.

    Each epoch draws a new permutation of the ``n`` items from ``gen`` at its first step; ``perm`` is the
    permutation of the epoch in progress, needed when resuming in the middle of one.
    """
    per_epoch = (n + bs - 1) // bs
    for step in range(start, epochs * per_epoch):
        j = step % per_epoch  # batch of the epoch
        if j == 0:
            perm = torch.randperm(n, generator=gen)
        elif perm is None:
            raise ValueError(f"resuming at step {step}, inside an epoch, needs that epoch's permutation")
        yield step, perm, perm[j * bs : (j + 1) * bs]


def _set_trainable(model: nn.Module, modalities: Sequence[str]) -> list[nn.Parameter]:
    """Freeze every tower except ``modalities``; return the trainable parameters."""
    model.requires_grad_(False)
    params = []
    for part in ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors"):
        for m in modalities:
            sub = getattr(model, part)[m]
            sub.requires_grad_(True)
            params += [p for p in sub.parameters() if p.requires_grad]
    return params


def _optimise(loss: torch.Tensor, opt, sched, losses: list[float], bar) -> None:
    """One optimiser + schedule step on ``loss``; record it and advance the progress bar."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    losses.append(loss.item())
    bar.update(1)
    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", refresh=False)  # drawn with the next update


def train_vision_text(model, images, labels, classes, ib: ImageBindConfig, seed: int,
                      progress: bool = True, captions: Sequence[str] | None = None,
                      checkpoint: Path | None = None, stop_after: int | None = None) -> list[float]:
    """Stage 1: CLIP-style cross-entropy of images against the prompts of the 13 scene classes.

    With ``captions`` (one per image), a second cross-entropy over the distinct captions is added, so the
    image embedding also tells apart what the captions describe. With ``checkpoint`` (a path), an in-stage
    checkpoint is saved there every ``ib.mini_checkpoint_every`` steps and resumed from if present. ``stop_after``:
    stop after that many steps of the same schedule (the first losses of the recipe, for the shipped weights' test).
    """
    params = _set_trainable(model, ("vision", "text"))
    opt = torch.optim.AdamW(params, lr=ib.mini_lr, weight_decay=0.05)
    prompts = class_prompts(classes)
    distinct = sorted(set(captions)) if captions else []
    tokens = load_text_inputs(prompts + distinct)  # (13 + K, 77)
    cap_labels = torch.tensor([distinct.index(c) for c in captions]) if captions else None
    gen = torch.Generator().manual_seed(seed)
    n, bs = len(images), ib.mini_train_batch
    steps = ib.mini_vision_epochs * ((n + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ib.mini_lr, total_steps=steps, pct_start=0.1)
    ckpt = StageCheckpoint(checkpoint, ib.mini_checkpoint_every, steps, {"model": model}, opt, sched, gen)
    start, losses, resumed_perm = _resume(ckpt)
    model.train()
    desc = "mini ImageBind stage 1: vision+text"
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, mininterval=BAR_INTERVAL_S)
    for step, perm, idx in epoch_batches(n, bs, ib.mini_vision_epochs, gen, start, resumed_perm):
        if stop_after is not None and step >= stop_after:
            break
        out = model({"vision": augment_images(images[idx], gen), "text": tokens})
        logits = out["vision"] @ out["text"].T  # (B, 13 + K): unit image x scaled text = cosine * logit scale
        loss = F.cross_entropy(logits[:, : len(prompts)], labels[idx])
        if cap_labels is not None:
            loss = loss + F.cross_entropy(logits[:, len(prompts) :], cap_labels[idx])
        _optimise(loss, opt, sched, losses, bar)
        ckpt.step_done(step + 1, {"losses": losses}, {"perm": perm})
    bar.close()
    return losses


def _resume(ckpt: StageCheckpoint) -> tuple[int, list[float], torch.Tensor | None]:
    """(first step, losses so far, the epoch's permutation) from ``ckpt`` if it exists, else a fresh start."""
    state = ckpt.resume()
    if state is None:
        return 0, [], None
    return state["step"], state["losses"], state["tensors"]["perm"]


def recording_groups(pairs) -> torch.Tensor:
    """(N,) index of each pair's recording, (class, base id): a base id and its ``_k`` views share one."""
    index: dict[tuple[str, str], int] = {}
    return torch.tensor([index.setdefault((p.label, p.base_id), len(index)) for p in pairs])


def infonce(audio: torch.Tensor, image: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE; ``audio`` (B, D) already carries ImageBind's scale 20 (= 1/temperature).

    ``groups`` (B,): the recording of each pair. The other pairs of the same recording (a ``_k`` view and its
    base) are false negatives, so their logits are masked out in both directions.
    """
    logits = audio @ image.T  # (B, B): 20 * cosine
    target = torch.arange(len(audio))
    if groups is not None:
        same = groups[:, None] == groups[None, :]  # (B, B)
        logits = logits.masked_fill(same & ~torch.eye(len(audio), dtype=torch.bool), float("-inf"))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train_audio(model, audio, targets, ib: ImageBindConfig, seed: int, progress: bool = True,
                groups: torch.Tensor | None = None, checkpoint: Path | None = None,
                stop_after: int | None = None) -> list[float]:
    """Stage 2: the audio tower against the frozen image embeddings of the same pairs, InfoNCE over the batch.

    Each step uses one random clip of the 3 per recording (a cheap augmentation, 3x faster); the model
    averages all 3 at inference, as ImageBind does. ``groups`` (N,): each pair's recording (see
    :func:`infonce`); None treats every pair as its own recording. ``checkpoint``, ``stop_after``: as in
    :func:`train_vision_text`.
    """
    params = _set_trainable(model, ("audio",))
    opt = torch.optim.AdamW(params, lr=ib.mini_lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed + 1)
    n, bs = len(audio), ib.mini_train_batch
    steps = ib.mini_audio_epochs * ((n + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ib.mini_lr, total_steps=steps, pct_start=0.1)
    ckpt = StageCheckpoint(checkpoint, ib.mini_checkpoint_every, steps, {"model": model}, opt, sched, gen)
    start, losses, resumed_perm = _resume(ckpt)
    model.eval()
    model.modality_trunks["audio"].train()  # drop path in the audio trunk only
    bar = tqdm(total=steps, initial=start, desc="mini ImageBind stage 2: audio", disable=not progress,
               mininterval=BAR_INTERVAL_S)
    for step, perm, idx in epoch_batches(n, bs, ib.mini_audio_epochs, gen, start, resumed_perm):
        if stop_after is not None and step >= stop_after:
            break
        clip = torch.randint(0, audio.shape[1], (len(idx),), generator=gen)
        x = audio[idx, clip].unsqueeze(1)  # (B, 1, 1, 128, 204): one clip per recording
        loss = infonce(model({"audio": x})["audio"], targets[idx], None if groups is None else groups[idx])
        _optimise(loss, opt, sched, losses, bar)
        ckpt.step_done(step + 1, {"losses": losses}, {"perm": perm})
    bar.close()
    return losses
