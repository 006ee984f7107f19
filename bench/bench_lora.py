"""SounDiff-L as LoRA, with and without the class embedding trained (issue 21.3): scene accuracy on the test split.

Under ``soundiff.lora`` the audio embedding reaches the U-Net only through ``class_embedding`` (class_labels ->
linear_1 -> SiLU -> linear_2, added to the time embedding). ``soundiff.lora_class_embedding`` trains it whole beside
the attention adapters; without it a LoRA can only adapt around a projection pretrained for image embeddings.
This script fine-tunes SounDiff-L both ways from the same seed and data, in demo mode (the shipped miniature
UnCLIP and ImageBind, as notebook 05), and reports for each arm:

- AIC: the share of generated images the project's scene judge puts in the recording's scene
  (``a2i_utils.evaluation.aic.scene_hit_rates``: ``soundiff.eval_seeds`` images per recording, notebook 05's
  section 8), with percentile-bootstrap 95% intervals over recordings, and the **paired** difference
  (``compare``: the same recordings and seeds under both arms);
- trainable parameters, training seconds per step and peak memory (each arm trains in its own process: the peak
  resident set on the CPU, which includes loading the data and the pipeline; ``max_memory_allocated`` on a GPU);
- for context, the zero-shot baseline (the pretrained decoder fed audio embeddings) and the full fine-tune
  (notebook 05's SounDiff-L, the same run key: loaded from the cache when notebook 05 trained it).

Fine-tunes are cached by the project's run key (``load_or_finetune``: a killed run resumes from its checkpoint)
and each model's per-recording hit rates by a key of the run, judge, recordings and sampling settings, so a rerun
resumes where it stopped. Results: ``bench/results/bench_lora.txt`` (``bench_lora-val.txt`` for ``--split val``).

    .venv/bin/python bench/bench_lora.py                   # demo, test split (about 12 min on 2 shared cores)
    .venv/bin/python bench/bench_lora.py --split val --lr 3e-3   # choose a LoRA learning rate: validation only
    .venv/bin/python bench/bench_lora.py --smoke           # tiny: 3 steps, 6 recordings, 1 seed (checks the script)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from a2i_utils.config import Config, get_config

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = {"lora": False, "lora_ce": True}  # arm -> soundiff.lora_class_embedding
HITS_VERSION = 1


# ----------------------------------------------------------------------------------------------------------
# Configs and models
# ----------------------------------------------------------------------------------------------------------
def base_config(args) -> Config:
    """The demo preset with the bench's overrides (steps, seeds, threads); the LoRA settings are per arm."""
    over = {"soundiff.eval_seeds": args.seeds}
    if args.steps is not None:
        over["soundiff.steps"] = args.steps
    return get_config("demo", over)


def arm_config(cfg: Config, arm: str, lr: float | None) -> Config:
    """``cfg`` as a LoRA run (``arm`` in ARMS) or, for ``"full"``, the full fine-tune of the preset."""
    if arm == "full":
        return cfg
    over = {"soundiff.lora": True, "soundiff.lora_class_embedding": ARMS[arm]}
    if lr is not None:  # a LoRA learning rate for both arms; the schedule ends at a tenth of it, as the preset's
        over |= {"soundiff.lr": lr, "soundiff.lr_end": lr / 10}
    return cfg.replace(over)


def load_world(cfg: Config) -> dict:
    """Dataset, miniature ImageBind, miniature UnCLIP and the scene judge, as notebook 05 loads them."""
    from a2i_utils.data import prepare_dataset
    from a2i_utils.evaluation.scene_classifier import classifier_key, load_or_train_classifier
    from a2i_utils.imagebind.embedder import load_imagebind
    from a2i_utils.soundiff.pipeline import load_pipeline

    ds = prepare_dataset(cfg, progress=False)
    emb = load_imagebind(cfg, progress=False)
    pipe = load_pipeline(cfg, progress=False)
    clf, info = load_or_train_classifier(cfg, ds, progress=False)
    return {"ds": ds, "emb": emb, "pipe": pipe, "clf": clf, "clf_info": info,
            "clf_key": classifier_key(cfg, ds.pairs)}


def key_of(cfg: Config, world: dict) -> str:
    """The run key ``load_or_finetune`` gives SounDiff-L under ``cfg`` (it trains on every training pair)."""
    from a2i_utils.soundiff.training import run_key, variant_of

    pipe = world["pipe"]
    return run_key(cfg, getattr(pipe, "key", cfg.soundiff.pretrained_id), variant_of(cfg, "L"),
                   world["emb"].identity, [p.id for p in world["ds"].train])


