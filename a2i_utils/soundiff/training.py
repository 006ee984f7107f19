"""SounDiff fine-tuning (paper §3.3, §4.2): only the U-Net learns; VAE, text encoder and ImageBind are frozen.

One step: a cached image latent ``x0`` (VAE posterior sampled, x scaling factor), noise ``eps`` and a timestep
``t``; the DDPM forward process of the pipeline's own scheduler config gives ``x_t = sqrt(a_t) x0 + sqrt(1-a_t) eps``;
the U-Net sees ``x_t``, ``t``, the prompt embedding (the same as at sampling) and ``class_labels`` built from the
audio embedding exactly as the pipeline builds them; the loss is the MSE to the target of the scheduler's
``prediction_type`` (SD 2.1 UnCLIP: v = sqrt(a_t) eps - sqrt(1-a_t) x0; the paper's code regressed eps).

The loop runs on ``accelerate`` (one CPU, one GPU, or ``accelerate launch`` on several), with mixed precision,
gradient accumulation, optional gradient checkpointing, Adafactor, ``torch.compile``, channels-last and LoRA
(peft). Checkpoints every ``checkpoint_every`` steps are written atomically; ``resume="latest"`` continues the same
trajectory (the randomness of step k depends only on the seed and k).

Interruption and concurrency (tested by killing fine-tuning with SIGKILL, ``tests/test_interruption_training.py``):
a run killed at any point, in a checkpoint write included, resumes from its newest complete ``checkpoint-<step>``
and ends with the weights and losses of an uninterrupted run, bit for bit on the CPU (each step's noise comes from
its own generator, and the optimiser state is saved). A half-written checkpoint only ever exists as a hidden
temporary folder (``.checkpoint-<step>.<pid>.tmp``), which no loader reads; the next run deletes such leftovers.
``history.json`` is written last: a run without it is not finished. A damaged checkpoint (truncated, garbage, a
pickle that carries code) is refused with a :class:`CheckpointError` naming the file, not skipped for the older
one: with atomic writes, damage means that something else changed the file. Delete the run folder to train again.
:func:`finetune` holds :func:`~a2i_utils.io.file_lock` on the run folder (its main process does) and
:func:`load_or_finetune` holds it from its check to its load, so two processes never train the same run at once:
the second waits, then loads the finished run. Weights are read with ``torch.load(weights_only=True)`` and
``use_safetensors=True``: a pickled ``.bin`` dropped into a run folder is never loaded.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import pickle
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from a2i_utils.config import Config
from a2i_utils.io import CheckpointError, atomic_dir, atomic_write_text, cache_key, waiting_lock
from a2i_utils.soundiff.conditioning import class_labels, drop_condition, encode_prompt
from a2i_utils.soundiff.latents import LatentFiles, LatentTensors, cache_latents

RUN_VERSION = 2  # 2: history["lr"] is the LR each step used, "skipped" lists fp16 steps skipped; LoRA options
BAR_INTERVAL_S = 1.0
KEEP_CHECKPOINTS = 2
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # as diffusers' train_text_to_image_lora.py
# Under LoRA with soundiff.lora_class_embedding, the U-Net's class embedding (how it reads the audio: class_labels
# -> linear_1 -> SiLU -> linear_2, added to the time embedding) trains whole, beside the adapters, and is saved
# beside the LoRA file (diffusers' load_lora_weights carries only LoRA layers).
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"  # diffusers' name
TRAINED_MODULES_FILE = "unet_trained_modules.safetensors"  # whole U-Net tensors trained with the LoRA, by name


# ----------------------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------------------
def noise_scheduler_of(pipe):
    """The DDPM training scheduler with the pipeline's own scheduler config (betas, prediction_type)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the U-Net must predict: ``noise`` (epsilon) or ``get_velocity`` (v_prediction), per the scheduler."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"unsupported prediction_type {kind!r}: SounDiff trains 'epsilon' or 'v_prediction' models")


