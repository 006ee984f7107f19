"""``a2i export``: a fine-tuned SounDiff as a folder that plain diffusers loads, with a model card; optionally pushed.

A full fine-tune becomes a ``StableUnCLIPImg2ImgPipeline`` folder (``model_index.json`` + one folder per component,
safetensors only) or, with ``what="unet"``, the U-Net alone. A LoRA fine-tune becomes
``pytorch_lora_weights.safetensors`` (what ``pipe.load_lora_weights(DIR)`` reads), plus
``unet_trained_modules.safetensors`` when the run also trained whole modules of the U-Net (say its
``class_embedding``): diffusers' LoRA loader keeps only LoRA layers, so those go in a second file that
``pipe.unet.load_state_dict(..., strict=False)`` reads. A base pipeline that is on no hub (the demo's miniature)
is written beside the LoRA in ``base/``.

No image encoder is written (SounDiff never runs one): ``model_index.json`` names it ``[null, null]``. diffusers
0.42.1 then needs ``image_encoder=None`` passed to ``from_pretrained``, and some module in its place before a call
(``_encode_image`` reads ``next(self.image_encoder.parameters()).dtype`` even when ``image_embeds`` are given,
FACTS §1). A plain ``torch.nn.Linear`` fails too (the pipeline's ``_execution_device`` asks each component for
``.device``, which only diffusers/transformers models have); the pipeline's own ``image_normalizer`` (a diffusers
model with a parameter) answers both and is never run as an encoder. The card shows the two lines.

Everything the card says comes from the run: the run folder is found (or checked) by recomputing its key from the
config, the variant and the data (:func:`a2i_utils.soundiff.training.run_key`), so the settings printed are the ones
that produced it; the base weights and the data are hashed by content; the sample grid is drawn by a2i's
:func:`~a2i_utils.soundiff.generate.generate` from held-out recordings, whose embeddings are saved beside it so the
grid can be redrawn with diffusers alone. Results come from an ``a2i evaluate`` output folder when given one.
A second export of the same run writes identical files (no times, no local paths).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from a2i_utils.config import Config
from a2i_utils.io import atomic_write_text
from a2i_utils.soundiff.training import TRAINED_MODULES_FILE

EXPORT_VERSION = 1
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
MODULES_FILE = TRAINED_MODULES_FILE  # the run's file name, kept in the export
SAMPLES_FILE = "samples.png"
SAMPLES_EMBEDS = "samples_embeddings.safetensors"
INFO_FILE = "a2i_export.json"  # marks an a2i export folder: a second export may replace it, nothing else
RUN_NAME = re.compile(r"^soundiff-(?P<variant>[A-Za-z0-9]+)-v\d+-[0-9a-f]+$")
BASE_COMPONENTS = ("unet", "vae", "text_encoder", "image_normalizer")  # the weights a base is hashed by
# The second loading line: a module in the image encoder's place, on the pipeline's device and dtype (never run).
STAND_IN = "pipe.image_encoder = pipe.image_normalizer  # stand-in: only its dtype is read (image_embeds are passed)"
SAMPLE_RECORDINGS = 8
SAMPLE_SEEDS = 3
GRID_CELL = 96  # pixels of one grid cell (demo images are upscaled, nearest neighbour)


class ExportError(ValueError):
    """A run that cannot be exported (not found, not finished, other settings) or an output folder we may not fill."""


# ----------------------------------------------------------------------------------------------------------
# Finding the run and what it was trained with
# ----------------------------------------------------------------------------------------------------------
@dataclass
class RunInfo:
    """Everything the model card states about one fine-tune, from its files and the config that reproduces its key."""

    key: str
    variant: dict
    lora: bool
    base: str  # a hub id, a local folder, or the demo miniature's key
    base_on_hub: bool
    base_weights_sha256: str
    pipeline_class: str
    data_source: str
    data_sha256: str
    n_train_pairs: int
    n_train_pairs_used: int
    n_heldout_pairs: int
    val_fraction: float
    test_fraction: float
    seed: int
    training: dict
    history: dict
    imagebind: str
    audio_scale: str
    sampling: dict
    mode: str
    extra: dict = field(default_factory=dict)


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, bfloat16 included), as stored."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_sha256(pipe, components=BASE_COMPONENTS) -> str:
    """sha256 over the named tensors of the pipeline's weighted components (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for comp in components:
        for name, t in sorted(getattr(pipe, comp).state_dict().items()):
            h.update(f"{comp}.{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
            h.update(tensor_bytes(t))
    return h.hexdigest()


def data_sha256(pairs) -> str:
    """sha256 of (id, label, split, sha256 of the image, sha256 of the recording) of every pair: the bytes."""
    from a2i_utils.io import sha256_file

    rows = [(p.id, p.label, p.split, sha256_file(p.image_path), sha256_file(p.audio_path))
            for p in sorted(pairs, key=lambda p: (p.label, p.id))]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def variant_name(run_or_variant: str) -> tuple[str, Path | None]:
    """("L" or "S", None) for a variant name, (its variant, the folder) for a run folder ``soundiff-<V>-v1-<hash>``."""
    low = run_or_variant.lower()
    if low in ("l", "s", "soundiff-l", "soundiff-s"):
        return low[-1].upper(), None
    folder = Path(run_or_variant)
    if not folder.is_dir():
        raise ExportError(f"{folder}: not a run folder (checkpoints/soundiff/soundiff-L-...) and not L or S")
    m = RUN_NAME.match(folder.resolve().name)
    if not m:
        raise ExportError(f"{folder}: not a SounDiff run folder (its name should be soundiff-<L|S>-v<N>-<hash>)")
    if not (folder / "history.json").is_file():
        raise ExportError(f"{folder}: the run is not finished (no history.json); finish it with a2i train soundiff")
    return m["variant"], folder


@dataclass
class Found:
    """A run ready to export: its info, a2i's own loaded pipeline of it, the base, the dataset and the embedder."""

    info: RunInfo
    folder: Path
    tuned: object
    base: object
    dataset: object
    embedder: object


def find_run(cfg: Config, run_or_variant: str, prompt: str | None = None, subset: str | None = None,
             steps: int | None = None, progress: bool = False, base=None) -> Found:
    """The finished run of a variant (with the config's settings) or the run folder given, checked against its key.

    ``base``: the config's pretrained pipeline when the caller has it loaded (a notebook): not loaded a second time.

    A folder is exported only when the config, variant options and data given reproduce its key, so that what the
    card says about it is what trained it; otherwise the error says to pass the training command's options.
    """
    from a2i_utils.data import prepare_dataset
    from a2i_utils.imagebind.embedder import load_imagebind
    from a2i_utils.soundiff.pipeline import load_pipeline
    from a2i_utils.soundiff.training import load_finetuned, run_dir, run_key, variant_of

    name, given = variant_name(run_or_variant)
    variant = variant_of(cfg, name, prompt, subset, steps)
    dataset = prepare_dataset(cfg, progress=progress)
    embedder = load_imagebind(cfg, progress=progress)
    base = load_pipeline(cfg, progress=progress) if base is None else base
    pairs = [p for p in dataset.train if variant.subset is None or p.label == variant.subset]
    key = run_key(cfg, getattr(base, "key", cfg.soundiff.pretrained_id), variant, embedder.identity,
                  [p.id for p in pairs])
    if given is not None and given.resolve().name != key:
        raise ExportError(f"{given}: this run was trained with other settings than the ones given (these give {key}); "
                          "pass the --mode, --set, --prompt, --subset and --steps of its training command")
    folder = given if given is not None else run_dir(cfg, key)
    if not (folder / "history.json").is_file():
        raise ExportError(f"{folder}: SounDiff-{variant.name} with these settings is not trained (no history.json); "
                          f"run a2i train soundiff --variant {variant.name} first")
    history = read_json(folder / "history.json")
    tuned = load_finetuned(base, folder)
    info = run_info(cfg, key, variant, base, dataset, pairs, embedder, history)
    return Found(info, Path(folder), tuned, base, dataset, embedder)


def read_json(path: Path) -> dict:
    """A JSON file, or an :class:`ExportError` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: unreadable ({err})") from err


def run_info(cfg: Config, key: str, variant, base, dataset, pairs, embedder, history: dict) -> RunInfo:
    """The card's facts: settings from the config (checked by the run key), hashes computed from the bytes."""
    from a2i_utils.soundiff.training import TRAINING_FIELDS

    sc = cfg.soundiff
    base_name = getattr(base, "key", sc.pretrained_id) if sc.model == "mini" else sc.pretrained_id
    on_hub = sc.model == "sd21-unclip" and not Path(sc.pretrained_id).exists()
    return RunInfo(
        key=key, variant=asdict(variant), lora=bool(sc.lora), base=base_name, base_on_hub=on_hub,
        base_weights_sha256=weights_sha256(base), pipeline_class=type(base).__name__,
        data_source=cfg.data.source if not cfg.data.root else "own folder", data_sha256=data_sha256(dataset.pairs),
        n_train_pairs=len(dataset.train), n_train_pairs_used=len(pairs), n_heldout_pairs=len(dataset.test),
        val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction, seed=cfg.seed,
        training={k: getattr(sc, k) for k in TRAINING_FIELDS},
        history={"steps": len(history.get("loss", [])), "last_loss": _last_loss(history),
                 "seconds": history.get("seconds"), "samples_per_s": history.get("samples_per_s")},
        imagebind=embedder.identity, audio_scale=cfg.imagebind.audio_scale,
        sampling={"steps": sc.sample_steps, "guidance_scale": sc.guidance_scale, "noise_level": sc.noise_level},
        mode=cfg.mode,
    )


def _last_loss(history: dict) -> float | None:
    """Mean of the last 20 losses (rounded), or None."""
    loss = history.get("loss") or []
    return round(float(np.mean(loss[-20:])), 4) if loss else None


# ----------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------
def without_image_encoder(pipe):
    """A pipeline sharing ``pipe``'s components, with ``image_encoder=None`` (saved as ``[null, null]``)."""
    return type(pipe)(**(dict(pipe.components) | {"image_encoder": None}))


def save_pipeline(pipe, folder: Path) -> None:
    """Every component but the image encoder, safetensors only; no local path in any config."""
    without_image_encoder(pipe).save_pretrained(folder, safe_serialization=True)
    scrub_paths(folder)


def scrub_paths(folder: Path) -> None:
    """Drop ``_name_or_path`` (where a component was loaded from on this machine) from the saved JSON configs."""
    for path in sorted(Path(folder).rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and ("_name_or_path" in data or "name_or_path" in data):
            data.pop("_name_or_path", None)
            data.pop("name_or_path", None)
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def canonical_safetensors(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys, so equal tensors and metadata give equal bytes.

    The writer keeps ``__metadata__`` in a hash map: with two or more entries (diffusers' LoRA files have the
    format and the adapter's config) their order, hence the file's bytes, changes from one run to the next.
    """
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes
    Path(path).write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n :])


def lora_parts(tuned_unet, base_unet) -> tuple[dict, dict, dict]:
    """(LoRA layers in diffusers' format, fully trained U-Net tensors by name, the adapter's metadata).

    Whatever layout the run saved: the LoRA layers are read from the loaded adapter (peft), and every other U-Net
    tensor that differs from the base's is a fully trained module (e.g. ``class_embedding`` trained with the LoRA).
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    adapters = list(getattr(tuned_unet, "peft_config", {}) or {})
    if len(adapters) != 1:
        raise ExportError(f"expected one LoRA adapter on the fine-tuned U-Net, found {adapters}")
    name = adapters[0]
    state = get_peft_model_state_dict(tuned_unet, adapter_name=name)
    lora = convert_state_dict_to_diffusers({k: v for k, v in state.items() if "lora_" in k})
    lora = {k: v.detach().cpu().contiguous() for k, v in sorted(lora.items())}
    base = base_unet.state_dict()
    full = {}
    for k, v in tuned_unet.state_dict().items():
        if "lora_" in k or ".original_module." in k:
            continue
        plain = k.replace(".base_layer", "").replace(f".modules_to_save.{name}", "")
        if plain not in base:
            raise ExportError(f"fine-tuned U-Net tensor {k!r} has no counterpart {plain!r} in the base U-Net")
        if not torch.equal(v.detach().cpu(), base[plain].detach().cpu()):
            full[plain] = v.detach().cpu().contiguous()
    cfg = tuned_unet.peft_config[name]
    meta = {"r": cfg.r, "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.target_modules)}
    return lora, dict(sorted(full.items())), meta


def save_lora(tuned, base, folder: Path) -> list[str]:
    """``pytorch_lora_weights.safetensors`` and, if the run trained whole modules, ``unet_trained_modules``; names."""
    from safetensors.torch import save_file

    lora, full, meta = lora_parts(tuned.unet, base.unet)
    type(base).save_lora_weights(folder, unet_lora_layers=lora, safe_serialization=True,
                                 unet_lora_adapter_metadata=meta)
    written = [LORA_FILE]
    if full:
        save_file(full, str(folder / MODULES_FILE), metadata={"format": "pt"})
        written.append(MODULES_FILE)
    return written


# ----------------------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------------------
def sample_pairs(dataset, n: int = SAMPLE_RECORDINGS) -> list:
    """Up to ``n`` held-out recordings, one per class first (classes in course order), then more in order."""
    from a2i_utils.data import CLASSES
    from a2i_utils.imagebind.retrieval import one_pair_per_recording

    val = sorted(one_pair_per_recording(dataset.test), key=lambda p: (CLASSES.index(p.label), p.id))
    first = {}
    for p in val:
        first.setdefault(p.label, p)
    chosen = list(first.values())[:n]
    return chosen + [p for p in val if p not in chosen][: n - len(chosen)]


def grid_png(rows: list[np.ndarray], cell: int = GRID_CELL):
    """A PIL image: one row per recording, each a list of uint8 (H, W, 3) images, upscaled to ``cell`` px."""
    from PIL import Image

    ncol = max(len(r) for r in rows)
    pad = 4
    out = Image.new("RGB", (ncol * (cell + pad) + pad, len(rows) * (cell + pad) + pad), (255, 255, 255))
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            tile = Image.fromarray(img).resize((cell, cell), Image.NEAREST)
            out.paste(tile, (pad + j * (cell + pad), pad + i * (cell + pad)))
    return out


def make_samples(cfg: Config, found: Found, folder: Path) -> dict:
    """The grid (real image, then seeds) for held-out recordings, drawn by a2i; its embeddings saved beside it."""
    from safetensors.torch import save_file

    from a2i_utils.data import load_image
    from a2i_utils.imagebind.cache import embed_files, scale_audio
    from a2i_utils.soundiff.generate import generate

    pairs = sample_pairs(found.dataset)
    audio = embed_files(found.embedder, [p.audio_path for p in pairs], "audio", cfg, progress=False)  # (N, D)
    embeds = scale_audio(audio, cfg.imagebind.audio_scale).float().cpu().contiguous()
    sc, prompt = cfg.soundiff, found.info.variant["prompt"]
    images = generate(found.tuned, embeds, prompt, n=SAMPLE_SEEDS, seed=cfg.seed, steps=sc.sample_steps,
                      guidance=sc.guidance_scale, noise_level=sc.noise_level)  # (N, seeds, H, W, 3)
    size = images.shape[2]
    rows = [[load_image(p.image_path, size)] + list(imgs) for p, imgs in zip(pairs, images)]
    grid_png(rows).save(folder / SAMPLES_FILE, format="PNG")
    save_file({"image_embeds": embeds}, str(folder / SAMPLES_EMBEDS), metadata={"format": "pt"})
    return {"recordings": [{"id": p.id, "class": p.label} for p in pairs], "seeds": [cfg.seed + j for j in
            range(SAMPLE_SEEDS)], "prompt": prompt, "size": int(size)}


# ----------------------------------------------------------------------------------------------------------
# Results from a2i evaluate
# ----------------------------------------------------------------------------------------------------------
def evaluation_rows(results_dir: Path | None, label: str) -> list[dict]:
    """The rows of ``a2i evaluate``'s metrics.csv for this system (with and without prompt) and the baseline."""
    if results_dir is None:
        return []
    path = Path(results_dir) / "metrics.csv"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise ExportError(f"{path}: cannot read a2i evaluate's table ({err})") from err
    if not rows or "system" not in rows[0]:
        raise ExportError(f"{path}: not a metrics.csv written by a2i evaluate (no 'system' column)")
    keep = [r for r in rows if r["system"] in (label, f"{label} + prompt") or r["system"].startswith("baseline")]
    if not any(r["system"].startswith(label) for r in keep):
        raise ExportError(f"{path}: no row for {label!r} (systems: {[r['system'] for r in rows]})")
    return keep


def results_markdown(rows: list[dict]) -> str:
    """Mean [95% interval] per metric, for the rows kept from metrics.csv."""
    from a2i_utils.evaluation.report import COLUMNS

    metrics = [m for m in COLUMNS if m in rows[0]]
    lines = ["| system | n | " + " | ".join(metrics) + " |", "|" + " --- |" * (len(metrics) + 2)]
    for r in rows:
        cells = []
        for m in metrics:
            v, lo, hi = (float(r.get(k) or "nan") for k in (m, f"{m}_lo", f"{m}_hi"))
            d = 4 if m == "KD" else 3
            cells.append("—" if np.isnan(v) else f"{v:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]")
        lines.append(f"| {r['system']} | {r['n_recordings']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
# The card
# ----------------------------------------------------------------------------------------------------------
def base_expression(info: RunInfo, what: str) -> str:
    """Python for where the base pipeline is: its hub id or folder, ``DIR/base`` (exported beside), or a note."""
    if info.base_on_hub or Path(info.base).is_absolute():
        return repr(info.base)
    if what == "lora":
        return 'f"{DIR}/base"'
    return '"path/to/the/base/pipeline"'


def load_lines(info: RunInfo, what: str) -> list[str]:
    """The Python lines that load the export with diffusers alone (``DIR`` is the exported folder)."""
    base_ref = base_expression(info, what)
    if what == "lora":
        lines = [f'pipe = StableUnCLIPImg2ImgPipeline.from_pretrained({base_ref}, image_encoder=None)',
                 STAND_IN,
                 "pipe.load_lora_weights(DIR)"]
        if info.extra.get("trained_modules"):
            lines.append(f'pipe.unet.load_state_dict(load_file(f"{{DIR}}/{MODULES_FILE}"), strict=False)  '
                         "# whole modules trained with the LoRA")
        return lines
    if what == "unet":
        return ['unet = UNet2DConditionModel.from_pretrained(DIR, use_safetensors=True)',
                f'pipe = StableUnCLIPImg2ImgPipeline.from_pretrained({base_ref}, unet=unet, image_encoder=None)',
                STAND_IN]
    return ["pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(DIR, image_encoder=None)  # no image encoder here",
            STAND_IN]


def card_text(info: RunInfo, what: str, samples: dict, results: list[dict],
              results_dir_name: str | None, files: list[str]) -> str:
    """README.md: YAML metadata for the hub, then provenance, results, samples and usage, all from ``info``."""
    v, t, s = info.variant, info.training, info.sampling
    label = f"SounDiff-{v['name']}"
    beside = " (the demo's miniature UnCLIP, on no hub: in `base/`)" if not info.base_on_hub and what == "lora" else ""
    kind = "LoRA" if info.lora else "full fine-tune"
    meta = ["---", "license: openrail++", "library_name: diffusers", "pipeline_tag: image-to-image"]
    if info.base_on_hub:
        meta.append(f"base_model: {info.base}")
    meta += ["tags:", "- stable-diffusion", "- stable-unclip", "- audio-to-image", "- imagebind", "- soundiff",
             f"- {'lora' if info.lora else 'full-fine-tune'}", "- a2i", "---", ""]
    out = meta + [
        f"# {label} ({kind}): {info.key}", "",
        f"The U-Net of `{info.pipeline_class}` fine-tuned on ImageBind **audio** embeddings (SounDiff, from "
        "*Synthesizing Visuals from Sound*), exported by `a2i export`. VAE, text encoder and ImageBind were frozen.",
        "This card is generated from the run's files; nothing in it was typed by hand.", "",
        "## Training", "",
        "| field | value |", "| --- | --- |",
        f"| base pipeline | `{info.base}`{beside} |",
        f"| base weights sha256 (U-Net, VAE, text encoder, normaliser tensors) | `{info.base_weights_sha256}` |",
        f"| data | {info.data_source}: {info.n_train_pairs} training pairs, {info.n_heldout_pairs} held-out test pairs "
        f"(split by place id, seed {info.seed}: validation {info.val_fraction}, test {info.test_fraction} of each "
        f"class's places) |",
        "| data fingerprint (sha256 of every pair's id, class, split, image and recording bytes) | "
        f"`{info.data_sha256}` |",
        f"| variant | {v['name']}: {'all classes' if v['subset'] is None else v['subset']}, "
        f"{info.n_train_pairs_used} training pairs |",
        f"| prompt | {json.dumps(v['prompt'])} |",
        f"| steps | {v['steps']} (batch {t['batch_size']} x accumulation {t['grad_accum']}) |",
        f"| optimiser | {t['optimizer']}, lr {t['lr']:g} -> {t['lr_end']:g} (linear), "
        f"betas ({t['beta1']}, {t['beta2']}), weight decay {t['weight_decay']} |",
        f"| LoRA or full | {'LoRA rank ' + str(t['lora_rank']) if info.lora else 'full U-Net'} |",
        f"| seed | {info.seed} |",
        f"| condition dropout, embedding noise level, views | {t['cond_dropout']}, {t['noise_level']}, {t['views']} |",
        f"| ImageBind, audio embedding scale | `{info.imagebind}`, {info.audio_scale} |",
        f"| last loss (mean of last 20 steps), training time | {info.history['last_loss']}, "
        f"{info.history['seconds']} s |", "",
        "## Results on the held-out recordings", "",
    ]
    if results:
        out += [f"From `a2i evaluate` ({results_dir_name}/metrics.csv): mean [95% bootstrap interval over "
                "recordings]. AIC: share of images a scene classifier assigns to the recording's class; AIS, IIS: "
                "ImageBind audio-image and image-image similarity scores; FD/KD: Fréchet and kernel distances to "
                "the held-out images.", "", results_markdown(results)]
    else:
        out += ["**No evaluation has been run for this export.** Measure it with "
                f"`a2i evaluate --models {label.lower()} --out RESULTS`, then export again with "
                "`--results RESULTS`.", ""]
    rec = ", ".join(f"{r['id']} ({r['class']})" for r in samples["recordings"])
    out += [
        "## Samples", "",
        f"![samples]({SAMPLES_FILE})", "",
        f"Rows: held-out recordings {rec}. Columns: the real image "
        f"of the place, then seeds {', '.join(map(str, samples['seeds']))}; prompt {json.dumps(samples['prompt'])}, "
        f"{s['steps']} steps, guidance {s['guidance_scale']}, noise level {s['noise_level']}, {samples['size']} px. "
        f"The recordings' embeddings are in `{SAMPLES_EMBEDS}`: the grid can be redrawn with diffusers alone.", "",
        "## Use", "",
        "Load it with diffusers (no a2i needed). The folder has no image encoder: SounDiff passes `image_embeds`, "
        "never images, but the pipeline reads the encoder's dtype, so any module stands in for it.", "",
        "```python", "import torch", "from diffusers import StableUnCLIPImg2ImgPipeline, UNet2DConditionModel",
        "from safetensors.torch import load_file", "",
        'DIR = "path/to/this/folder"  # or snapshot_download("<repo id>")',
        *load_lines(info, what), "```", "",
        "From a WAV file to an image (ImageBind-huge, `pip install imagebind-unofficial`):", "",
        "```python", "from imagebind import data", "from imagebind.models import imagebind_model", "",
        "imagebind = imagebind_model.imagebind_huge(pretrained=True).eval()",
        'audio = data.load_and_transform_audio_data(["recording.wav"], "cpu")  # (1, 3, 1, 128, 204)',
        'emb = imagebind({"audio": audio})["audio"]  # (1, 1024), ImageBind\'s scale (norm 20)',
    ]
    if info.audio_scale == "unit":
        out.append("emb = torch.nn.functional.normalize(emb, dim=-1)  # trained at unit norm")
    out += [f"image = pipe(image_embeds=emb, prompt={json.dumps(v['prompt'])}, num_inference_steps={s['steps']}, "
            f"guidance_scale={s['guidance_scale']}, noise_level={s['noise_level']},",
            "             generator=torch.Generator().manual_seed(0)).images[0]", 'image.save("image.png")', "```", ""]
    if not info.base_on_hub:
        out += [f"This export comes from a2i's demo mode: its embeddings come from the miniature ImageBind "
                f"`{info.imagebind}` (a2i's own), not ImageBind-huge, so the lines above show the full-mode path; "
                f"`{SAMPLES_EMBEDS}` holds demo embeddings to try.", ""]
    out += ["## Files", "", *[f"- `{f}`" for f in files], "",
            "Weights are safetensors only. License: CreativeML Open RAIL++-M, inherited from Stable Diffusion 2.1.", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------
# The export
# ----------------------------------------------------------------------------------------------------------
def check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that has files and is not an earlier a2i export."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / INFO_FILE).is_file())):
        raise ExportError(f"{out}: exists and is not an earlier a2i export; choose an empty or new folder")


def export_run(cfg: Config, run_or_variant: str, out: Path, what: str = "auto", results: Path | None = None,
               prompt: str | None = None, subset: str | None = None, steps: int | None = None,
               progress: bool = False, base=None) -> Path:
    """Write the export of a finished run to ``out`` (atomically: a temporary folder renamed); return ``out``.

    ``what``: "auto" (a full run as a pipeline, a LoRA run as a LoRA), "pipeline", "unet" or "lora". ``base``: the
    config's pretrained pipeline, if loaded already (its ``key`` must be the config's: the run's key checks it).
    """
    from a2i_utils.io import atomic_dir

    out = Path(out)
    check_out_dir(out)
    found = find_run(cfg, run_or_variant, prompt, subset, steps, progress, base=base)
    info = found.info
    what = ("lora" if info.lora else "pipeline") if what == "auto" else what
    if (what == "lora") != info.lora:
        raise ExportError(f"{found.folder}: a {'LoRA' if info.lora else 'full'} run cannot be exported as {what!r}")
    label = found.folder.name if variant_name(run_or_variant)[1] is not None else f"SounDiff-{info.variant['name']}"
    rows = evaluation_rows(results, label)

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        files = write_weights(found, what, tmp)
        samples = make_samples(cfg, found, tmp)
        files += [SAMPLES_FILE, SAMPLES_EMBEDS, INFO_FILE, "README.md"]
        text = card_text(info, what, samples, rows, Path(results).name if results else None, sorted(files))
        atomic_write_text(tmp / "README.md", text)
        payload = {"a2i_export": EXPORT_VERSION, "what": what, "run": asdict(info), "samples": samples,
                   "results": rows}
        atomic_write_text(tmp / INFO_FILE, json.dumps(payload, indent=2, sort_keys=True) + "\n")
        for path in sorted(tmp.rglob("*.safetensors")):
            canonical_safetensors(path)

    return atomic_dir(out, write)


def write_weights(found: Found, what: str, folder: Path) -> list[str]:
    """The weights of the export in ``folder``; the top-level names written."""
    info = found.info
    if what == "pipeline":
        save_pipeline(found.tuned, folder)
        return sorted(p.name for p in folder.iterdir())
    if what == "unet":
        found.tuned.unet.save_pretrained(folder, safe_serialization=True)
        scrub_paths(folder)
        return sorted(p.name for p in folder.iterdir())
    written = save_lora(found.tuned, found.base, folder)
    info.extra["trained_modules"] = MODULES_FILE in written
    if not info.base_on_hub:
        save_pipeline(found.base, folder / "base")
        written.append("base/")
    return written


def push_to_hub(folder: Path, repo: str, token: str | None = None, private: bool = False) -> str:
    """Upload an exported folder to the hub repository ``repo`` (created if missing) under the user's token."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        raise ExportError(f"{folder}: not an a2i export (no {INFO_FILE}); run a2i export first")
    api = HfApi(token=token)
    repo_id = api.create_repo(repo, repo_type="model", private=private, exist_ok=True).repo_id
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             commit_message="a2i export: SounDiff fine-tune with its model card")
    return str(getattr(info, "commit_url", info))


