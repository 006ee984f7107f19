"""Demo mode: a miniature UnCLIP that our code pretrains once and caches, from the same diffusers classes.

It stands in for Stability's SD 2.1 UnCLIP, which was trained on OpenCLIP image embeddings of LAION images:

1. an ``AutoencoderKL`` (x4 down: 32 px -> 8 x 8 x 4 latents) trained to reconstruct the synthetic training images;
2. a ``CLIPTokenizer`` whose vocabulary files are written at run time, and a small random ``CLIPTextModel``
   (frozen: a fixed, distinct embedding per prompt, as the real text encoder is frozen too);
3. the ``StableUnCLIPImageNormalizer`` statistics: per-dimension mean and std of the image embeddings;
4. a ``UNet2DConditionModel`` trained as an unCLIP decoder on the miniature ImageBind's **vision** embeddings of
   the training images (v-prediction, unCLIP's embedding noise augmentation: a random noise level per sample,
   the condition dropped for a share of samples so guidance works), with an EMA of its weights.

So the demo's zero-shot baseline is what the paper's is: a decoder that never saw audio, fed audio embeddings.
Everything is saved under ``checkpoints/soundiff_mini/<key>/`` (the key holds the config, the seed, the ImageBind
identity and the images' bytes); a finished VAE is kept, so an interrupted run resumes at the U-Net. Within
the VAE and the U-Net stages an in-stage checkpoint every ``soundiff.mini_checkpoint_every`` steps (weights, the
U-Net's EMA, optimiser, LR schedule, generators, losses; :class:`a2i_utils.checkpoints.StageCheckpoint`) lets a
killed run go on to bitwise the same result. One process pretrains a given miniature at a time (a file lock):
a second one waits, then loads it. Our saved folders are only ever read as safetensors (``use_safetensors=True``):
a pickled ``.bin`` put there is refused, never loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from a2i_utils.checkpoints import StageCheckpoint, find_shipped, remove_stage_checkpoint
from a2i_utils.config import Config, SounDiffConfig
from a2i_utils.devices import cpu_threads
from a2i_utils.io import atomic_dir, atomic_write_text, cache_key, sha256_file, waiting_lock
from a2i_utils.soundiff.latents import dihedral_views, encode_latent_dist, image_tensor

MODEL_VERSION = 1
NOT_IN_KEY = ("mini_checkpoint_every",)  # how often progress is saved never changes the weights
SHIPPED_NAME = "mini_unclip"  # a2i_utils/pretrained/mini_unclip.card.json (scripts/pretrain_miniatures.py)
BAR_INTERVAL_S = 1.0  # progress bars redraw at most once a second (nbval chokes on thousands of messages)
TEXT_MAX_LEN = 20  # tokens (characters) of a prompt in the miniature (the real tokenizer: 77 BPE tokens)
KL_WEIGHT = 1e-6  # VAE: weight of the KL term (as Stable Diffusion's autoencoder)


# ----------------------------------------------------------------------------------------------------------
# Offline tokenizer and text encoder
# ----------------------------------------------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    """The 256 printable symbols that byte-level BPE uses for bytes (GPT-2 / CLIP ``bytes_to_unicode``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """A character-level CLIP vocabulary (bytes, bytes + ``</w>``, the two specials) and an empty merge list."""
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>",
                                                                                  "<|endoftext|>"])}
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    atomic_write_text(vocab_file, json.dumps(vocab))
    atomic_write_text(merges_file, "#version: 0.2\n")
    return vocab_file, merges_file


def offline_tokenizer(max_length: int = TEXT_MAX_LEN, folder: Path | None = None):
    """A ``CLIPTokenizer`` built from files written here (no download): one token per character."""
    import tempfile

    from transformers import CLIPTokenizer

    if folder is None:  # the tokenizer reads its files when built: a temporary folder, removed afterwards
        with tempfile.TemporaryDirectory(prefix="a2i-tokenizer-") as tmp:
            return offline_tokenizer(max_length, Path(tmp))
    vocab_file, merges_file = write_tokenizer_files(Path(folder))
    return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=max_length, pad_token="<|endoftext|>")