def diffusion_loss(pipe, unet, scheduler, latents, embeds, prompt_embeds, empty_prompt, levels, drop,
                   gen: torch.Generator) -> torch.Tensor:
    """MSE of the U-Net's prediction to the scheduler's target for one batch.

    latents (B, 4, h, w) scaled; embeds (B, D); prompt_embeds (B, L, C); empty_prompt (1, L, C); levels (B,) or
    an int (embedding noise); drop (B,) bool (condition replaced by the pipeline's unconditional input).
    """
    b, device = latents.shape[0], latents.device
    noise = torch.randn(latents.shape, generator=gen).to(device, latents.dtype)  # (B, 4, h, w), as the latents
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen).to(device)  # (B,)
    noisy = scheduler.add_noise(latents, noise, t)  # DDPM forward process
    emb_noise = torch.randn(embeds.shape, generator=gen).to(device, embeds.dtype)  # (B, D)
    labels = class_labels(pipe, embeds, levels if torch.is_tensor(levels) else int(levels), noise=emb_noise)
    labels, prompt = drop_condition(labels, prompt_embeds, empty_prompt, drop.to(device))  # (B, 2D), (B, L, C)
    pred = unet(noisy, t, encoder_hidden_states=prompt, class_labels=labels).sample  # (B, 4, h, w)
    return F.mse_loss(pred.float(), training_target(scheduler, latents, noise, t).float())


# ----------------------------------------------------------------------------------------------------------
# Variants and data
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """What a fine-tune trains on: a name, a prompt, a class subset (None: all) and a number of steps."""

    name: str
    prompt: str
    subset: str | None
    steps: int


def variant_of(cfg: Config, name: str, prompt: str | None = None, subset: str | None = None,
               steps: int | None = None) -> Variant:
    """SounDiff-L (no prompt, all training pairs), SounDiff-S (prompt, one class) or either with overrides."""
    sc = cfg.soundiff
    if name == "L":
        base = Variant("L", sc.prompt_l, None, sc.steps)
    elif name == "S":
        base = Variant("S", sc.prompt_s, sc.subset_s, sc.steps_s)
    else:
        raise ValueError(f"unknown SounDiff variant {name!r}: use 'L' or 'S'")
    return Variant(name, base.prompt if prompt is None else prompt, base.subset if subset is None else subset or None,
                   base.steps if steps is None else steps)


@dataclass
class TrainingData:
    """Everything cached before training: the latent posteriors of N images in V views (on disk:
    :class:`~a2i_utils.soundiff.latents.LatentFiles`, read a batch at a time) and audio embeddings (N, D)."""

    latents: LatentFiles | LatentTensors
    embeds: torch.Tensor
    scaling_factor: float
    ids: list


def latents_root(cfg: Config) -> Path:
    """``cache_dir/latents``: the cached VAE latents of training images (:mod:`a2i_utils.soundiff.latents`)."""
    return Path(cfg.cache_dir) / "latents"


def prepare_training_data(cfg: Config, pipe, pairs, embedder, progress: bool = True) -> TrainingData:
    """Embed the recordings (cached per file), scale them, and stream the images' latent posteriors to the cache.

    The latent pass holds ``soundiff.latent_batch`` images at a time, whatever the number of pairs."""
    from a2i_utils.imagebind.cache import embed_files, scale_audio

    if not pairs:
        raise ValueError("no training pairs for this variant (check soundiff.subset_s / --subset)")
    audio = embed_files(embedder, [p.audio_path for p in pairs], "audio", cfg, progress=progress)  # (N, D)
    embeds = scale_audio(audio, cfg.imagebind.audio_scale)
    sc = cfg.soundiff
    latents = cache_latents(pipe.vae, [p.image_path for p in pairs], sc.image_size, sc.views, latents_root(cfg),
                            batch=sc.latent_batch, progress=progress)
    return TrainingData(latents, embeds, float(pipe.vae.config.scaling_factor), [p.id for p in pairs])


