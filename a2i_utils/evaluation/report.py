"""The metrics table (CSV + Markdown), the bar chart with error bars, and honest verdicts between systems.

A system is called better than another only when the paired interval of the difference excludes zero: on the
per-recording metrics a bootstrap of the differences over recordings, on FD/KD the jackknife of the difference
(the same recording left out of both systems). Otherwise the verdict is "no clear difference", however far apart
the means are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from a2i_utils.evaluation.aic import compare
from a2i_utils.evaluation.metrics import HIGHER_IS_BETTER, PER_RECORDING, SET_METRICS, paired_set_difference
from a2i_utils.io import atomic_write_text

COLUMNS = PER_RECORDING + SET_METRICS


def table_rows(results: Sequence, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per system: name, n recordings, and for each metric its mean and 95% interval."""
    rows = []
    for r in results:
        row = {"system": r.name, "n_recordings": len(next(iter(r.per_recording.values())))}
        for metric, (mean, (lo, hi)) in r.summary(n_boot, seed).items():
            row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = mean, lo, hi
        rows.append(row)
    return rows


def to_csv(rows: list[dict]) -> str:
    """The rows as CSV text (every number, full precision)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(v: float, digits: int) -> str:
    return f"{v:.{digits}f}"


def to_markdown(rows: list[dict], feature_name: str = "", digits: int = 3) -> str:
    """The rows as a Markdown table: mean [95% interval] per metric."""
    metrics = [m for m in COLUMNS if m in rows[0]]
    head = ["system", "n"] + [f"{m} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["system"], str(r["n_recordings"])]
        for m in metrics:
            d = digits if m != "KD" else digits + 1
            if np.isnan(r[m]):
                cells.append("—")
                continue
            cells.append(f"{_fmt(r[m], d)} [{_fmt(r[m + '_lo'], d)}, {_fmt(r[m + '_hi'], d)}]")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Mean [95% interval]. AIS, IIS, AIC: percentile bootstrap over recordings. FD, KD: jackknife over "
                 "recordings (FD's is for the FD expected at this many recordings: FD is biased upward at a finite "
                 "size).")
    if feature_name:
        lines.append(f"FD and KD on {feature_name}.")
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], out_dir: Path, feature_name: str = "", stem: str = "metrics") -> tuple[Path, Path]:
    """``<stem>.csv`` and ``<stem>.md`` in ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    return (atomic_write_text(out_dir / f"{stem}.csv", to_csv(rows)),
            atomic_write_text(out_dir / f"{stem}.md", to_markdown(rows, feature_name)))


def verdict(a, b, metric: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Is system ``b`` better than ``a`` on ``metric``? {"diff": b - a, "ci": its paired 95% interval, "verdict"}."""
    if metric in PER_RECORDING:
        c = compare(a.per_recording[metric], b.per_recording[metric], n_boot, seed)
        diff, (lo, hi) = c["diff"], c["diff_ci"]
    else:
        diff, (lo, hi) = paired_set_difference(a, b, metric)
    clear = lo > 0 or hi < 0
    b_better = (diff > 0) == HIGHER_IS_BETTER[metric]
    if not clear:
        word = "no clear difference"
    else:
        word = f"{b.name} better" if b_better else f"{a.name} better"
    return {"metric": metric, "a": a.name, "b": b.name, "diff": diff, "ci": (lo, hi), "verdict": word}


def difference_rows(results: Sequence, baseline: str, metrics: Sequence[str] = COLUMNS) -> list[dict]:
    """Every system but the baseline (and systems without FD/KD) against ``baseline``: :func:`verdict` rows."""
    base = next((r for r in results if r.name == baseline), None)
    if base is None:
        raise KeyError(f"no system {baseline!r} among {[r.name for r in results]}")
    return [verdict(base, r, m) for r in results if r.name != baseline and r.set_loo for m in metrics]


def differences_markdown(rows: list[dict], digits: int = 3) -> str:
    """The verdict rows as a Markdown table: system - baseline [paired 95% interval] and the verdict."""
    lines = ["| system | metric | system − baseline [paired 95% CI] | verdict |", "|" + " --- |" * 4]
    for v in rows:
        d = digits if v["metric"] != "KD" else digits + 1
        lo, hi = v["ci"]
        lines.append(f"| {v['b']} | {v['metric']} | {v['diff']:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}] | {v['verdict']} |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict], title: str, feature_name: str = "", chance: dict | None = None):
    """One panel per metric: a bar per system with its 95% interval as error bars."""
    metrics = [m for m in COLUMNS if m in rows[0]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.1 * len(metrics), 3.8), constrained_layout=True)
    names = [r["system"] for r in rows]
    colors = plt.cm.tab10(np.arange(len(rows)) % 10)
    for ax, m in zip(np.atleast_1d(axes), metrics):
        mean = np.array([r[m] for r in rows])  # NaN (undefined) bars are left empty
        err = np.nan_to_num(np.array([[r[m] - r[m + "_lo"] for r in rows], [r[m + "_hi"] - r[m] for r in rows]]))
        ax.bar(np.arange(len(rows)), mean, yerr=np.clip(err, 0, None), color=colors, capsize=3)
        if chance and m in chance:
            ax.axhline(chance[m], color="k", ls="--", lw=1, label="chance")
            ax.legend(loc="upper right", fontsize=7)
        ax.set_xticks(np.arange(len(rows)), names, rotation=60, ha="right", fontsize=7)
        unit = "share of distractors below (0-1)" if m in ("AIS", "IIS") else (
            "share in the right scene (0-1)" if m == "AIC" else "distance (feature units²)")
        ax.set_ylabel(unit, fontsize=8)
        ax.set_title(f"{m} {'↑' if HIGHER_IS_BETTER[m] else '↓'}", fontsize=9)
    fig.suptitle(title + (f"\nFD/KD on {feature_name}" if feature_name else ""), fontsize=10)
    return fig


def rerank_rows(table: list[dict], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Summaries of :func:`a2i_utils.evaluation.rerank.rerank_table`: means, intervals and the paired gains."""
    from a2i_utils.evaluation.aic import bootstrap_ci

    out = []
    for row in table:
        best, first, indep = row["best_of_n"], row["first"], row["independent"]
        g1, gi = compare(first, best, n_boot, seed), compare(indep, best, n_boot, seed)
        out.append({"N": row["N"], "metric": row["metric"], "best_of_n": float(best.mean()),
                    "best_of_n_ci": bootstrap_ci(best, n_boot, seed), "first": float(first.mean()),
                    "independent": float(indep.mean()), "gain_vs_1": g1["diff"], "gain_vs_1_ci": g1["diff_ci"],
                    "gain_vs_independent": gi["diff"], "gain_vs_independent_ci": gi["diff_ci"]})
    return out