def tiny_text_encoder(vocab_size: int, dim: int, max_length: int = TEXT_MAX_LEN, seed: int = 0):
    """A small random ``CLIPTextModel`` (frozen): each prompt gets a fixed, distinct embedding (max_length, dim)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=max_length, bos_token_id=vocab_size - 2,
                            eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return CLIPTextModel(config).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------
# The networks
# ----------------------------------------------------------------------------------------------------------
def build_vae(sc: SounDiffConfig):
    """A small ``AutoencoderKL``: len(channels) - 1 halvings, 4 latent channels."""
    from diffusers import AutoencoderKL

    ch = tuple(sc.mini_vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                         block_out_channels=ch, down_block_types=("DownEncoderBlock2D",) * len(ch),
                         up_block_types=("UpDecoderBlock2D",) * len(ch), norm_num_groups=8,
                         sample_size=sc.image_size, mid_block_add_attention=False)


def build_unet(sc: SounDiffConfig, embed_dim: int, latent_size: int):
    """A small unCLIP ``UNet2DConditionModel``: cross-attention on the prompt, ``class_labels`` of 2 x embed_dim."""
    from diffusers import UNet2DConditionModel

    ch = tuple(sc.mini_unet_channels)
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=ch,
        down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (len(ch) - 1),
        up_block_types=("UpBlock2D",) * (len(ch) - 1) + ("CrossAttnUpBlock2D",),
        attention_head_dim=8, cross_attention_dim=sc.mini_text_dim, norm_num_groups=8,
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * embed_dim,
        use_linear_projection=True,
    )


# ----------------------------------------------------------------------------------------------------------
# Images and latents
# ----------------------------------------------------------------------------------------------------------
def train_vae(vae, images: torch.Tensor, sc: SounDiffConfig, seed: int, progress: bool = True,
              checkpoint: Path | None = None, stop_after: int | None = None) -> list[float]:
    """Reconstruction (MSE) + a small KL term, AdamW with cosine decay, random flips and quarter turns.

    With ``checkpoint`` (a path), an in-stage checkpoint is saved there every ``sc.mini_checkpoint_every`` steps
    and resumed from if present. ``stop_after``: stop after that many steps of the same schedule (the recipe's first
    losses, for the shipped weights' test).
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=sc.mini_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=sc.mini_lr, total_steps=sc.mini_vae_steps, pct_start=0.05)
    ckpt = StageCheckpoint(checkpoint, sc.mini_checkpoint_every, sc.mini_vae_steps, {"vae": vae}, opt, sched, gen)
    state = ckpt.resume()
    start, losses = (state["step"], state["losses"]) if state else (0, [])
    vae.train()
    bar = tqdm(range(start, sc.mini_vae_steps), total=sc.mini_vae_steps, initial=start, desc="mini UnCLIP: VAE",
               disable=not progress, mininterval=BAR_INTERVAL_S)
    for step in bar:
        if stop_after is not None and step >= stop_after:
            break
        idx = torch.randint(0, len(images), (sc.mini_batch,), generator=gen)
        view = int(torch.randint(0, 8, (1,), generator=gen))
        x = dihedral_views(images[idx])[view]  # (B, 3, H, W)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)  # (B, 4, h, w)
        loss = F.mse_loss(vae.decode(z).sample, x) + KL_WEIGHT * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        ckpt.step_done(step + 1, {"losses": losses})
    vae.eval().requires_grad_(False)
    return losses


# ----------------------------------------------------------------------------------------------------------
# Pretraining the U-Net as an unCLIP decoder on vision embeddings
# ----------------------------------------------------------------------------------------------------------
def ema_update(ema, model, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters()):
            pe.lerp_(p, 1.0 - decay)