def bench_dir(cfg: Config) -> Path:
    """``cache_dir/bench/bench_lora``: measurements and hit rates, by key."""
    return Path(cfg.cache_dir) / "bench" / "bench_lora"


def trainable_m(pipe, cfg: Config, arm: str) -> float:
    """Millions of parameters the arm trains (LoRA adapters on a copy of the U-Net, plus its class embedding)."""
    from a2i_utils.soundiff.training import add_lora

    unet = copy.deepcopy(pipe.unet)
    if arm == "full":
        return sum(p.numel() for p in unet.parameters()) / 1e6
    params = add_lora(unet, cfg.soundiff.lora_rank, cfg.seed, cfg.soundiff.lora_class_embedding)
    return sum(p.numel() for p in params) / 1e6


# ----------------------------------------------------------------------------------------------------------
# Training one arm (in its own process, for its own peak memory)
# ----------------------------------------------------------------------------------------------------------
def train_arm(args) -> dict:
    """Fine-tune (or find) one arm's SounDiff-L; measure seconds per step and peak memory when it trains here."""
    from a2i_utils.devices import cpu_threads
    from a2i_utils.io import atomic_write_text
    from a2i_utils.soundiff.training import load_or_finetune, run_dir, variant_of

    cfg = arm_config(base_config(args), args.only_train, args.lr)
    device = cfg.resolved_device()
    with cpu_threads(cfg.soundiff.cpu_threads):
        world = load_world(cfg)
        key = key_of(cfg, world)
        record = bench_dir(cfg) / f"{key}.json"
        if record.is_file():
            return json.loads(record.read_text())
        finished = (run_dir(cfg, key) / "history.json").is_file()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        tuned, hist = load_or_finetune(cfg, variant_of(cfg, "L"), world["pipe"], world["ds"], world["emb"],
                                       progress=False)
        wall = time.perf_counter() - t0
    assert tuned.key == key, f"run key {tuned.key} is not the one computed here ({key})"
    out = {"arm": args.only_train, "key": key, "steps": len(hist["loss"]), "batch": cfg.soundiff.batch_size,
           "lr": cfg.soundiff.lr, "s_per_step": round(cfg.soundiff.batch_size / hist["samples_per_s"], 4),
           "final_loss_mean20": round(float(np.mean(hist["loss"][-20:])), 5),
           "first_loss_mean20": round(float(np.mean(hist["loss"][:20])), 5)}
    if finished:  # trained by someone else before: no memory measured here, and it is not recorded as measured
        return out | {"peak_gib": None, "measured": "loaded from the cache (time from its history)"}
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda") else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30  # ru_maxrss: KiB on Linux
    out |= {"peak_gib": round(peak, 3), "train_wall_s": round(wall, 1), "device": device_name(device),
            "measured": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"}
    atomic_write_text(record, json.dumps(out))
    return out


def run_child(args, arm: str) -> dict:
    """Run ``train_arm`` for ``arm`` in a fresh process; its last stdout line is the JSON."""
    cmd = [sys.executable, __file__, "--only-train", arm, "--seeds", str(args.seeds)]
    cmd += ["--steps", str(args.steps)] if args.steps is not None else []
    cmd += ["--lr", repr(args.lr)] if args.lr is not None else []
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"training arm {arm} failed:\n{done.stderr[-3000:]}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {arm:<8} {res['measured']:<22} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return res


# ----------------------------------------------------------------------------------------------------------
# Scene accuracy
# ----------------------------------------------------------------------------------------------------------
def eval_pairs(cfg: Config, world: dict, split: str, n: int | None):
    """One pair per recording of ``split``, sorted by scene and id (notebook 05's order); the first ``n`` spread."""
    from a2i_utils.data import CLASSES
    from a2i_utils.imagebind.retrieval import one_pair_per_recording

    pairs = one_pair_per_recording(sorted(getattr(world["ds"], split), key=lambda p: (CLASSES.index(p.label), p.id)))
    if n is not None and n < len(pairs):
        pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, n).round().astype(int)]
    return pairs