def sample_batch(data: TrainingData, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch: latents (B, 4, h, w) sampled from cached posteriors of random views, embeddings (B, D)."""
    idx = torch.randint(0, data.embeds.shape[0], (batch,), generator=gen)
    view = torch.randint(0, data.latents.views, (batch,), generator=gen)
    mean, std = data.latents.read(idx, view)  # (B, 4, h, w) each, only these B read from disk
    latents = (mean + std * torch.randn(mean.shape, generator=gen)) * data.scaling_factor
    return latents, data.embeds[idx]


# ----------------------------------------------------------------------------------------------------------
# Options: LoRA, optimiser, schedule
# ----------------------------------------------------------------------------------------------------------
def add_lora(unet, rank: int, seed: int, class_embedding: bool = False) -> list[torch.nn.Parameter]:
    """Freeze the U-Net and add LoRA adapters (peft) to its attention projections; with ``class_embedding``, train
    its class embedding (how it reads the audio; 4.3 M parameters at full size) whole too; return the trainable
    params (in float32).

    The adapters' random initialisation is drawn from a CPU generator seeded with ``seed`` (peft initialises
    them on the CPU), so it is fixed by the run's seed and the caller's random state is left as it was."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only: no CUDA generator is reseeded
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS))
    if class_embedding:
        if unet.class_embedding is None:
            raise ValueError("soundiff.lora_class_embedding: this U-Net has no class embedding to train")
        unet.class_embedding.requires_grad_(True)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # adapters train in fp32 over a possibly reduced-precision base
    return params


def make_optimizer(params, cfg: Config):
    """AdamW with the paper's betas and weight decay, or the memory-lean ``torch.optim.Adafactor``."""
    sc = cfg.soundiff
    if sc.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=sc.lr, betas=(sc.beta1, sc.beta2), weight_decay=sc.weight_decay)
    if sc.optimizer == "adafactor":
        return torch.optim.Adafactor(params, lr=sc.lr, weight_decay=sc.weight_decay)
    raise ValueError(f"soundiff.optimizer must be 'adamw' or 'adafactor', got {sc.optimizer!r}")


def linear_lr(step: int, steps: int, lr: float, lr_end: float) -> float:
    """The paper's schedule: lr decaying linearly to lr_end over ``steps``."""
    return lr + (lr_end - lr) * min(step, steps) / max(steps, 1)


MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")


def mixed_precision(cfg: Config, device: str) -> str:
    """accelerate's mixed precision: "auto" -> bf16 on GPUs that compute it natively, else fp16 (with accelerate's
    gradient scaler: a T4, whose bf16 is only emulated); on the CPU bf16 autocast when the pipeline is bfloat16
    (full-smoke: its float32 trainable layers meet a bf16 base), else "no"."""
    from a2i_utils.devices import native_bf16

    mp = cfg.soundiff.mixed_precision
    if mp not in MIXED_PRECISIONS:
        raise ValueError(f"soundiff.mixed_precision must be one of {MIXED_PRECISIONS}, got {mp!r}")
    sc = cfg.soundiff
    if mp == "no" and sc.lora and sc.lora_class_embedding and sc.dtype != "float32" and device.startswith("cuda"):
        raise ValueError(f"soundiff.mixed_precision='no' with a {sc.dtype} pipeline cannot train the float32 class "
                         "embedding beside the LoRA (mixed dtypes in one matmul): use mixed_precision='auto', or "
                         "soundiff.lora_class_embedding=False")
    if mp != "auto":
        return mp
    if not device.startswith("cuda"):
        return "bf16" if cfg.soundiff.dtype == "bfloat16" else "no"
    return "bf16" if native_bf16() else "fp16"