def pretrain_unet(pipe, latent_mean: torch.Tensor, latent_std: torch.Tensor, embeds: torch.Tensor,
                  sc: SounDiffConfig, seed: int, progress: bool = True,
                  checkpoint: Path | None = None, stop_after: int | None = None) -> tuple[object, dict]:
    """Train ``pipe.unet`` on (latent views (8, N, 4, h, w), embeddings (N, D)); return its EMA copy and history.

    Each sample: a random view of a random training image, a random unCLIP embedding noise level in
    ``[0, mini_max_noise_level]``, the condition dropped with probability ``mini_cond_dropout``. With
    ``checkpoint``: in-stage checkpoints (U-Net, EMA, optimiser, ...) as in :func:`train_vae`; ``stop_after`` too.
    """
    from a2i_utils.soundiff.training import diffusion_loss, noise_scheduler_of

    unet, noise_sched = pipe.unet, noise_scheduler_of(pipe)
    ema = copy.deepcopy(unet).requires_grad_(False)
    empty = _empty_prompt(pipe)  # (1, L, C)
    opt = torch.optim.AdamW(unet.parameters(), lr=sc.mini_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=sc.mini_lr, total_steps=sc.mini_unet_steps,
                                                pct_start=0.05)
    gen = torch.Generator().manual_seed(seed + 7)
    ckpt = StageCheckpoint(checkpoint, sc.mini_checkpoint_every, sc.mini_unet_steps, {"unet": unet, "ema": ema},
                           opt, sched, gen)
    state = ckpt.resume()
    start, history = (state["step"], state["history"]) if state else (0, {"loss": [], "lr": []})
    n, sf = embeds.shape[0], pipe.vae.config.scaling_factor
    unet.train()
    bar = tqdm(range(start, sc.mini_unet_steps), total=sc.mini_unet_steps, initial=start, desc="mini UnCLIP: U-Net",
               disable=not progress, mininterval=BAR_INTERVAL_S)
    for step in bar:
        if stop_after is not None and step >= stop_after:
            break
        idx = torch.randint(0, n, (sc.mini_batch,), generator=gen)
        view = torch.randint(0, 8, (sc.mini_batch,), generator=gen)
        mean, std = latent_mean[view, idx], latent_std[view, idx]  # (B, 4, h, w)
        latents = (mean + std * torch.randn(mean.shape, generator=gen)) * sf
        levels = torch.randint(0, sc.mini_max_noise_level + 1, (sc.mini_batch,), generator=gen)
        drop = torch.rand(sc.mini_batch, generator=gen) < sc.mini_cond_dropout
        loss = diffusion_loss(pipe, unet, noise_sched, latents, embeds[idx], empty.expand(sc.mini_batch, -1, -1),
                              empty, levels, drop, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_update(ema, unet, min(sc.mini_ema, (1 + step) / (10 + step)))
        history["loss"].append(loss.item())
        history["lr"].append(sched.get_last_lr()[0])
        bar.set_postfix(loss=f"{np.mean(history['loss'][-20:]):.4f}", refresh=False)
        ckpt.step_done(step + 1, {"history": history})
    return ema.eval(), history


@torch.no_grad()
def _empty_prompt(pipe) -> torch.Tensor:
    """The encoded empty prompt (1, L, C): the prompt of pretraining and the unconditional one."""
    from a2i_utils.soundiff.conditioning import encode_prompt

    return encode_prompt(pipe, "", str(pipe.unet.device))


# ----------------------------------------------------------------------------------------------------------
# Cache: key, save, load, train
# ----------------------------------------------------------------------------------------------------------
def data_fingerprint(pairs) -> list:
    """(id, label, split, sha256 of the image) of each pair: the bytes, not the names."""
    return [(p.id, p.label, p.split, sha256_file(p.image_path)) for p in sorted(pairs, key=lambda p: (p.label, p.id))]


def recipe_config(cfg: Config) -> dict:
    """The fields of ``cfg.soundiff`` that make the miniature (sizes, pretraining), as in its key and card."""
    return {k: v for k, v in dataclasses.asdict(cfg.soundiff).items()
            if (k.startswith("mini_") or k == "image_size") and k not in NOT_IN_KEY}


def mini_unclip_key(cfg: Config, pairs, imagebind_identity: str) -> str:
    """``mini_unclip-v<MODEL_VERSION>-<hash>``: the soundiff config's mini fields, image size, seed, ImageBind, data."""
    payload = {"soundiff": recipe_config(cfg), "seed": cfg.seed, "imagebind": imagebind_identity,
               "data": data_fingerprint(pairs)}
    return cache_key("mini_unclip", MODEL_VERSION, payload)


def mini_dir(cfg: Config, key: str) -> Path:
    """``checkpoints/soundiff_mini/<key>``."""
    return Path(cfg.checkpoints_dir) / "soundiff_mini" / key


def save_components(pipe, folder: Path, info: dict) -> None:
    """Save every component but the image-encoder stand-in (safetensors weights) and ``info.json``."""
    for name in ("unet", "vae", "text_encoder", "tokenizer", "image_normalizer", "scheduler",
                 "image_noising_scheduler"):
        getattr(pipe, name).save_pretrained(folder / name)
    atomic_write_text(folder / "info.json", json.dumps(info))


def load_components(folder: Path):
    """A pipeline from :func:`save_components`' folder, with the stand-in image encoder; ``pipe.info`` set.

    Weights are read from safetensors only: a folder whose weights are a pickled ``.bin`` is a
    :class:`CheckpointError`, and the ``.bin`` is never unpickled.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer

    from a2i_utils.io import CheckpointError
    from a2i_utils.soundiff.assembly import attach_stand_in

    try:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True)
        pipe = StableUnCLIPImg2ImgPipeline(
            feature_extractor=CLIPImageProcessor(crop_size=unet.config.sample_size, size=unet.config.sample_size),
            image_encoder=None,
            image_normalizer=StableUnCLIPImageNormalizer.from_pretrained(folder / "image_normalizer",
                                                                         use_safetensors=True),
            image_noising_scheduler=DDPMScheduler.from_pretrained(folder / "image_noising_scheduler"),
            tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
            text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True),
            unet=unet, scheduler=DDIMScheduler.from_pretrained(folder / "scheduler"),
            vae=AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True),
        )
        pipe.info = json.loads((folder / "info.json").read_text())
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{folder}: not a complete miniature UnCLIP ({err}); delete it to retrain") from err
    for m in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_normalizer):
        m.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return attach_stand_in(pipe)


def load_or_pretrain_mini(cfg: Config, dataset=None, embedder=None, progress: bool = True):
    """The miniature UnCLIP pipeline of ``cfg``: the shipped one (``a2i_utils/pretrained/mini_unclip/``) when it was
    made with this very config, ImageBind and data (hashes checked), else loaded if pretrained before, else pretrained
    and saved.

    Pretraining holds a lock on the folder: a second process asking for the same miniature meanwhile waits,
    then loads what the first one saved.
    """
    from a2i_utils.data import prepare_dataset
    from a2i_utils.imagebind.embedder import load_imagebind

    dataset = dataset or prepare_dataset(cfg, progress=progress)
    embedder = embedder or load_imagebind(cfg, progress=progress)
    key = mini_unclip_key(cfg, dataset.pairs, embedder.identity)
    folder = mini_dir(cfg, key)
    pipe = None
    shipped = None if (folder / "info.json").is_file() else find_shipped(SHIPPED_NAME, key, "miniature UnCLIP")
    if shipped is not None:
        pipe = load_components(shipped / SHIPPED_NAME)
    elif not (folder / "info.json").is_file():
        with waiting_lock(folder, f"{key} is being trained by another process: waiting for it to finish"):
            if not (folder / "info.json").is_file():
                print(f"No pretrained miniature UnCLIP {key} yet: pretraining it")
                with cpu_threads(cfg.soundiff.cpu_threads):
                    pipe = pretrain_mini(cfg, dataset, embedder, folder, progress)
    if pipe is None:
        print(f"Found pretrained miniature UnCLIP {key}, loading")
        pipe = load_components(folder)
    pipe.key = key
    return pipe


def unet_stage_inputs(cfg: Config, vae, images: torch.Tensor, embeds: torch.Tensor):
    """What the U-Net stage starts from: the pipeline (fresh seeded U-Net, the trained VAE, tokenizer and text
    encoder, normaliser statistics of ``embeds`` (N, D)) and the VAE posteriors of the 8 views of ``images``."""
    from a2i_utils.soundiff.assembly import assemble

    sc = cfg.soundiff
    tokenizer = offline_tokenizer(TEXT_MAX_LEN)
    text_encoder = tiny_text_encoder(len(tokenizer), sc.mini_text_dim, TEXT_MAX_LEN, cfg.seed)
    torch.manual_seed(cfg.seed)
    latent_size = sc.image_size // 2 ** (len(sc.mini_vae_channels) - 1)
    unet = build_unet(sc, embeds.shape[1], latent_size)
    pipe = assemble(unet, vae, text_encoder, tokenizer, embeds.shape[1], sc.image_size,
                    scheduler_config=None)
    pipe.image_normalizer.mean.data.copy_(embeds.mean(0, keepdim=True))  # (1, D)
    pipe.image_normalizer.std.data.copy_(embeds.std(0, keepdim=True).clamp(min=1e-6))  # (1, D)
    views = dihedral_views(images)  # (8, N, 3, H, W)
    dist = [encode_latent_dist(vae, v) for v in views]
    latent_mean = torch.stack([m for m, _ in dist])  # (8, N, 4, h, w)
    latent_std = torch.stack([s for _, s in dist])
    return pipe, latent_mean, latent_std


def pretrain_mini(cfg: Config, dataset, embedder, folder: Path, progress: bool = True):
    """VAE (kept as a stage), normaliser statistics, then the U-Net on vision embeddings; saved atomically."""
    from diffusers import AutoencoderKL

    from a2i_utils.imagebind.cache import embed_files

    sc, train = cfg.soundiff, dataset.train
    images = image_tensor([p.image_path for p in train], sc.image_size)  # (N, 3, H, W)
    vae_dir = folder.with_name(folder.name + "-vae")
    info: dict = {}
    if (vae_dir / "config.json").is_file():
        print(f"Found the miniature's VAE {vae_dir.name}, loading (resuming at the U-Net)")
        vae = AutoencoderKL.from_pretrained(vae_dir, use_safetensors=True).eval().requires_grad_(False)
        info.update(json.loads((vae_dir / "vae_info.json").read_text()))
    else:
        torch.manual_seed(cfg.seed)
        vae = build_vae(sc)
        t0 = time.time()
        vae_progress = folder.with_name(folder.name + "-vae-progress.safetensors")
        info["vae_loss"] = train_vae(vae, images, sc, cfg.seed, progress, checkpoint=vae_progress)
        info["vae_seconds"] = round(time.time() - t0, 1)
        mean, _ = encode_latent_dist(vae, images)
        vae.register_to_config(scaling_factor=float(1.0 / mean.std()))  # unit-variance latents, as SD's 0.18215
        atomic_dir(vae_dir, lambda tmp: (vae.save_pretrained(tmp),
                                         atomic_write_text(tmp / "vae_info.json", json.dumps(info))))
        remove_stage_checkpoint(vae_progress)
    embeds = embed_files(embedder, [p.image_path for p in train], "vision", cfg, progress=progress)  # (N, D)
    pipe, latent_mean, latent_std = unet_stage_inputs(cfg, vae, images, embeds)
    t0 = time.time()
    unet_progress = folder.with_name(folder.name + "-unet-progress.safetensors")
    ema, history = pretrain_unet(pipe, latent_mean, latent_std, embeds, sc, cfg.seed, progress, unet_progress)
    info.update(unet_loss=history["loss"], unet_lr=history["lr"], unet_seconds=round(time.time() - t0, 1))
    pipe.register_modules(unet=ema)
    pipe.image_normalizer.requires_grad_(False)
    atomic_dir(folder, lambda tmp: save_components(pipe, tmp, info))
    remove_stage_checkpoint(unet_progress)
    shutil.rmtree(vae_dir, ignore_errors=True)
    return load_components(folder)

