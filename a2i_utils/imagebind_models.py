"""ImageBind models: the official ``imagebind_huge`` (full mode) and a miniature trained here (demo mode).

Full mode builds ``imagebind_huge(pretrained=False)`` and loads Meta's checkpoint from the cache
(``cfg.downloads_dir / imagebind_huge.pth``), downloading it once with a progress bar; never into
``.checkpoints/`` of the current directory as ``imagebind_huge(pretrained=True)`` would. No hash of that
file is published by Meta, so it is verified by the exact size the server announces, then by the names,
shapes (and kinds of dtype) of every tensor of its state dict against the architecture. The verified size,
modification time and SHA-256 are written next to it (``imagebind_huge.pth.verified.json``). Every later load
compares size and modification time with that stamp: a different size is refused (a corrupt or partly
overwritten file), a different modification time at the same size means the file was replaced, so it is
verified and hashed again. The model's identity (the embedding cache's key) comes from the current hash.

Demo mode builds the same class, :class:`imagebind.models.imagebind_model.ImageBindModel`, at small widths
(``cfg.imagebind.mini_*``) and trains it the way ImageBind was made, in two stages:

1. vision (and text) as a CLIP: images against the text prompts of their scene class, cross-entropy over
   the 13 prompts with the text head's learnable logit scale (ImageBind takes this stage ready-made from
   OpenCLIP);
2. audio, with vision and text frozen: InfoNCE between each recording and the embedding of its own image
   over the batch, symmetric, at ImageBind's fixed audio temperature (its audio head multiplies the unit
   embedding by 20, so ``audio @ image.T`` are the logits at temperature 1/20).

The trained weights are saved as safetensors under ``cfg.checkpoints_dir`` keyed by the config and the
data, and reused; a finished stage 1 is kept, so an interrupted run resumes at stage 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from a2i_utils.compat import import_imagebind, import_imagebind_data
from a2i_utils.io import CheckpointError, atomic_write, atomic_write_text, sha256_file

# The address imagebind.models.imagebind_model.imagebind_huge downloads from (read from the package source;
# a test checks it is still there).
HUGE_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
HUGE_FILENAME = "imagebind_huge.pth"
MODALITIES = ("audio", "vision", "text")
VISION_MEAN = (0.48145466, 0.4578275, 0.40821073)  # ImageBind's (OpenAI CLIP's) image normalisation
VISION_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_SIZE = 224
BAR_INTERVAL_S = 1.0  # progress bars redraw at most once a second: in a notebook each redraw is a kernel message,
# and thousands of them overflow the kernel's message queue (nbval then loses the end of the cell)
PROMPT = "an aerial photo of {}"  # text prompt of a scene class (stage 1, and zero-shot scene classification)
MODEL_VERSION = 1  # part of the miniature's cache key: bump when the training code changes but not the shapes


# ----------------------------------------------------------------------------------------------------------
# The embedder: one model behind one interface for both modes
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Embedder:
    """An ImageBind model with its identity (for cache keys), device and dtype."""

    model: nn.Module
    identity: str  # e.g. "imagebind_huge-4f2a..." or "mini-1c9e...": changes whenever the weights change
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    info: dict = field(default_factory=dict)  # training history and metrics of a miniature

    @property
    def embed_dim(self) -> int:
        """Output dimension of every modality head."""
        return self.model.modality_heads["audio"][-1].out_features

    @torch.no_grad()
    def embed(self, modality: str, inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs of one modality -> float32 CPU embeddings (B, D), as ImageBind returns them."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; use one of {MODALITIES}")
        x = inputs.to(self.device)
        x = x if modality == "text" else x.to(self.dtype)  # text inputs are token ids
        with _autocast(self.device, self.dtype):
            out = self.model({modality: x})[modality]
        return out.float().cpu()

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> text embeddings (N, D)."""
        return self.embed("text", load_text_inputs(texts))


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (0: leave as is), then restore the previous number.

    Measured on the shared 2-core machine: a training step of the miniature took 0.11 s with 1 thread and
    1.4 s with 2 while other processes were busy, as the two threads wait on each other.
    """
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _autocast(device: str, dtype: torch.dtype):
    """Autocast for reduced precision on a GPU, a no-op otherwise."""
    enabled = dtype != torch.float32 and device.startswith("cuda")
    return torch.autocast("cuda", dtype=dtype, enabled=enabled)


def torch_dtype(name: str) -> torch.dtype:
    """"float32" / "bfloat16" / "float16" -> the torch dtype."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"imagebind.dtype must be one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