def make_accelerator(cfg: Config, device: str):
    """The run's ``Accelerator``: its mixed precision (:func:`mixed_precision`); fp16 brings a gradient scaler."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mp = mixed_precision(cfg, device)
    # accelerate keeps one process-wide state and refuses another precision in the same process (a notebook that
    # fine-tunes again with other settings, a test session): start a fresh one then. The distributed setup
    # (PartialState) is kept.
    if AcceleratorState._shared_state.get("_mixed_precision", mp) != mp:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mp, cpu=device == "cpu")


# ----------------------------------------------------------------------------------------------------------
# Runs: key, checkpoints, final weights
# ----------------------------------------------------------------------------------------------------------
TRAINING_FIELDS = ("lr", "lr_end", "beta1", "beta2", "weight_decay", "batch_size", "grad_accum", "views",
                   "cond_dropout", "noise_level", "lora", "lora_rank", "lora_class_embedding", "optimizer",
                   "image_size")


def run_key(cfg: Config, base_key: str, variant: Variant, imagebind_identity: str, pair_ids: list) -> str:
    """``soundiff-<variant>-v<RUN_VERSION>-<hash>`` of base model, variant, training fields, audio scale, data, seed."""
    sc = {k: v for k, v in dataclasses.asdict(cfg.soundiff).items() if k in TRAINING_FIELDS}
    payload = {"base": base_key, "variant": dataclasses.asdict(variant), "soundiff": sc, "seed": cfg.seed,
               "audio_scale": cfg.imagebind.audio_scale, "imagebind": imagebind_identity, "pairs": sorted(pair_ids)}
    return cache_key(f"soundiff-{variant.name}", RUN_VERSION, payload)


def run_dir(cfg: Config, key: str) -> Path:
    """``checkpoints/soundiff/<key>``."""
    return Path(cfg.checkpoints_dir) / "soundiff" / key


def trainable_state(unet) -> dict[str, torch.Tensor]:
    """The trainable tensors of the U-Net (all of it, or the LoRA adapters), by name."""
    return {n: p.detach().float().cpu().contiguous() for n, p in unet.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, step: int, unet, opt, sched, history: dict, scaler=None) -> Path:
    """``checkpoint-<step>/``: trainable weights (safetensors), optimiser state, schedule, fp16 gradient scaler
    (its scale and growth tracker; None without one), history; atomic."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        save_file(trainable_state(unet), str(tmp / "trainable.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        scaler_state = scaler.state_dict() if scaler is not None else None
        (tmp / "state.json").write_text(json.dumps({"step": step, "scheduler": sched.state_dict(),
                                                    "scaler": scaler_state, "history": history}))

    path = atomic_dir(folder / f"checkpoint-{step}", write)
    for old in sorted(folder.glob("checkpoint-*"), key=_step_of)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _step_of(path: Path) -> int:
    """The step number of a ``checkpoint-<step>`` folder (-1 if the name is not one)."""
    tail = path.name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def latest_checkpoint(folder: Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step, or None."""
    found = sorted((p for p in folder.glob("checkpoint-*") if _step_of(p) >= 0 and p.is_dir()), key=_step_of)
    return found[-1] if found else None


def load_checkpoint(path: Path, unet, opt, sched, scaler=None) -> tuple[int, dict]:
    """Restore a checkpoint into the (unwrapped) U-Net, optimiser, schedule and fp16 gradient scaler (if the run
    has one and the checkpoint holds its state); return (step, history)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = path / "trainable.safetensors"
    try:
        weights = load_file(str(file))
        file = path / "optimizer.pt"
        opt_state = torch.load(file, weights_only=True)  # plain tensors only: a pickle carrying code is refused
        file = path / "state.json"
        state = json.loads(file.read_text())
        step, sched_state, history = int(state["step"]), state["scheduler"], state["history"]
        scaler_state = state.get("scaler")
    except (SafetensorError, OSError, ValueError, RuntimeError, EOFError, KeyError, TypeError,
            pickle.UnpicklingError) as err:
        raise CheckpointError(f"{file}: unreadable checkpoint ({type(err).__name__}: {err}); "
                              f"delete {path.parent} to train again") from err
    params = dict(unet.named_parameters())
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in weights)
    if missing or set(weights) - set(params):
        raise CheckpointError(f"{path / 'trainable.safetensors'}: does not match this model's trainable weights "
                              f"(missing {missing[:3]}, unexpected {sorted(set(weights) - set(params))[:3]})")
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w)
    opt.load_state_dict(opt_state)
    sched.load_state_dict(sched_state)
    if scaler is not None and scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    return step, history


def save_final(folder: Path, unet, lora: bool) -> Path:
    """The fine-tuned U-Net (``unet/``, save_pretrained, safetensors) or its LoRA (``lora/``), atomically.

    ``lora/`` holds diffusers' ``pytorch_lora_weights.safetensors`` (the adapters) and, when whole modules trained
    with them (``soundiff.lora_class_embedding``), ``unet_trained_modules.safetensors``: those U-Net tensors by
    their names in the U-Net (``class_embedding.linear_1.weight``, ...), float32."""
    if lora:
        from diffusers import StableUnCLIPImg2ImgPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        whole = {n: t for n, t in trainable_state(unet).items() if "lora_" not in n}  # e.g. class_embedding.*

        def write(tmp: Path) -> None:
            StableUnCLIPImg2ImgPipeline.save_lora_weights(tmp, unet_lora_layers=layers, safe_serialization=True,
                                                          weight_name=LORA_WEIGHTS_FILE)
            if whole:
                save_file(whole, str(tmp / TRAINED_MODULES_FILE), metadata={"format": "pt"})

        return atomic_dir(folder / "lora", write)
    return atomic_dir(folder / "unet", lambda tmp: unet.save_pretrained(tmp, safe_serialization=True))


