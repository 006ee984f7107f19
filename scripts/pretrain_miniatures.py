"""Pretrain demo mode's two miniatures with our recipe and ship them in the package: ``make pretrained``.

    python scripts/pretrain_miniatures.py [--cache DIR] [--out a2i_utils/pretrained]

In full mode ImageBind and SD 2.1 UnCLIP come pretrained; in demo mode their miniatures do too. This script makes
them, on the TRAIN split of the demo world (``get_config("demo")``: the synthetic tree, its train/val/test split by
place), with the recipe in the code (``a2i_utils.imagebind.mini``, ``a2i_utils.soundiff.mini``) and the demo
preset's ``imagebind.mini_*`` and ``soundiff.mini_*`` settings:

1. the miniature ImageBind (vision+text, then audio): ``<out>/imagebind_mini.safetensors``;
2. the miniature UnCLIP (VAE, U-Net, normaliser statistics, the frozen tiny text encoder, tokenizer and
   schedulers): ``<out>/mini_unclip/`` in the diffusers layout, weights as safetensors.

Beside each, a card (``<name>.card.json``): the cache key (which the notebooks compute from their config and data
to decide whether the shipped miniature is theirs), the recipe's config, the seed, the data's fingerprint, the
steps and loss curve of every stage (values, and ``<name>.loss.png``), the SHA-256 of every shipped file, and the
git commit of the code that made it. Loading checks those hashes. ``tests/test_shipped_miniatures.py`` proves the
weights come from the recipe: the card's config is the code's, and the first steps of each stage, run again, give
the card's first losses bit for bit.

Everything trains in ``--cache`` (default: ``A2I_CACHE`` or the user's cache) with the shipped miniatures ignored
(``A2I_NO_SHIPPED=1``), on one torch thread as the notebooks do. Commit the weights only when the recipe changed:
the repository's history must not grow by a copy each run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_state() -> dict:
    """The commit of the code and the files of the package or scripts that differ from it (empty: clean)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = [ln[3:] for ln in git("status", "--porcelain", "--", "a2i_utils", "scripts").splitlines()
                 if ln[3:] and not ln[3:].startswith("a2i_utils/pretrained")]
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def made_by(cfg, key: str, code: dict) -> dict:
    """The code state of the run that trained ``key`` in this cache (``checkpoints/made_by.json``): recorded when a
    run starts training it, read when a later run ships it from the cache; ``code`` when there is no record."""
    from a2i_utils.io import atomic_write_text

    path = Path(cfg.checkpoints_dir) / "made_by.json"
    records = json.loads(path.read_text()) if path.is_file() else {}
    if key not in records:
        records[key] = code
        atomic_write_text(path, json.dumps(records, indent=1))
    return records[key]


def fingerprint(rows) -> str:
    """SHA-256 of the JSON of the data rows a cache key hashes (ids, classes, splits and the files' SHA-256)."""
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def file_hashes(folder: Path, paths) -> dict[str, str]:
    """``{path relative to folder: SHA-256}`` of ``paths``, sorted."""
    from a2i_utils.io import sha256_file

    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(paths)}