def load_imagebind(cfg, progress: bool = True) -> Embedder:
    """The model of ``cfg.imagebind.model``: ``"huge"`` (official weights) or ``"mini"`` (trained here)."""
    kind = cfg.imagebind.model
    if kind == "huge":
        return load_imagebind_huge(cfg, progress=progress)
    if kind == "mini":
        return load_or_train_mini(cfg, progress=progress)
    raise ValueError(f"unknown imagebind.model {kind!r}: use 'huge' or 'mini'")


# ----------------------------------------------------------------------------------------------------------
# Inputs of the vision and text towers (audio: a2i_utils.imagebind_audio)
# ----------------------------------------------------------------------------------------------------------
def vision_transform():
    """ImageBind's image transform: bicubic resize to 224, centre crop, CLIP normalisation."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(VISION_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(VISION_SIZE),
        transforms.ToTensor(),
        transforms.Normalize(mean=VISION_MEAN, std=VISION_STD),
    ])


def load_vision_inputs(paths: Sequence[str | Path]) -> torch.Tensor:
    """Image files -> ImageBind's vision input (B, 3, 224, 224); a bad file raises ImageError naming it."""
    from PIL import Image, UnidentifiedImageError

    from a2i_utils.data import ImageError

    tf = vision_transform()
    out = []
    for p in paths:
        try:
            with Image.open(p) as img:
                out.append(tf(img.convert("RGB")))  # (3, 224, 224)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise ImageError(f"{p}: not a readable image ({err})") from err
    return torch.stack(out) if out else torch.empty(0, 3, VISION_SIZE, VISION_SIZE)


def load_text_inputs(texts: Sequence[str]) -> torch.Tensor:
    """Strings -> ImageBind's BPE token ids (N, 77)."""
    return import_imagebind_data().load_and_transform_text(list(texts), "cpu")


def class_prompts(classes: Sequence[str]) -> list[str]:
    """The text prompt of each scene class."""
    return [PROMPT.format(c) for c in classes]


# ----------------------------------------------------------------------------------------------------------
# Full mode: imagebind_huge from a verified checkpoint in the cache
# ----------------------------------------------------------------------------------------------------------
def huge_checkpoint_path(cfg) -> Path:
    """Where the official checkpoint lives in the cache."""
    return Path(cfg.downloads_dir) / HUGE_FILENAME


def download_file(url: str, dest: Path, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed when present), checking the announced size."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        resp = urllib.request.urlopen(request, timeout=60)
    except (urllib.error.URLError, OSError) as err:
        raise CheckpointError(f"could not download {url} to {dest}: {err}") from err
    with resp:
        status = getattr(resp, "status", None)
        if done and status != 206:  # the server ignored the range: start over
            done = 0
        length = resp.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        with open(part, "ab" if done else "wb") as f, tqdm(
            total=total, initial=done, unit="B", unit_scale=True, desc=f"download {dest.name}", disable=not progress
        ) as bar:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if total is not None and got != total:
        raise CheckpointError(f"{part}: download incomplete ({got} of {total} bytes); run again to resume")
    part.replace(dest)
    return dest


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True`` (memory-mapped when possible); CheckpointError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001  (torch raises RuntimeError, pickle errors, EOFError...)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, corrupt or truncated ({err})") from err
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]  # a training checkpoint that wraps the weights
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    return sd


def check_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Raise CheckpointError naming ``path`` unless ``sd`` has exactly the model's names and shapes.

    Dtypes must be of the same kind (floating point or not); a float precision difference is allowed, as
    ``load_state_dict`` converts it.
    """
    want = model.state_dict()
    missing = sorted(want.keys() - sd.keys())
    extra = sorted(sd.keys() - want.keys())
    wrong = [
        f"{k}: {tuple(sd[k].shape)} {sd[k].dtype} in the file, model wants {tuple(want[k].shape)} {want[k].dtype}"
        for k in sorted(want.keys() & sd.keys())
        if sd[k].shape != want[k].shape or sd[k].is_floating_point() != want[k].is_floating_point()
    ]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[:3]}")
        if extra:
            parts.append(f"{len(extra)} unexpected tensor(s), e.g. {extra[:3]}")
        if wrong:
            parts.append(f"{len(wrong)} with a wrong shape or dtype, e.g. {wrong[:3]}")
        raise CheckpointError(f"{path}: not a checkpoint of this model: " + "; ".join(parts))


def _stamp_path(path: Path) -> Path:
    """The sidecar JSON that records a verified checkpoint's size and hash."""
    return path.with_name(path.name + ".verified.json")