def _load_trained_modules(unet, file: Path) -> None:
    """Copy the whole tensors a LoRA run trained (``unet_trained_modules.safetensors``, if any) into ``unet``."""
    from safetensors.torch import load_file

    if not file.is_file():
        return
    missing, unexpected = unet.load_state_dict(load_file(str(file)), strict=False)
    if unexpected:
        raise CheckpointError(f"{file}: tensors {unexpected[:3]} are not in this U-Net")


def _tensor_names(file: Path) -> set[str]:
    """The tensor names in a safetensors file (none if it does not exist), read from its header."""
    from safetensors import safe_open

    if not file.is_file():
        return set()
    with safe_open(str(file), framework="pt") as f:
        return set(f.keys())


def copy_sharing_weights(unet, own: set[str] = frozenset()):
    """A copy of ``unet`` (modules, buffers) whose parameters are ``unet``'s own tensors, except those named in ``own``.

    A LoRA leaves the base weights as they are and wraps their layers, so the base and every LoRA fine-tune can
    share one copy of them: with three pipelines (the baseline, SounDiff-L and -S) SD 2.1's U-Net is held once
    (1.7 GB in bf16, 3.5 GB in float32), not three times. ``own``: the tensors the fine-tune replaces whole (its
    class embedding), copied so that loading them leaves the base untouched."""
    memo = {id(p): p for name, p in unet.named_parameters() if name not in own}  # deepcopy reuses these
    return copy.deepcopy(unet, memo)


def with_unet(pipe, unet):
    """A pipeline sharing every component of ``pipe`` but the U-Net."""
    new = type(pipe)(**{k: v for k, v in pipe.components.items()} | {"unet": unet})
    new.set_progress_bar_config(disable=True)
    return new


def load_finetuned(pipe, folder: Path):
    """``pipe`` with the fine-tuned U-Net of ``folder`` (``unet/``) or with its LoRA loaded (``lora/``)."""
    from diffusers import UNet2DConditionModel
    from safetensors import SafetensorError

    folder = Path(folder)
    try:  # safetensors only: a pickled .bin put in our folder is never read
        if (folder / "unet").is_dir():
            unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=pipe.unet.dtype,
                                                        use_safetensors=True)
            return with_unet(pipe, unet.to(pipe.unet.device).eval().requires_grad_(False))
        if (folder / "lora").is_dir():
            own = _tensor_names(folder / "lora" / TRAINED_MODULES_FILE)  # loaded below: a copy of their own
            new = with_unet(pipe, copy_sharing_weights(pipe.unet, own))
            new.load_lora_weights(folder / "lora", weight_name=LORA_WEIGHTS_FILE, use_safetensors=True)
            _load_trained_modules(new.unet, folder / "lora" / TRAINED_MODULES_FILE)
            return new
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"{folder}: cannot load the fine-tuned weights ({type(err).__name__}: {err}); "
                              f"delete {folder} to train again") from err
    raise CheckpointError(f"{folder}: no fine-tuned weights (neither unet/ nor lora/)")


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def run_lock(folder: Path, main: bool = True, barrier=None) -> Iterator[None]:
    """Hold the lock of a run folder (on the main process) for the ``with`` block; say so when waiting for it.

    The lock is the hidden file ``.<name>.lock`` beside the folder (outside it: a fresh run deletes the folder).
    ``barrier`` (``accelerator.wait_for_everyone``) keeps the other processes of a multi-process run waiting
    until the main one holds the lock, so none reads the folder while another job still writes it."""
    lock = folder.with_name(f".{folder.name}")  # file_lock adds ".lock"
    with contextlib.ExitStack() as stack:
        if main:
            stack.enter_context(waiting_lock(lock, f"{folder.name} is being trained by another process: "
                                                   "waiting for it to finish"))
        if barrier is not None:
            barrier()
        yield


