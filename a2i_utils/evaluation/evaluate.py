"""One evaluation run: every system (with and without the prompt) on the same held-out recordings and seeds.

Used by ``a2i evaluate`` and notebook 06. Images of every system are drawn with the same seeds (image j of a
recording: seed + j), so columns differ only by the system and the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from a2i_utils.evaluation.metrics import EvalContext, SystemResult, build_context, evaluate_images, image_scores
from a2i_utils.evaluation.systems import LABELS, Loader, draw

BAR_INTERVAL_S = 1.0
REFERENCE = "held-out images (reference)"
CHANCE = {"AIS": 0.5, "IIS": 0.5}


@dataclass
class Evaluation:
    """The context, one result per system (the reference first), and the best-of-N study."""

    ctx: EvalContext
    results: list[SystemResult]
    rerank: list[dict] = field(default_factory=list)
    rerank_system: str = ""
    seeds: int = 1

    def result(self, name: str) -> SystemResult:
        """The result of the system called ``name``."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no system {name!r} in this evaluation: {[r.name for r in self.results]}")


def label(system: str, prompt: str) -> str:
    """Column label: ``SounDiff-L + prompt`` etc."""
    return f"{LABELS.get(system, Path(system).name)}{' + prompt' if prompt else ''}"


def evaluate_systems(loader: Loader, systems: Sequence[str], prompts: Sequence[str] = ("",),
                     n_recordings: int | None = None, seeds: int | None = None, rerank_n: int = 0,
                     progress: bool = True) -> Evaluation:
    """Draw ``seeds`` images per held-out recording for each (system, prompt); measure them all."""
    cfg = loader.cfg
    seeds = seeds or cfg.soundiff.eval_seeds
    ctx = build_context(cfg, loader.dataset, loader.embedder, n_recordings, progress=False)
    results = [evaluate_images(ctx, REFERENCE, ctx.gt_images[:, None], set_metrics=False)]
    jobs = [(s, p) for s in systems for p in prompts]
    reranked = ("soundiff-l" if "soundiff-l" in systems else systems[0], prompts[0])  # the system reranked
    for system, prompt in tqdm(jobs, desc="systems", disable=not progress, mininterval=BAR_INTERVAL_S):
        n = max(seeds, rerank_n) if (system, prompt) == reranked else seeds  # candidates only where reranked
        images = draw(loader, loader.system(system), ctx.audio, prompt, n=n)  # (N, n, H, W, 3)
        res = evaluate_images(ctx, label(system, prompt), images[:, :seeds])
        res.images = images
        results.append(res)
    ev = Evaluation(ctx, results, seeds=seeds)
    if rerank_n > 1:
        ev.rerank_system = label(*reranked)
        ev.rerank = rerank_study(ctx, ev.result(ev.rerank_system).images[:, :rerank_n])
    return ev


def rerank_study(ctx: EvalContext, candidates: np.ndarray) -> list[dict]:
    """Best-of-N for N = 1, 2, 4, ... up to the candidates given (N, K, H, W, 3): summarised rows."""
    from a2i_utils.evaluation.report import rerank_rows
    from a2i_utils.evaluation.rerank import rerank_table

    k = candidates.shape[1]
    scores = image_scores(ctx, candidates)
    ks = sorted({1, *[2**i for i in range(1, 8) if 2**i <= k], k})
    return rerank_rows(rerank_table(scores, scores["emb"], ctx.audio, ks))


def rerank_markdown(rows: list[dict], system: str) -> str:
    """The best-of-N rows as a Markdown table."""
    head = "| N | metric | best of N [95% CI] | N = 1 | N independent samples | gain vs N = 1 [95% CI] | " \
           "gain vs independent [95% CI] |"
    lines = [f"Best-of-N reranking by ImageBind audio-image similarity, {system}.", "", head, "|" + " --- |" * 7]
    for r in rows:
        lo, hi = r["best_of_n_ci"]
        g1, gi = r["gain_vs_1_ci"], r["gain_vs_independent_ci"]
        lines.append(f"| {r['N']} | {r['metric']} | {r['best_of_n']:.3f} [{lo:.3f}, {hi:.3f}] | {r['first']:.3f} | "
                     f"{r['independent']:.3f} | {r['gain_vs_1']:+.3f} [{g1[0]:+.3f}, {g1[1]:+.3f}] | "
                     f"{r['gain_vs_independent']:+.3f} [{gi[0]:+.3f}, {gi[1]:+.3f}] |")
    return "\n".join(lines) + "\n"


def write_outputs(ev: Evaluation, out_dir: Path) -> list[Path]:
    """metrics.csv, metrics.md, metrics.png and judge.txt in ``out_dir``; with two systems or more, differences.csv
    and differences.md (each system against the baseline, or the first system when the baseline was not measured,
    with paired intervals); with a reranking study, rerank.csv and rerank.md."""
    import matplotlib.pyplot as plt

    from a2i_utils.evaluation.report import (
        bar_chart,
        difference_rows,
        differences_markdown,
        table_rows,
        to_csv,
        write_table,
    )
    from a2i_utils.io import atomic_write_text
    from a2i_utils.plotting import save_figure

    out_dir = Path(out_dir)
    rows = table_rows(ev.results)
    paths = list(write_table(rows, out_dir, ev.ctx.feature_name))
    fig = bar_chart(rows, f"Held-out recordings: {len(ev.ctx.pairs)}, {ev.seeds} image(s) each, 95% intervals "
                    "(bootstrap; FD/KD: jackknife)", ev.ctx.feature_name, CHANCE)
    paths.append(save_figure(fig, out_dir / "metrics.png"))
    plt.close(fig)
    names = [r.name for r in ev.results[1:]]  # the measured systems, the reference left out
    diffs = difference_rows(ev.results, "baseline" if "baseline" in names else names[0]) if len(names) > 1 else []
    if diffs:
        flat = [{k: v for k, v in d.items() if k != "ci"} | {"ci_lo": d["ci"][0], "ci_hi": d["ci"][1]} for d in diffs]
        paths.append(atomic_write_text(out_dir / "differences.csv", to_csv(flat)))
        paths.append(atomic_write_text(out_dir / "differences.md", differences_markdown(diffs)))
    if ev.rerank:
        flat = [{k: (v if not isinstance(v, tuple) else f"{v[0]:.4f};{v[1]:.4f}") for k, v in r.items()}
                for r in ev.rerank]
        paths.append(atomic_write_text(out_dir / "rerank.csv", to_csv(flat)))
        paths.append(atomic_write_text(out_dir / "rerank.md", rerank_markdown(ev.rerank, ev.rerank_system)))
    paths.append(atomic_write_text(out_dir / "judge.txt", f"scene judge: {ev.ctx.judge.name}; its accuracy on the "
                                   f"{len(ev.ctx.pairs)} held-out ground-truth images: {ev.ctx.judge_accuracy:.3f}\n"))
    return paths