def loss_plot(path: Path, curves: dict[str, list[float]], title: str) -> None:
    """A small PNG of each stage's loss per step (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from a2i_utils.io import atomic_write

    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.4), dpi=80)
    for ax, (stage, losses) in zip(axes, curves.items()):
        ax.plot(range(1, len(losses) + 1), losses, lw=0.8)
        ax.set(title=f"{stage} ({len(losses)} steps)", xlabel="step", ylabel="loss", yscale="log")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def already_shipped(out: Path, name: str, key: str) -> dict | None:
    """The card in ``out`` when it ships this very miniature (same key) with its files intact, else None: then
    nothing is rewritten (the repository gets no new copy of the same weights)."""
    from a2i_utils.checkpoints import hash_problems, read_card

    card = read_card(name, out)
    if card is not None and card["key"] == key and not hash_problems(card, out):
        print(f"{name} {key} is shipped already, unchanged: its files and card are left as they are")
        return card
    return None


def write_card(out: Path, name: str, card: dict) -> None:
    from a2i_utils.checkpoints import card_path
    from a2i_utils.io import atomic_write_text

    atomic_write_text(card_path(name, out), json.dumps(card, indent=1) + "\n")


def common(cfg, dataset, seconds: float, code: dict) -> dict:
    d = cfg.data
    return {
        "seed": cfg.seed,
        "data": {"tree": dataset.root.name, "pairs": len(dataset.pairs), "train_pairs": len(dataset.train),
                 "split": {"by": "base id (place), per class", "val_fraction": d.val_fraction,
                           "test_fraction": d.test_fraction}},
        "code": code,  # the commit (and changed files) of the run that trained it
        "made": {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(seconds, 1),
                 "torch": __import__("torch").__version__, "python": platform.python_version(),
                 "machine": platform.machine(), "torch_threads": 1},
    }


def ship_imagebind(cfg, dataset, embedder, out: Path, seconds: float, code: dict) -> dict:
    """Copy the trained miniature ImageBind into ``out`` and write its card and loss plot."""
    from a2i_utils.imagebind import mini
    from a2i_utils.io import atomic_write, sha256_file

    if (card := already_shipped(out, mini.SHIPPED_NAME, embedder.identity)) is not None:
        return card
    src = mini.mini_checkpoint_path(cfg, embedder.identity)
    dest = out / mini.SHIPPED_FILE
    atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
    info = embedder.info
    rows = [(p.id, p.label, p.split, sha256_file(p.image_path), sha256_file(p.audio_path))
            for p in sorted(dataset.pairs, key=lambda p: (p.label, p.id))]
    losses = {"vision": info["vision_loss"], "audio": info["audio_loss"]}
    loss_plot(out / f"{mini.SHIPPED_NAME}.loss.png", losses, f"miniature ImageBind {embedder.identity}")
    card = {
        "name": mini.SHIPPED_NAME,
        "what": "miniature ImageBind (imagebind.models.imagebind_model.ImageBindModel at small widths): stage 1 "
                "vision+text CLIP on scene prompts and captions, stage 2 audio InfoNCE against the frozen image "
                "embeddings; trained on the train split of the demo world",
        "key": embedder.identity, "model_version": mini.MODEL_VERSION, "config": mini.recipe_config(cfg),
        **common(cfg, dataset, seconds, code),
        "steps": {k: len(v) for k, v in losses.items()}, "losses": losses,
        "stage_seconds": {"vision": info.get("vision_seconds"), "audio": info.get("audio_seconds")},
        "loss_plot": f"{mini.SHIPPED_NAME}.loss.png",
        "files": file_hashes(out, [dest]),
    }
    card["data"]["fingerprint_sha256"] = fingerprint(rows)
    write_card(out, mini.SHIPPED_NAME, card)
    return card


def ship_unclip(cfg, dataset, pipe, imagebind_key: str, out: Path, seconds: float, code: dict) -> dict:
    """Copy the pretrained miniature UnCLIP's folder into ``out/mini_unclip`` and write its card and loss plot."""
    from a2i_utils.io import atomic_dir
    from a2i_utils.soundiff import mini

    if (card := already_shipped(out, mini.SHIPPED_NAME, pipe.key)) is not None:
        return card
    src = mini.mini_dir(cfg, pipe.key)
    dest = out / mini.SHIPPED_NAME
    atomic_dir(dest, lambda tmp: shutil.copytree(src, tmp))
    info = pipe.info
    losses = {"vae": info["vae_loss"], "unet": info["unet_loss"]}
    loss_plot(out / f"{mini.SHIPPED_NAME}.loss.png", losses, f"miniature UnCLIP {pipe.key}")
    card = {
        "name": mini.SHIPPED_NAME,
        "what": "miniature UnCLIP (diffusers StableUnCLIPImg2ImgPipeline parts): AutoencoderKL, normaliser "
                "statistics of the miniature ImageBind's vision embeddings, a UNet2DConditionModel (EMA) trained as "
                "an unCLIP decoder on those embeddings; frozen random tiny text encoder; train split of the demo world",
        "key": pipe.key, "model_version": mini.MODEL_VERSION, "imagebind": imagebind_key,
        "config": mini.recipe_config(cfg),
        **common(cfg, dataset, seconds, code),
        "steps": {k: len(v) for k, v in losses.items()}, "losses": losses,
        "stage_seconds": {"vae": info.get("vae_seconds"), "unet": info.get("unet_seconds")},
        "loss_plot": f"{mini.SHIPPED_NAME}.loss.png",
        "files": file_hashes(out, [p for p in dest.rglob("*") if p.is_file()]),
    }
    card["data"]["fingerprint_sha256"] = fingerprint(mini.data_fingerprint(dataset.pairs))
    write_card(out, mini.SHIPPED_NAME, card)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="cache folder to train in (default: A2I_CACHE or the user's)")
    parser.add_argument("--out", type=Path, default=ROOT / "a2i_utils" / "pretrained", help="where to ship them")
    parser.add_argument("--only", choices=("imagebind", "unclip"), help="make and ship only this one (the UnCLIP "
                        "needs the ImageBind: trained too, or loaded from the cache, but not shipped)")
    args = parser.parse_args(argv)
    from a2i_utils.checkpoints import SHIPPED_ENV

    os.environ[SHIPPED_ENV] = "1"  # train (or reuse this cache's), never load what is shipped
    from a2i_utils.config import get_config
    from a2i_utils.data import prepare_dataset
    from a2i_utils.imagebind.mini import load_or_train_mini, mini_checkpoint_path, mini_key
    from a2i_utils.soundiff.mini import load_or_pretrain_mini, mini_dir, mini_unclip_key

    code = git_state()
    cfg = get_config("demo", {"cache_dir": args.cache} if args.cache else {})
    dataset = prepare_dataset(cfg)
    print(dataset.summary().splitlines()[0])
    ib_key = mini_key(cfg, dataset.pairs)
    sd_key = mini_unclip_key(cfg, dataset.pairs, ib_key)
    fresh = {ib_key: not mini_checkpoint_path(cfg, ib_key).is_file(),
             sd_key: not (mini_dir(cfg, sd_key) / "info.json").is_file()}
    if args.only == "imagebind":  # the UnCLIP is not trained by this run: record no commit for it
        fresh.pop(sd_key)
    made = {k: made_by(cfg, k, code) if trains else made_by(cfg, k, {**code, "note": "trained earlier in this cache"})
            for k, trains in fresh.items()}
    t0 = time.time()
    embedder = load_or_train_mini(cfg, dataset)
    t1 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    cards = [] if args.only == "unclip" else [ship_imagebind(cfg, dataset, embedder, args.out, t1 - t0, made[ib_key])]
    if args.only != "imagebind":
        pipe = load_or_pretrain_mini(cfg, dataset, embedder)
        cards.append(ship_unclip(cfg, dataset, pipe, embedder.identity, args.out, time.time() - t1, made[sd_key]))
    total = sum((args.out / rel).stat().st_size for c in cards for rel in c["files"])
    for c in cards:
        print(f"{c['name']}: {c['key']}, steps {c['steps']}, last losses "
              f"{ {k: round(v[-1], 4) for k, v in c['losses'].items()} }")
    print(f"shipped {sum(len(c['files']) for c in cards)} files, {total / 1e6:.1f} MB, in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