def remove_temporaries(folder: Path) -> None:
    """Delete the temporary files and folders a killed run left in ``folder`` (call it holding the lock)."""
    for tmp in Path(folder).glob(".*.tmp"):
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def finetune(cfg: Config, pipe, data: TrainingData, variant: Variant, folder: Path, resume: str | None = None,
             progress: bool = True, stop_after: int | None = None) -> dict:
    """Fine-tune a copy of ``pipe.unet`` for ``variant.steps`` steps; save checkpoints and the final weights.

    ``resume="latest"`` continues from the newest checkpoint in ``folder``; ``stop_after`` ends the run early
    after that many steps (as an interruption would), leaving only checkpoints. Returns the history
    (loss per step, the LR each step used, the fp16 steps skipped for non-finite gradients, seconds, samples/s).
    The main process holds the lock of ``folder`` throughout (:func:`run_lock`); the temporaries of a killed run
    are deleted first.
    """
    device = cfg.resolved_device()
    acc = make_accelerator(cfg, device)
    with run_lock(Path(folder), main=acc.is_main_process, barrier=acc.wait_for_everyone):
        if acc.is_main_process:
            remove_temporaries(folder)
        return _finetune(acc, cfg, pipe, data, variant, Path(folder), resume, progress, stop_after)


def _finetune(acc, cfg: Config, pipe, data: TrainingData, variant: Variant, folder: Path, resume: str | None,
              progress: bool, stop_after: int | None) -> dict:
    """:func:`finetune` with its accelerator, holding the run's lock."""
    sc = cfg.soundiff
    if sc.lora:  # the base weights stay frozen and shared; what the run trains whole gets its own copy
        own = {n for n, _ in pipe.unet.named_parameters() if n.startswith("class_embedding.")}
        unet = copy_sharing_weights(pipe.unet, own if sc.lora_class_embedding else set())
    else:
        unet = copy.deepcopy(pipe.unet)
    if sc.lora:
        params = add_lora(unet, sc.lora_rank, cfg.seed, sc.lora_class_embedding)
    else:
        params = list(unet.float().requires_grad_(True).parameters())
    if sc.grad_checkpointing:
        unet.enable_gradient_checkpointing()
    if sc.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    unet.train()
    opt = make_optimizer(params, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: linear_lr(s, variant.steps, sc.lr, sc.lr_end) / sc.lr)
    start, history = 0, {"loss": [], "lr": [], "skipped": []}
    if resume == "latest" and (ckpt := latest_checkpoint(folder)) is not None:
        start, history = load_checkpoint(ckpt, unet, opt, sched, acc.scaler)
        history.setdefault("skipped", [])
        acc.print(f"Resuming from {ckpt.name} (step {start} of {variant.steps})")
    elif acc.is_main_process and folder.exists():
        shutil.rmtree(folder)  # a fresh start never mixes with an older run's checkpoints
    model, opt = acc.prepare(unet, opt)
    if sc.compile:
        model = torch.compile(model)
    prompt = encode_prompt(pipe, variant.prompt, str(acc.device)).to(acc.device)  # (1, L, C)
    empty = encode_prompt(pipe, "", str(acc.device)).to(acc.device)
    noise_sched = noise_scheduler_of(pipe)
    unwrapped = acc.unwrap_model(model)
    end = variant.steps if stop_after is None else min(variant.steps, start + stop_after)
    bar = tqdm(range(start, end), desc=f"SounDiff-{variant.name}", disable=not progress or not acc.is_main_process,
               mininterval=BAR_INTERVAL_S)
    t0 = time.perf_counter()
    for step in bar:
        loss = train_step(acc, model, pipe, noise_sched, data, prompt, empty, cfg, step)
        acc.clip_grad_norm_(params, 1.0)  # unscales fp16 gradients first
        lr = sched.get_last_lr()[0]  # the LR this step uses
        opt.step()  # fp16: skipped by the gradient scaler when a gradient is inf/nan
        if acc.optimizer_step_was_skipped:
            history["skipped"].append(step)
            acc.print(f"step {step + 1}: gradients not finite in fp16: optimiser and LR schedule steps skipped "
                      f"(loss scale now {acc.scaler.get_scale():g})")
        else:
            sched.step()  # the schedule counts the updates made
        opt.zero_grad(set_to_none=True)
        history["loss"].append(float(acc.reduce(loss.detach(), "mean")))
        history["lr"].append(lr)
        bar.set_postfix(loss=f"{np.mean(history['loss'][-20:]):.4f}", lr=f"{history['lr'][-1]:.2e}", refresh=False)
        done = step + 1
        if sc.checkpoint_every and done % sc.checkpoint_every == 0 and done < variant.steps:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(folder, done, unwrapped, opt, sched, history, acc.scaler)
    seconds = time.perf_counter() - t0
    acc.wait_for_everyone()
    history["seconds"] = round(seconds, 1)
    history["samples_per_s"] = round((end - start) * sc.batch_size * sc.grad_accum * acc.num_processes /
                                     max(seconds, 1e-9), 2)
    if acc.is_main_process:
        if end < variant.steps:
            save_checkpoint(folder, end, unwrapped, opt, sched, history, acc.scaler)
        else:
            save_final(folder, unwrapped.eval(), sc.lora)
            atomic_write_text(folder / "history.json", json.dumps(history))
    acc.wait_for_everyone()
    return history