def cached_hits(cfg: Config, world: dict, name: str, model_key: str, pipe, pairs, audio, labels) -> np.ndarray:
    """Per-recording hit rates (N,) of ``pipe`` (``scene_hit_rates``), cached by model, judge, recordings, sampling."""
    from a2i_utils.evaluation.aic import scene_hit_rates
    from a2i_utils.io import atomic_write_text, cache_key

    sc = cfg.soundiff
    payload = {"model": model_key, "judge": world["clf_key"], "ids": [p.id for p in pairs], "seed": cfg.seed,
               "seeds": sc.eval_seeds, "steps": sc.sample_steps, "guidance": sc.guidance_scale,
               "noise_level": sc.noise_level, "audio_scale": cfg.imagebind.audio_scale}
    file = bench_dir(cfg) / f"{cache_key('hits', HITS_VERSION, payload)}.json"
    if file.is_file():
        return np.array(json.loads(file.read_text())["hits"])
    t0 = time.perf_counter()
    _, hits = scene_hit_rates(cfg, pipe, world["clf"], audio, labels)  # (N, n, H, W, 3), (N,)
    atomic_write_text(file, json.dumps({"name": name, "payload": payload, "hits": hits.tolist()}))
    print(f"  {name:<9} AIC {hits.mean():.3f}  ({time.perf_counter() - t0:.0f} s to draw and judge)", flush=True)
    return hits


def evaluate_all(args, cfg: Config, world: dict, arms: list[str]) -> dict:
    """Hit rates of the zero-shot baseline and every arm's fine-tune on the chosen split."""
    from a2i_utils.data import CLASSES
    from a2i_utils.imagebind.cache import embed_files, scale_audio
    from a2i_utils.soundiff.training import load_or_finetune, variant_of

    pairs = eval_pairs(cfg, world, args.split, args.n_recordings)
    labels = np.array([CLASSES.index(p.label) for p in pairs])
    audio = scale_audio(embed_files(world["emb"], [p.audio_path for p in pairs], "audio", cfg, progress=False),
                        cfg.imagebind.audio_scale)  # (N, D)
    hits = {}
    if not args.no_baseline:
        pipe = world["pipe"]
        key = getattr(pipe, "key", cfg.soundiff.pretrained_id)
        hits["zero-shot"] = cached_hits(cfg, world, "zero-shot", key, pipe, pairs, audio, labels)
    for arm in arms:
        acfg = arm_config(cfg, arm, args.lr if arm != "full" else None)
        tuned, _ = load_or_finetune(acfg, variant_of(acfg, "L"), world["pipe"], world["ds"], world["emb"],
                                    progress=False)
        hits[arm] = cached_hits(acfg, world, arm, tuned.key, tuned, pairs, audio, labels)
    return {"hits": hits, "n": len(pairs)}


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------
def summarise(args, cfg: Config, world: dict, trained: dict, evals: dict) -> dict:
    """Every figure of the report, as one JSON-able dict."""
    from a2i_utils.evaluation.aic import bootstrap_ci, compare

    hits = evals["hits"]
    aic = {name: {"aic": round(float(h.mean()), 3), "ci": [round(x, 3) for x in bootstrap_ci(h)]}
           for name, h in hits.items()}
    c = compare(hits["lora"], hits["lora_ce"])
    out = {"split": args.split, "n_recordings": evals["n"], "seeds": cfg.soundiff.eval_seeds,
           "steps": cfg.soundiff.steps, "batch": cfg.soundiff.batch_size,
           "lora_lr": args.lr if args.lr is not None else cfg.soundiff.lr, "full_lr": cfg.soundiff.lr,
           "lora_rank": cfg.soundiff.lora_rank, "guidance": cfg.soundiff.guidance_scale,
           "sample_steps": cfg.soundiff.sample_steps, "judge_val_acc": round(world["clf_info"]["val_acc"], 3),
           "aic": aic, "ce_minus_no_ce": round(c["diff"], 3), "ce_minus_no_ce_ci": [round(x, 3) for x in c["diff_ci"]],
           "train": trained}
    if "zero-shot" in hits:
        for arm in ("lora", "lora_ce"):
            d = compare(hits["zero-shot"], hits[arm])
            out[f"{arm}_minus_zero_shot"] = [round(d["diff"], 3), [round(x, 3) for x in d["diff_ci"]]]
    return out


def verdict(lo: float, hi: float) -> str:
    """'better' / 'worse' / 'no clear difference' from a paired interval."""
    return "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"