def read_stamp(path: Path) -> dict | None:
    """The verification stamp of checkpoint ``path``, or None when absent or unreadable (then verified again)."""
    stamp_file = _stamp_path(path)
    if not stamp_file.is_file():
        return None
    try:
        stamp = json.loads(stamp_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        print(f"warning: {stamp_file}: unreadable verification stamp ({err}); verifying {path.name} again")
        return None
    if not isinstance(stamp, dict) or not {"size", "mtime_ns", "sha256"} <= stamp.keys():
        print(f"warning: {stamp_file}: incomplete verification stamp; verifying {path.name} again")
        return None
    return stamp


def load_verified_weights(model: nn.Module, path: Path) -> dict:
    """Verify ``path`` against ``model`` (stamp, names, shapes) and load it; return the (current) stamp.

    The stamp holds size, modification time (ns) and SHA-256: a size change is refused, a modification time
    change (a replaced file of the same size) makes the file be hashed again, so the identity follows it.
    """
    path = Path(path)
    stamp = read_stamp(path)
    st = path.stat() if path.is_file() else None
    if stamp is not None and st is not None and st.st_size != stamp["size"]:
        raise CheckpointError(
            f"{path}: size {st.st_size} bytes differs from the verified {stamp['size']}: "
            "the file changed or is corrupt; delete it (and its .verified.json) to download it again"
        )
    sd = read_state_dict(path)
    check_state_dict(sd, model, path)
    model.load_state_dict(sd, strict=True)
    if stamp is None or stamp["mtime_ns"] != st.st_mtime_ns:  # new, or replaced by a same-size file: hash again
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path), "tensors": len(sd)}
        atomic_write_text(_stamp_path(path), json.dumps(stamp, indent=1))
    return stamp


def load_imagebind_huge(
    cfg,
    progress: bool = True,
    download: bool = True,
    url: str = HUGE_URL,
    builder: Callable[[], nn.Module] | None = None,
) -> Embedder:
    """``imagebind_huge`` with the official weights from the cache (downloaded once), eval mode, cfg's dtype.

    ``builder`` makes the (untrained) model; the default is ``imagebind_huge(pretrained=False)``. Tests pass a
    small ``ImageBindModel`` and a ``file://`` URL to run this same path on a checkpoint they wrote.
    """
    path = huge_checkpoint_path(cfg)
    if not path.is_file():
        if not download:
            raise CheckpointError(f"{path}: no checkpoint in the cache and download=False")
        download_file(url, path, progress=progress)
    builder = builder or (lambda: import_imagebind().imagebind_huge(pretrained=False))
    model = builder()
    try:
        stamp = load_verified_weights(model, path)
    except CheckpointError as err:
        raise CheckpointError(f"{err}\n(delete {path} to download it again from {url})") from err
    device = cfg.resolved_device()
    dtype = torch_dtype(cfg.imagebind.dtype) if device.startswith("cuda") else torch.float32
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return Embedder(model, f"imagebind_huge-{stamp['sha256'][:16]}", device, dtype)


# ----------------------------------------------------------------------------------------------------------
# Demo mode: the miniature ImageBind
# ----------------------------------------------------------------------------------------------------------
def build_mini(cfg) -> nn.Module:
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