def train_step(acc, model, pipe, noise_sched, data: TrainingData, prompt, empty, cfg: Config, step: int):
    """Forward and backward of one optimiser step (``grad_accum`` micro-batches); returns the mean loss."""
    sc, total = cfg.soundiff, 0.0
    # The U-Net's own dtype (a bf16 base under LoRA, float32 when fully fine-tuned): without autocast (the CPU, or
    # mixed_precision "no") every input must already be in it; under autocast this changes nothing.
    dtype = acc.unwrap_model(model).conv_in.weight.dtype
    prompt, empty = prompt.to(dtype), empty.to(dtype)
    for micro in range(sc.grad_accum):
        gen = torch.Generator().manual_seed(((cfg.seed * 1_000_003 + step) * 64 + micro) * 64 + acc.process_index)
        latents, embeds = sample_batch(data, sc.batch_size, gen)  # (B, 4, h, w), (B, D)
        drop = torch.rand(sc.batch_size, generator=gen) < sc.cond_dropout
        sync = micro == sc.grad_accum - 1
        with contextlib.nullcontext() if sync else acc.no_sync(model):  # no_sync covers the backward
            with acc.autocast():  # the forward only; backward outside it, as accelerate's examples
                loss = diffusion_loss(pipe, model, noise_sched, latents.to(acc.device, dtype),
                                      embeds.to(acc.device, dtype), prompt.expand(sc.batch_size, -1, -1), empty,
                                      sc.noise_level, drop, gen)
            acc.backward(loss / sc.grad_accum)
        total = total + loss.detach() / sc.grad_accum
    return total


def load_or_finetune(cfg: Config, variant: Variant, pipe, dataset, embedder, resume: str | None = "latest",
                     progress: bool = True):
    """(fine-tuned pipeline, history): loaded if this run finished before, else trained (resuming) and saved."""
    pairs = [p for p in dataset.train if variant.subset is None or p.label == variant.subset]
    key = run_key(cfg, getattr(pipe, "key", cfg.soundiff.pretrained_id), variant, embedder.identity,
                  [p.id for p in pairs])
    folder = run_dir(cfg, key)
    with run_lock(folder):  # from the check to the load: a run another process trains is waited for, then loaded
        return _load_or_finetune(cfg, variant, pipe, pairs, embedder, key, folder, resume, progress)


def _load_or_finetune(cfg: Config, variant: Variant, pipe, pairs, embedder, key: str, folder: Path,
                      resume: str | None, progress: bool):
    """:func:`load_or_finetune`, holding the run's lock."""
    from a2i_utils.devices import cpu_threads

    if (folder / "history.json").is_file():
        print(f"Found fine-tuned {key}, loading")
        try:
            history = json.loads((folder / "history.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{folder / 'history.json'}: unreadable ({err}); delete {folder} to retrain") from err
    else:
        data = prepare_training_data(cfg, pipe, pairs, embedder, progress=progress)
        with cpu_threads(cfg.soundiff.cpu_threads):
            history = finetune(cfg, pipe, data, variant, folder, resume=resume, progress=progress)
    tuned = load_finetuned(pipe, folder)
    tuned.key = key
    return tuned, history

