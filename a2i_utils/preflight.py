"""Preflight: before any long work, check that full mode can run here; one message says what is missing and what to do.

Full mode needs a CUDA GPU with enough memory for the chosen option, enough CPU memory to load the large
models, and their weights (in the cache, or a network that reaches where they are downloaded from). A
notebook or script calls :func:`require` with the stages it is about to run, before it downloads, loads or
trains anything::

    from a2i_utils.preflight import require
    require(cfg, "embed", "finetune")   # PreflightError listing every problem, each with its fix

Stages: ``"data"`` (ADVANCE, unless ``data.root`` is set), ``"embed"`` (ImageBind-huge), ``"finetune"``
(the SD 2.1 UnCLIP U-Net) and ``"sample"`` (the UnCLIP pipeline). Stages that use the demo models (``mini``)
need nothing and pass everywhere. The memory needed by the fine-tuning options is FACTS §6 (measured on one
H200 at 768 px with bf16 autocast); other figures are estimates and say so (:data:`MEMORY_NOTES`).

A leaf module: it imports nothing of the parts (``a2i_utils.data``, ``imagebind``, ``soundiff``) at module level.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from a2i_utils.config import Config, get_config, resolve_device

GIB = 1024**3
GB = 1e9
STAGES = ("data", "embed", "finetune", "sample")
CUDA_CONTEXT_GIB = 0.5  # estimate: what the CUDA context and the allocator's slack take besides the tensors

# FACTS §6, measured on one H200 (2026-11-26): U-Net fine-tuning at 768 px, bf16 autocast, fp32 trainable weights.
# option -> {batch: (peak GiB, samples/s)}
FINETUNE_MEASURED: dict[str, dict[int, tuple[float, float]]] = {
    "full-adamw": {1: (16.4, 8.7), 4: (22.1, 28.8)},
    "full-adamw-ckpt": {1: (16.4, 4.7), 4: (16.4, 15.1)},
    "full-adafactor-ckpt": {1: (8.4, 2.1), 4: (9.4, 8.4)},
    "lora-ckpt": {1: (3.3, 3.9), 4: (3.7, 18.2)},
}
# Without gradient checkpointing each sample past the first keeps its activations: (22.1 - 16.4) / 3 GiB,
# from the two full AdamW rows. Applied to options measured only with checkpointing (estimate).
NO_CKPT_GIB_PER_EXTRA_SAMPLE = (22.1 - 16.4) / 3
OPTION_SETTINGS = {  # how to choose an option in the config
    "full-adamw": "soundiff.optimizer='adamw', soundiff.grad_checkpointing=False",
    "full-adamw-ckpt": "soundiff.optimizer='adamw', soundiff.grad_checkpointing=True",
    "full-adafactor-ckpt": "soundiff.optimizer='adafactor', soundiff.grad_checkpointing=True",
    "lora-ckpt": "soundiff.lora=True, soundiff.grad_checkpointing=True",
}

# Sizes (FACTS §1, §7): parameters of the full-size networks, and the files downloaded.
IMAGEBIND_HUGE_PARAMS = 1_200.8e6
IMAGEBIND_HUGE_FILE_GB = 4.80  # imagebind_huge.pth
IMAGEBIND_LOAD_CPU_GB = 6.24  # peak RSS of the lean load, measured by bench/bench_load.py (CPU, float32)
UNCLIP_PARAMS = {"unet": 870.2e6, "vae": 83.7e6, "text_encoder": 340.4e6}  # the image encoder is not loaded
UNCLIP_DOWNLOAD_GB = 5.2  # estimate: fp32 safetensors of the U-Net, VAE and text encoder
ADVANCE_DOWNLOAD_GB = 3.0  # both archives, and as much again unpacked
MEMORY_NOTES = {
    "embed_activations_gib": 1.5,  # estimate: ImageBind-huge audio activations at batch 64 besides the weights
    "sample_gib_per_image": 0.35,  # estimate: U-Net activations per image at 768 px with guidance (x2 batch)
    "unclip_load_cpu_gb": 6.0,  # estimate: CPU peak while the pipeline's fp32 files are read and converted
}


@dataclass(frozen=True)
class Problem:
    """One thing that stops full mode here: what is missing, and what to do about it."""

    stage: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.stage}] {self.what}\n      -> {self.fix}"


class PreflightError(RuntimeError):
    """Full mode cannot run here as configured; the message lists every problem with its fix."""

    def __init__(self, problems: Sequence[Problem], machine: Machine):
        self.problems = list(problems)
        self.machine = machine
        lines = [f"full mode cannot run here as configured ({machine.describe()}):"]
        lines += [f"  {i}. {p}" for i, p in enumerate(self.problems, 1)]
        lines.append("  Or run the course in demo mode (A2I_MODE=demo): same notebooks, small models, any CPU.")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Machine:
    """What this machine offers: the device, GPU name and memory, bf16, available CPU memory, free disk."""

    device: str  # "cuda", "cuda:1", "mps" or "cpu"
    forced: bool  # the device was chosen explicitly (config or A2I_DEVICE), not found by "auto"
    gpu_name: str = ""
    gpu_free_gib: float = 0.0
    gpu_total_gib: float = 0.0
    bf16: bool = False  # native bfloat16 (a T4 has none)
    cpu_available_gb: float | None = None
    disk_free_gb: dict[str, float] = field(default_factory=dict)  # folder -> GB free

    @property
    def cuda(self) -> bool:
        """Whether the device is a CUDA GPU."""
        return self.device.startswith("cuda")

    def describe(self) -> str:
        """One line: GPU and its memory, CPU memory."""
        gpu = (f"{self.gpu_name}, {self.gpu_free_gib:.1f} of {self.gpu_total_gib:.1f} GiB free"
               + ("" if self.bf16 else ", no bf16")) if self.cuda else f"device {self.device}, no CUDA GPU"
        cpu = f"{self.cpu_available_gb:.1f} GB CPU memory available" if self.cpu_available_gb is not None else ""
        return ", ".join(x for x in (gpu, cpu) if x)


def detect(cfg: Config) -> Machine:
    """The machine as ``cfg`` would use it (device resolution, GPU memory, CPU memory, disk of the cache)."""
    from a2i_utils.memory import available_memory_bytes

    forced = cfg.device != "auto" or bool(os.environ.get("A2I_DEVICE"))
    device = resolve_device(cfg.device)
    avail = available_memory_bytes()
    disk = {str(cfg.cache_dir): _disk_free_gb(cfg.cache_dir)}
    info = {"device": device, "forced": forced, "cpu_available_gb": avail / GB if avail else None,
            "disk_free_gb": disk}
    if device.startswith("cuda"):
        info.update(_cuda_info(device))
    return Machine(**info)


def _disk_free_gb(folder: Path) -> float:
    """Free space (GB) on the file system that holds ``folder`` (or its nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free / GB


def _cuda_info(device: str) -> dict:
    """Name, free and total memory (GiB) and native bf16 of a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return {"gpu_name": "", "gpu_free_gib": 0.0, "gpu_total_gib": 0.0}
    index = torch.device(device).index or 0
    free, total = torch.cuda.mem_get_info(index)
    with torch.cuda.device(index):
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return {"gpu_name": torch.cuda.get_device_name(index), "gpu_free_gib": free / GIB, "gpu_total_gib": total / GIB,
            "bf16": bf16}


# ----------------------------------------------------------------------------------------------------------
# Can a file be downloaded? (tests replace ``probe_url``)
# ----------------------------------------------------------------------------------------------------------
def probe_url(url: str, timeout: float = 10.0) -> str | None:
    """None when ``url`` answers (a HEAD request; ``file://``: the file exists), else why not."""
    if urlparse(url).scheme == "file":
        return None if Path(unquote(urlparse(url).path)).is_file() else "no such local file"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except (urllib.error.URLError, OSError, ValueError) as err:
        return str(getattr(err, "reason", err))


# ----------------------------------------------------------------------------------------------------------
# Memory needs
# ----------------------------------------------------------------------------------------------------------
def finetune_option(cfg: Config) -> str:
    """The FACTS §6 name of ``cfg.soundiff``'s fine-tuning option, e.g. ``"full-adamw-ckpt"`` or ``"lora"``."""
    sc = cfg.soundiff
    name = "lora" if sc.lora else f"full-{sc.optimizer}"
    return name + ("-ckpt" if sc.grad_checkpointing else "")


def finetune_peak_gib(option: str, batch: int) -> tuple[float, bool]:
    """Peak GPU GiB of fine-tuning ``option`` at ``batch`` (768 px), and whether that figure was measured."""
    measured = FINETUNE_MEASURED.get(option) or FINETUNE_MEASURED.get(option + "-ckpt")
    if measured is None:
        raise ValueError(f"no memory figures for fine-tuning option {option!r}; known: {list(FINETUNE_MEASURED)}")
    (b1, (p1, _)), (b4, (p4, _)) = sorted(measured.items())
    peak = p1 + (p4 - p1) * (batch - b1) / (b4 - b1)  # linear in the batch between the measured points
    exact = option in FINETUNE_MEASURED and batch in measured
    if option not in FINETUNE_MEASURED:  # measured only with checkpointing: add the activations it saves
        peak = max(peak, p1) + NO_CKPT_GIB_PER_EXTRA_SAMPLE * (batch - 1)
    return max(peak, p1), exact


def _weights_gib(params: float, dtype: str) -> float:
    """GiB of ``params`` parameters stored in ``dtype``."""
    return params * (4 if dtype == "float32" else 2) / GIB


def embed_gpu_gib(cfg: Config) -> float:
    """Estimated peak GPU GiB of embedding with ImageBind-huge in ``imagebind.dtype`` (weights exact)."""
    return _weights_gib(IMAGEBIND_HUGE_PARAMS, cfg.imagebind.dtype) + MEMORY_NOTES["embed_activations_gib"]


def sample_gpu_gib(cfg: Config, batch: int = 8) -> float:
    """Estimated peak GPU GiB of sampling ``batch`` images at 768 px with guidance (weights exact)."""
    weights = _weights_gib(sum(UNCLIP_PARAMS.values()), cfg.soundiff.dtype)
    return weights + MEMORY_NOTES["sample_gib_per_image"] * 2 * batch


# ----------------------------------------------------------------------------------------------------------
# The checks, stage by stage
# ----------------------------------------------------------------------------------------------------------
def _needs_gpu(stage: str, m: Machine, slow: str) -> list[Problem]:
    """A problem when there is no CUDA GPU (for embedding, allowed if the CPU was forced knowingly)."""
    if m.cuda:
        return []
    if stage == "embed" and m.forced:
        return []  # A2I_DEVICE=cpu: the user chose the slow way
    fix = ("run on a CUDA GPU (Colab: Runtime > Change runtime type > T4 GPU)"
           + (", or force the CPU knowingly with A2I_DEVICE=cpu" if stage == "embed" else ""))
    return [Problem(stage, f"no CUDA GPU (device {m.device}): {slow}", fix)]


def _cpu_memory(stage: str, m: Machine, need_gb: float, what: str) -> list[Problem]:
    """A problem when less CPU memory is available than loading needs."""
    if m.cpu_available_gb is None or m.cpu_available_gb >= need_gb:
        return []
    return [Problem(stage, f"{what} needs about {need_gb:.1f} GB of CPU memory to load, "
                           f"{m.cpu_available_gb:.1f} GB is available",
                    "close other programs or notebooks (each kernel holds its own models), or use a machine with "
                    "more memory")]


def _bf16(stage: str, m: Machine, dtype: str, key: str) -> list[Problem]:
    """A problem when bfloat16 is asked of a GPU that has none (a T4)."""
    if m.cuda and dtype == "bfloat16" and not m.bf16:
        return [Problem(stage, f"{key}='bfloat16' but {m.gpu_name or 'this GPU'} has no bfloat16",
                        f"set {key}='float16' (the same memory)")]
    return []


def _download(stage: str, present: bool, url: str, dest: Path, size_gb: float, m: Machine,
              probe: Callable[[str], str | None], also: str = "") -> list[Problem]:
    """Problems with getting a missing file: no network to ``url``, or too little disk for it."""
    if present:
        return []
    problems = []
    why = probe(url)
    if why is not None:
        problems.append(Problem(stage, f"{dest.name} is not in {dest.parent} and {url} cannot be reached ({why})",
                                f"copy it ({size_gb:.1f} GB) to {dest} from a machine with network access, "
                                "then run again" + also))
    free = _disk_free_gb(dest.parent)
    if free < size_gb * 1.05:
        problems.append(Problem(stage, f"{dest.parent} has {free:.1f} GB free, {dest.name} needs {size_gb:.1f} GB",
                                "free disk space, or put the cache on a larger disk with A2I_CACHE=/big/disk/a2i"
                                + also))
    return problems


def check_data(cfg: Config, m: Machine, probe=probe_url) -> list[Problem]:
    """ADVANCE: nothing to check with ``data.root`` or synthetic data; else present or downloadable."""
    if cfg.data.root or cfg.data.source != "advance":
        return []
    from a2i_utils.data.advance import ARCHIVES  # (a part: imported only when checked)

    problems = []
    for archive in ARCHIVES:
        extracted = (Path(cfg.datasets_dir) / "advance" / f".extracted-{archive.md5}").is_file()
        downloaded = (Path(cfg.downloads_dir) / archive.name).is_file()
        problems += _download("data", extracted or downloaded, archive.url, Path(cfg.downloads_dir) / archive.name,
                              ADVANCE_DOWNLOAD_GB / 2, m, probe,
                              also="; or point data.root at an unpacked ADVANCE you already have")
    return problems


def check_embed(cfg: Config, m: Machine, probe=probe_url) -> list[Problem]:
    """ImageBind-huge: a GPU (or the CPU forced), its memory, bf16, CPU memory to load, the weights."""
    if cfg.imagebind.model != "huge":
        return []
    from a2i_utils.imagebind.huge import HUGE_URL, huge_checkpoint_path

    problems = _needs_gpu("embed", m, "ImageBind-huge takes ~1.3 s per recording on a CPU core (~2 h for ADVANCE)")
    problems += _bf16("embed", m, cfg.imagebind.dtype, "imagebind.dtype")
    need = embed_gpu_gib(cfg)
    if m.cuda and need + CUDA_CONTEXT_GIB > m.gpu_free_gib:
        fix = ("set imagebind.dtype='float16' (half the weights) or " if cfg.imagebind.dtype == "float32" else "")
        problems.append(Problem("embed", f"ImageBind-huge needs about {need:.1f} GiB of GPU memory "
                                         f"(estimate), {m.gpu_free_gib:.1f} GiB is free",
                                fix + "a smaller imagebind.batch_size, or free the GPU (other notebooks' kernels)"))
    problems += _cpu_memory("embed", m, IMAGEBIND_LOAD_CPU_GB, "ImageBind-huge")
    path = huge_checkpoint_path(cfg)
    problems += _download("embed", path.is_file(), HUGE_URL, path, IMAGEBIND_HUGE_FILE_GB, m, probe)
    return problems


# The latent pass before fine-tuning (a2i_utils.soundiff.latents): the VAE encodes soundiff.latent_batch images
# at a time, whatever the number of pairs, and the cache keeps each image's posterior mean and std in float16.
ADVANCE_TRAIN_PAIRS = 4_570  # SounDiff-L's training pairs (FACTS: 80 epochs x ~4,570 pairs); SounDiff-S: ~260
# VAE encoder activations per 768 px image in float32: peak RSS 2.645 GiB, 1.200 GiB before the pass, batch 1
# (measured on the CPU, bench/results/bench_latents.txt); taken as the GPU's too, halved in 16-bit (estimate)
LATENT_PASS_GIB_PER_IMAGE = 1.45


def latent_cache_gb(cfg: Config, pairs: int = ADVANCE_TRAIN_PAIRS) -> float:
    """GB of cached latents: per pair and view, mean and std of 4 x (size/8)^2 in float16 (768 px: 147 KB)."""
    side = cfg.soundiff.image_size // 8
    return pairs * cfg.soundiff.views * 2 * 4 * side * side * 2 / GB


def latent_pass_gpu_gib(cfg: Config) -> float:
    """Estimated peak GPU GiB of the latent pass: the pipeline's weights + the VAE encoding ``latent_batch`` images."""
    sc = cfg.soundiff
    weights = _weights_gib(sum(UNCLIP_PARAMS.values()), sc.dtype)
    per_image = LATENT_PASS_GIB_PER_IMAGE * (sc.image_size / 768) ** 2 * (1.0 if sc.dtype == "float32" else 0.5)
    return weights + per_image * sc.latent_batch


def _latent_pass(cfg: Config, m: Machine) -> list[Problem]:
    """Problems of the latent pass: its GPU memory, and the cache's disk for the latents of ADVANCE's pairs."""
    problems = []
    need = latent_pass_gpu_gib(cfg)
    if m.cuda and need + CUDA_CONTEXT_GIB > m.gpu_free_gib:
        problems.append(Problem("finetune", f"encoding the training images ({cfg.soundiff.latent_batch} at a time) "
                                            f"needs about {need:.1f} GiB of GPU memory (estimate), "
                                            f"{m.gpu_free_gib:.1f} GiB is free",
                                "set soundiff.latent_batch=1, soundiff.dtype='float16', or free the GPU"))
    disk = latent_cache_gb(cfg)
    free = m.disk_free_gb.get(str(cfg.cache_dir), _disk_free_gb(cfg.cache_dir))
    if free < disk * 1.05:
        problems.append(Problem("finetune", f"{cfg.cache_dir} has {free:.2f} GB free, the latents of "
                                            f"{ADVANCE_TRAIN_PAIRS:,} pairs x {cfg.soundiff.views} view(s) need "
                                            f"{disk:.2f} GB",
                                "free disk space, or put the cache on a larger disk with A2I_CACHE=/big/disk/a2i"))
    return problems


def check_finetune(cfg: Config, m: Machine, probe=probe_url) -> list[Problem]:
    """The U-Net fine-tune: a GPU, bf16, the option's measured peak against GPU memory, the latent pass (its GPU
    memory, the latents' disk), the weights."""
    if cfg.soundiff.model != "sd21-unclip":
        return []
    problems = _needs_gpu("finetune", m, "the full-size U-Net takes ~22 s for one forward pass at 768 px on a CPU")
    problems += _bf16("finetune", m, cfg.soundiff.dtype, "soundiff.dtype")
    if m.cuda:
        problems += _finetune_memory(cfg, m)
    problems += _latent_pass(cfg, m)
    problems += _cpu_memory("finetune", m, MEMORY_NOTES["unclip_load_cpu_gb"], "The SD 2.1 UnCLIP pipeline")
    problems += _check_unclip_weights("finetune", cfg, m, probe)
    return problems


def _finetune_memory(cfg: Config, m: Machine) -> list[Problem]:
    """A problem naming the options that fit when the chosen one does not."""
    option, batch = finetune_option(cfg), cfg.soundiff.batch_size
    need, exact = finetune_peak_gib(option, batch)
    budget = m.gpu_free_gib - CUDA_CONTEXT_GIB
    if need <= budget:
        return []
    fits = []
    for other in FINETUNE_MEASURED:
        for b in [batch] + ([1] if batch != 1 else []):
            peak, _ = finetune_peak_gib(other, b)
            if peak <= budget:
                fits.append(f"{other} at batch {b} ({peak:.1f} GiB: {OPTION_SETTINGS[other]}"
                            + (f", soundiff.batch_size={b}" if b != batch else "") + ")")
                break
    kind = "measured on an H200, FACTS §6" if exact else "estimated from the measured options"
    fix = ("options that fit: " + "; ".join(fits)) if fits else "no fine-tuning option fits this GPU: use a larger one"
    what = (f"fine-tuning option {option} at batch {batch} needs about {need:.1f} GiB of GPU memory at 768 px "
            f"({kind}), {m.gpu_free_gib:.1f} GiB is free")
    return [Problem("finetune", what, fix)]


def check_sample(cfg: Config, m: Machine, probe=probe_url) -> list[Problem]:
    """Sampling with the UnCLIP pipeline: a GPU, bf16, an estimate of its memory, the weights."""
    if cfg.soundiff.model != "sd21-unclip":
        return []
    problems = _needs_gpu("sample", m, "one 768 px image takes minutes of U-Net passes on a CPU")
    problems += _bf16("sample", m, cfg.soundiff.dtype, "soundiff.dtype")
    need = sample_gpu_gib(cfg, batch=1)
    if m.cuda and need + CUDA_CONTEXT_GIB > m.gpu_free_gib:
        problems.append(Problem("sample", f"the UnCLIP pipeline needs about {need:.1f} GiB of GPU memory for one "
                                          f"image (estimate), {m.gpu_free_gib:.1f} GiB is free",
                                "set soundiff.dtype='float16', free the GPU (free ImageBind first), or a larger GPU"))
    problems += _cpu_memory("sample", m, MEMORY_NOTES["unclip_load_cpu_gb"], "The SD 2.1 UnCLIP pipeline")
    problems += _check_unclip_weights("sample", cfg, m, probe)
    return problems


def _check_unclip_weights(stage: str, cfg: Config, m: Machine, probe) -> list[Problem]:
    """The configured UnCLIP source (``soundiff.pretrained_id``): complete in the cache or a folder, or reachable."""
    from a2i_utils.soundiff import weights  # (a part: imported only when checked; it imports no torch)

    try:
        src = weights.source_of(cfg)
        source, rows = weights.cache_report(cfg)
    except (ValueError, weights.WeightsError) as err:
        return [Problem(stage, str(err), "fix soundiff.pretrained_id / soundiff.variant")]
    bad = [text for state, text in rows if state in ("bad", "missing")]
    if src.local is not None:
        return [Problem(stage, f"{source}: {'; '.join(bad)}", "point soundiff.pretrained_id at a complete copy "
                                                              "(diffusers layout, safetensors)")] if bad else []
    if not bad:
        return []
    size_gb = UNCLIP_DOWNLOAD_GB / (2 if src.variant == "fp16" else 1)
    folder = weights.repo_dir(cfg, src)
    local = (f"; or set soundiff.pretrained_id to a local copy (diffusers layout); known mirrors: "
             f"{', '.join(weights.KNOWN_MIRRORS)}")
    if weights.offline():
        return [Problem(stage, f"{src.repo} (revision {src.revision}) is not in {folder} and HF_HUB_OFFLINE is set",
                        f"unset HF_HUB_OFFLINE to download it (~{size_gb:.1f} GB)" + local)]
    url = f"{weights.endpoint()}/api/models/{src.repo}/revision/{src.revision}"
    return _download(stage, False, url, folder, size_gb, m, probe, also=local)


CHECKS = {"data": check_data, "embed": check_embed, "finetune": check_finetune, "sample": check_sample}


def preflight(cfg: Config, stages: Sequence[str] = STAGES, machine: Machine | None = None,
              probe: Callable[[str], str | None] | None = None) -> list[Problem]:
    """Every problem that would stop ``stages`` of ``cfg`` on this machine (empty: good to go).

    ``probe(url)`` says why an address cannot be reached (None: it can); default :func:`probe_url`.
    """
    probe = probe or sys.modules[__name__].probe_url
    unknown = [s for s in stages if s not in CHECKS]
    if unknown:
        raise ValueError(f"unknown preflight stage(s) {unknown}; use {list(CHECKS)}")
    m = machine or detect(cfg)
    return _merge([p for s in stages for p in CHECKS[s](cfg, m, probe=probe)])


def _merge(problems: list[Problem]) -> list[Problem]:
    """One entry per distinct problem, naming every stage it stops (the weights that fine-tuning and sampling share)."""
    merged: dict[tuple[str, str], list[str]] = {}
    for p in problems:
        merged.setdefault((p.what, p.fix), []).append(p.stage)
    return [Problem(", ".join(stages), what, fix) for (what, fix), stages in merged.items()]


def require(cfg: Config, *stages: str, machine: Machine | None = None,
            probe: Callable[[str], str | None] | None = None) -> Machine:
    """Raise :class:`PreflightError` listing every problem of ``stages``; return the machine when all is well."""
    m = machine or detect(cfg)
    problems = preflight(cfg, stages or STAGES, machine=m, probe=probe)
    if problems:
        raise PreflightError(problems, m)
    return m


# ----------------------------------------------------------------------------------------------------------
# `a2i preflight`
# ----------------------------------------------------------------------------------------------------------
def register(subparsers) -> None:
    """Add the ``preflight`` verb."""
    p = subparsers.add_parser("preflight", help="check that full mode can run here (GPU, memory, weights)")
    p.add_argument("stages", nargs="*", metavar="STAGE", help=f"stages to check (default: all): {', '.join(STAGES)}")
    p.add_argument("--mode", default=None, help="preset (default: A2I_MODE or demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the machine and either 'ready' or every problem; exit 1 on problems."""
    cfg = get_config(args.mode)
    m = detect(cfg)
    try:
        require(cfg, *(args.stages or STAGES), machine=m)
    except ValueError as err:  # an unknown stage
        print(f"a2i preflight: {err}", file=sys.stderr)
        return 2
    except PreflightError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{cfg.mode}: ready for {', '.join(args.stages or STAGES)} ({m.describe()})")
    return 0