def mini_key(cfg, pairs) -> str:
    """A short hash of everything the miniature depends on: config, seed, data, prompt and MODEL_VERSION."""
    ib = {k: v for k, v in dataclasses.asdict(cfg.imagebind).items() if k.startswith("mini_") or k == "embed_dim"}
    data = [(p.id, p.label, p.split, sha256_file(p.image_path), sha256_file(p.audio_path))  # the bytes, not names
            for p in sorted(pairs, key=lambda p: (p.label, p.id))]
    blob = json.dumps({"imagebind": ib, "seed": cfg.seed, "data": data, "prompt": PROMPT,
                       "version": MODEL_VERSION}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def mini_checkpoint_path(cfg, key: str, stage: str = "final") -> Path:
    """``checkpoints/imagebind_mini/<key>[-vision].safetensors``."""
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


def load_or_train_mini(cfg, dataset=None, progress: bool = True) -> Embedder:
    """The miniature ImageBind of ``cfg``: loaded from the cache if trained before, else trained and saved."""
    from a2i_utils.data import prepare_dataset

    dataset = dataset or prepare_dataset(cfg, progress=progress)
    key = mini_key(cfg, dataset.pairs)
    final = mini_checkpoint_path(cfg, key)
    torch.manual_seed(cfg.seed)
    model = build_mini(cfg)
    if final.is_file():
        print(f"Found checkpoint {final.name}, loading")
        info = load_mini_weights(model, final)
    else:
        with cpu_threads(cfg.imagebind.cpu_threads):
            info = train_mini(cfg, model, dataset, key, progress=progress)
    model = model.eval().requires_grad_(False)
    return Embedder(model, f"mini-{key}", "cpu", torch.float32, info)


def train_mini(cfg, model: nn.Module, dataset, key: str, progress: bool = True) -> dict:
    """Stage 1 (vision+text CLIP on scene prompts), then stage 2 (audio InfoNCE on frozen vision); saved."""
    from a2i_utils.data import CLASSES
    from a2i_utils.imagebind_audio import load_audio_inputs

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
        info = {"vision_loss": train_vision_text(model, images, labels, CLASSES, ib, cfg.seed, progress)}
        info["vision_seconds"] = round(time.time() - t0, 1)
        save_mini(model, stage1, info)
    audio = load_audio_inputs([p.audio_path for p in train])  # (N, 3, 1, 128, 204)
    with torch.no_grad():
        model.eval()
        targets = embed_in_batches(model, "vision", images, ib.batch_size)  # (N, D), unit norm, frozen
    t0 = time.time()
    info["audio_loss"] = train_audio(model, audio, targets, ib, cfg.seed, progress)
    info["audio_seconds"] = round(time.time() - t0, 1)
    save_mini(model, mini_checkpoint_path(cfg, key), info)
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


def train_vision_text(model, images, labels, classes, ib, seed: int, progress: bool = True) -> list[float]:
    """Stage 1: CLIP-style cross-entropy of images against the prompts of the 13 scene classes."""
    params = _set_trainable(model, ("vision", "text"))
    opt = torch.optim.AdamW(params, lr=ib.mini_lr, weight_decay=0.05)
    tokens = load_text_inputs(class_prompts(classes))  # (13, 77)
    gen = torch.Generator().manual_seed(seed)
    n, bs = len(images), ib.mini_train_batch
    steps = ib.mini_vision_epochs * ((n + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ib.mini_lr, total_steps=steps, pct_start=0.1)
    losses: list[float] = []
    model.train()
    desc = "mini ImageBind stage 1: vision+text"
    bar = tqdm(total=steps, desc=desc, disable=not progress, mininterval=BAR_INTERVAL_S)
    for _ in range(ib.mini_vision_epochs):
        for idx in torch.randperm(n, generator=gen).split(bs):
            out = model({"vision": augment_images(images[idx], gen), "text": tokens})
            logits = out["vision"] @ out["text"].T  # (B, 13): unit image x scaled text = cosine * logit scale
            loss = F.cross_entropy(logits, labels[idx])
            _optimise(loss, opt, sched, losses, bar)
    bar.close()
    return losses


def infonce(audio: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; ``audio`` (B, D) already carries ImageBind's scale 20 (= 1/temperature)."""
    logits = audio @ image.T  # (B, B): 20 * cosine
    target = torch.arange(len(audio))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train_audio(model, audio, targets, ib, seed: int, progress: bool = True) -> list[float]:
    """Stage 2: the audio tower against the frozen image embeddings of the same pairs, InfoNCE over the batch.

    Each step uses one random clip of the 3 per recording (a cheap augmentation, 3x faster); the model
    averages all 3 at inference, as ImageBind does.
    """
    params = _set_trainable(model, ("audio",))
    opt = torch.optim.AdamW(params, lr=ib.mini_lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed + 1)
    n, bs = len(audio), ib.mini_train_batch
    steps = ib.mini_audio_epochs * ((n + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ib.mini_lr, total_steps=steps, pct_start=0.1)
    losses: list[float] = []
    model.eval()
    model.modality_trunks["audio"].train()  # drop path in the audio trunk only
    bar = tqdm(total=steps, desc="mini ImageBind stage 2: audio", disable=not progress, mininterval=BAR_INTERVAL_S)
    for _ in range(ib.mini_audio_epochs):
        for idx in torch.randperm(n, generator=gen).split(bs):
            clip = torch.randint(0, audio.shape[1], (len(idx),), generator=gen)
            x = audio[idx, clip].unsqueeze(1)  # (B, 1, 1, 128, 204): one clip per recording
            loss = infonce(model({"audio": x})["audio"], targets[idx])
            _optimise(loss, opt, sched, losses, bar)
    bar.close()
    return losses