def report(r: dict, device: str) -> str:
    """Human-readable lines, then one JSON line."""
    head = (f"# bench_lora  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  preset=demo  device={device}  "
            f"torch {torch.__version__}")
    lines = [head,
             f"# SounDiff-L, {r['steps']} steps at batch {r['batch']}; LoRA rank {r['lora_rank']} at lr "
             f"{r['lora_lr']:g} (-> a tenth, linear), full fine-tune at the preset's lr {r['full_lr']:g}; same seed "
             "and data",
             f"# AIC on {r['n_recordings']} {r['split']} recordings, {r['seeds']} images each (guidance "
             f"{r['guidance']}, {r['sample_steps']} DDIM steps), judge accuracy on real validation images "
             f"{r['judge_val_acc']}; 95% percentile bootstrap over recordings"]
    t = r["train"]
    for name, a in r["aic"].items():
        extra = ""
        if name in t:
            m = t[name]
            peak = "n/a" if m["peak_gib"] is None else f"{m['peak_gib']:.3f} GiB"
            extra = (f"  trainable {m['trainable_m']:.4f} M  {m['s_per_step']:.3f} s/step  peak {peak}  "
                     f"loss {m['first_loss_mean20']:.4f} -> {m['final_loss_mean20']:.4f}")
        lines.append(f"{name:<10} AIC {a['aic']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]{extra}")
    lo, hi = r["ce_minus_no_ce_ci"]
    lines.append(f"lora_ce - lora (paired, same recordings and seeds): {r['ce_minus_no_ce']:+.3f} "
                 f"[{lo:+.3f}, {hi:+.3f}]: {verdict(lo, hi)}")
    for arm in ("lora", "lora_ce"):
        if f"{arm}_minus_zero_shot" in r:
            d, (lo2, hi2) = r[f"{arm}_minus_zero_shot"]
            lines.append(f"{arm} - zero-shot (paired): {d:+.3f} [{lo2:+.3f}, {hi2:+.3f}]: {verdict(lo2, hi2)}")
    a, b = t["lora"], t["lora_ce"]
    ratio = (f"lora_ce / lora: trainable {b['trainable_m'] / a['trainable_m']:.1f}x, "
             f"s/step {b['s_per_step'] / a['s_per_step']:.2f}x")
    if a["peak_gib"] and b["peak_gib"]:
        ratio += f", peak {b['peak_gib'] / a['peak_gib']:.3f}x"
    lines.append(ratio + f"  (trained: lora {a['measured']}, lora_ce {b['measured']})")
    if device.startswith("cpu"):
        lines.append("# CPU peak = the training process's peak resident set, which includes loading the data, "
                     "ImageBind and the pipeline")
    return "\n".join(lines + [json.dumps({"bench": "lora"} | r)])


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's architecture and core count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="test", choices=["test", "val"], help="recordings scored (choose on val)")
    p.add_argument("--lr", type=float, default=None, help="LoRA learning rate of both arms (default: the preset's)")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the preset's)")
    p.add_argument("--seeds", type=int, default=4, help="images per recording (notebook 05: the preset's 4)")
    p.add_argument("--n-recordings", type=int, default=None, help="score only this many recordings (default: all)")
    p.add_argument("--no-baseline", action="store_true", help="skip the zero-shot baseline")
    p.add_argument("--no-full", action="store_true", help="skip the full fine-tune (context)")
    p.add_argument("--smoke", action="store_true", help="3 steps, 6 recordings, 1 seed, no baseline or full")
    p.add_argument("--out", type=Path, default=None, help="results file (default: bench/results/bench_lora*.txt)")
    p.add_argument("--only-train", default=None, help=argparse.SUPPRESS)  # child: one arm, JSON out
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.n_recordings, args.seeds, args.no_baseline, args.no_full = 3, 6, 1, True, True
    if args.only_train:
        print(json.dumps(train_arm(args)))
        return 0
    from a2i_utils.devices import cpu_threads
    from a2i_utils.io import atomic_write_text

    cfg = base_config(args)
    arms = list(ARMS) + ([] if args.no_full else ["full"])
    print(f"training {', '.join(arms)} (each in its own process; cached runs load)", flush=True)
    trained = {arm: run_child(args, arm) for arm in arms}
    with cpu_threads(cfg.soundiff.cpu_threads):
        world = load_world(cfg)
        for arm in arms:
            trained[arm]["trainable_m"] = round(trainable_m(world["pipe"], arm_config(cfg, arm, args.lr), arm), 4)
        print(f"scoring on the {args.split} split", flush=True)
        evals = evaluate_all(args, cfg, world, arms)
    r = summarise(args, cfg, world, trained, evals)
    text = report(r, device_name(cfg.resolved_device()))
    print(text)
    val = "-val" + (f"-lr{args.lr:g}" if args.lr is not None else "") if args.split == "val" else ""
    out = args.out or (None if args.smoke else RESULTS / f"bench_lora{val}.txt")
    if out is not None:  # the smoke run checks the script: it writes only where --out says
        atomic_write_text(out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
