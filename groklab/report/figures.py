"""The training-curve figures of a report and of a comparison, from ``metrics.jsonl`` rows.

Grokking spans decades of steps, so every curve against steps uses a log x-axis (step 0 is left
out: it has no place on it). The memorization step (train accuracy first >= 0.99) and the steps
where the ID and OOD splits first reach 0.95 are drawn as vertical lines on every curve of a
run, so the loss, weight norm and learning rate can be read against the same events; the span
from memorization to ID generalization, the grokking delay, is shaded.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from groklab.report.style import (
    GRID,
    ID,
    INK,
    MUTED_INK,
    OOD,
    TRAIN,
    split_colors,
    split_roles,
    style,
)

SPLIT_LINE = {"train": 2.2, "id": 2.4, "ood": 2.4, "other": 1.3}
METRIC_NAMES = {"acc": "accuracy", "exact": "exact match"}


def splits_of(rows: list[dict], summary: dict) -> list[str]:
    """Probe names in the order the trainer logged them (train first)."""
    if summary.get("final"):
        return list(summary["final"])
    seen = []
    for r in rows:
        for k in r:
            if k.startswith(f"{summary.get('metric', 'acc')}/"):
                name = k.split("/", 1)[1]
                if name not in seen:
                    seen.append(name)
    return seen


def series(rows: list[dict], key: str, log_x: bool = True) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in rows
           if r.get(key) is not None and (r["step"] > 0 or not log_x)]
    if not pts:
        return np.zeros(0), np.zeros(0)
    s, v = zip(*pts)
    return np.asarray(s, dtype=float), np.asarray(v, dtype=float)


def split_label(split: str, role: str) -> str:
    return {"id": f"{split} (ID)", "ood": f"{split} (OOD)"}.get(role, split)


def events(summary: dict) -> list[tuple[int, str, str]]:
    """(step, label, color) of memorization and of ID / OOD generalization (>= 0.95)."""
    out = []
    if summary.get("memorization_step"):
        out.append((summary["memorization_step"], "memorized", TRAIN))
    for role, color in (("id", ID), ("ood", OOD)):
        split = summary.get(f"{role}_split")
        step = (summary.get("thresholds", {}).get(split) or {}).get("0.95") if split else None
        if step:
            out.append((step, f"{role.upper()} \u2265 0.95", color))
    return out


def mark_events(ax, summary: dict, *, labels: bool = True) -> None:
    """Vertical lines at the run's events; the grokking delay shaded between the first two."""
    ev = events(summary)
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for step, label, color in ev:
        ax.axvline(step, color=color, lw=1.1, ls=(0, (4, 3)), alpha=0.85, zorder=1)
        if labels:
            ax.text(step, 0.03, f" {label}  {step:,} ", transform=trans, rotation=90,
                    ha="right", va="bottom", fontsize=8.5, color=color, zorder=5,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    mem = summary.get("memorization_step")
    gen = summary.get("generalization_step_id")
    if mem and gen and gen > mem:
        ax.axvspan(mem, gen, color=ID, alpha=0.07, lw=0, zorder=0)
        if labels and math.log10(gen / mem) > 0.25:
            mid = math.sqrt(mem * gen)
            ax.text(mid, 1.01, f"grokking delay {gen / mem:.1f}\u00d7", transform=trans,
                    ha="center", va="bottom", fontsize=9, color=ID, fontweight="bold",
                    clip_on=False)


def step_label(x: float, _pos=None) -> str:
    """1, 10, 100, 1k, 10k, 100k, 1M: step counts as people say them."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            v = x / div
            return f"{v:.0f}{suffix}" if v == int(v) else f"{v:g}{suffix}"
    return f"{x:g}"


def _log_x(ax, steps: np.ndarray) -> None:
    if steps.size and steps.max() > 1:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(step_label))
    ax.set_xlabel("training step")


def _split_curves(ax, rows, summary, prefix: str) -> None:
    splits = splits_of(rows, summary)
    roles = split_roles(splits, summary.get("id_split"), summary.get("ood_split"))
    colors = split_colors(splits, summary.get("id_split"), summary.get("ood_split"))
    order = sorted(splits, key=lambda s: roles[s] != "other")  # story splits drawn on top
    all_steps = np.zeros(0)
    for s in order:
        x, y = series(rows, f"{prefix}/{s}")
        if not x.size:
            continue
        all_steps = np.concatenate([all_steps, x])
        role = roles[s]
        ax.plot(x, y, color=colors[s], lw=SPLIT_LINE[role], alpha=1.0 if role != "other" else 0.85,
                label=split_label(s, role), zorder=3 if role != "other" else 2)
    _log_x(ax, all_steps)


def _split_legend(ax, rows, summary) -> None:
    """Legend below the axes, in logging order (train first), not drawing order."""
    splits = splits_of(rows, summary)
    roles = split_roles(splits, summary.get("id_split"), summary.get("ood_split"))
    handles, labels = ax.get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    wanted = [split_label(s, roles[s]) for s in splits] + [lb for lb in labels]
    wanted = list(dict.fromkeys(w for w in wanted if w in by_label))
    ax.legend([by_label[w] for w in wanted], wanted, loc="upper center",
              bbox_to_anchor=(0.5, -0.16), ncol=min(len(wanted), 7), handlelength=2.2,
              columnspacing=1.6)


def accuracy_figure(rows: list[dict], summary: dict) -> Figure:
    with style():
        fig = Figure(figsize=(10.5, 4.6))
        ax = fig.subplots()
        metric = summary.get("metric", "acc")
        _split_curves(ax, rows, summary, metric)
        _split_legend(ax, rows, summary)
        ax.set_ylim(-0.02, 1.04)
        ax.set_ylabel(METRIC_NAMES.get(metric, metric))
        ax.set_title(f"{METRIC_NAMES.get(metric, metric).capitalize()} per split")
        mark_events(ax, summary)
        fig.tight_layout()
    return fig


def loss_figure(rows: list[dict], summary: dict) -> Figure:
    with style():
        fig = Figure(figsize=(10.5, 4.2))
        ax = fig.subplots()
        _split_curves(ax, rows, summary, "loss")
        x, y = series(rows, "train_loss")
        if x.size:
            ax.plot(x, y, color=TRAIN, lw=1.0, alpha=0.45, ls=":", label="training batches")
        _split_legend(ax, rows, summary)
        ax.set_yscale("log")
        ax.set_ylabel("cross-entropy loss")
        ax.set_title("Loss per split")
        mark_events(ax, summary)
        fig.tight_layout()
    return fig


def _single(rows, summary, key, title, ylabel, color, from_zero=False) -> Figure:
    with style():
        fig = Figure(figsize=(5.2, 3.4))
        ax = fig.subplots()
        x, y = series(rows, key)
        ax.plot(x, y, color=color, lw=2.0)
        _log_x(ax, x)
        if from_zero and y.size:
            ax.set_ylim(0, 1.1 * float(y.max()) or 1.0)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        mark_events(ax, summary, labels=False)
        fig.tight_layout()
    return fig


def weight_norm_figure(rows: list[dict], summary: dict) -> Figure:
    return _single(rows, summary, "weight_norm", "Weight norm", "L2 norm of all parameters", INK)


def lr_figure(rows: list[dict], summary: dict) -> Figure:
    return _single(rows, summary, "lr", "Learning rate", "learning rate", MUTED_INK,
                   from_zero=True)


RUN_FIGURES = {
    "accuracy": (accuracy_figure, "Accuracy of every probe split against training steps (log "
                 "scale). Dashed lines: memorization (train \u2265 0.99) and the first step each of "
                 "ID and OOD reaches 0.95; the shaded span is the grokking delay."),
    "loss": (loss_figure, "Cross-entropy loss of every split (log\u2013log); dotted: the mean "
             "loss of the training batches since the previous evaluation."),
    "weight_norm": (weight_norm_figure, "L2 norm of all parameters, with the same events marked."),
    "lr": (lr_figure, "Learning rate schedule."),
}


# ----------------------------------------------------------------------------- comparisons


def _role_panels(runs) -> list[tuple[str, str]]:
    panels = [("train", "train")]
    if any(r.summary.get("id_split") for r in runs):
        panels.append(("id", "ID"))
    if any(r.summary.get("ood_split") for r in runs):
        panels.append(("ood", "OOD"))
    return panels


def _split_for(run, role: str) -> str | None:
    return "train" if role == "train" else run.summary.get(f"{role}_split")


def compare_curves_figure(runs, labels: list[str], colors: list[str], prefix: str) -> Figure:
    """One panel per split role (train / ID / OOD), one line per run."""
    panels = _role_panels(runs)
    what = "accuracy" if prefix == "acc" else "loss"
    with style():
        fig = Figure(figsize=(3.9 * len(panels) + 0.6, 3.9))
        axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
        for ax, (role, title) in zip(axes, panels):
            steps = np.zeros(0)
            for run, label, color in zip(runs, labels, colors):
                split = _split_for(run, role)
                if split is None:
                    continue
                x, y = series(run.rows, f"{prefix}/{split}")
                steps = np.concatenate([steps, x])
                ax.plot(x, y, color=color, lw=1.9, label=label)
                hit = (run.summary.get("thresholds", {}).get(split) or {}).get("0.95")
                if prefix == "acc" and role == "train":
                    hit = run.summary.get("memorization_step")
                if prefix == "acc" and hit:
                    ax.plot([hit], [np.interp(hit, x, y)], "o", ms=5, color=color,
                            mec="white", mew=1.0, zorder=4)
            _log_x(ax, steps)
            names = sorted({s for s in (_split_for(r, role) for r in runs) if s})
            ax.set_title(f"{title}: {', '.join(names)}", fontsize=11)
        axes[0].set_ylabel(what)
        if prefix == "acc":
            axes[0].set_ylim(-0.02, 1.04)
        else:
            axes[0].set_yscale("log")
        handles, labs = axes[0].get_legend_handles_labels()
        fig.legend(handles, labs, loc="lower center", ncol=min(len(labs), 5),
                   bbox_to_anchor=(0.5, -0.02))
        fig.tight_layout(rect=(0, 0.06 + 0.05 * ((len(labs) - 1) // 5), 1, 1))
    return fig


def compare_single_figure(runs, labels, colors, key: str, title: str, ylabel: str) -> Figure:
    with style():
        fig = Figure(figsize=(6.4, 3.7))
        ax = fig.subplots()
        steps = np.zeros(0)
        for run, label, color in zip(runs, labels, colors):
            x, y = series(run.rows, key)
            steps = np.concatenate([steps, x])
            ax.plot(x, y, color=color, lw=1.8, label=label)
        _log_x(ax, steps)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(loc="best", fontsize=8.5)
        fig.tight_layout()
    return fig


def sweep_figure(runs, key: str, values: list[float]) -> Figure:
    """Steps to each event against the one config value the runs differ in (e.g. task.phi)."""
    order = np.argsort(values)
    xs = np.asarray(values, dtype=float)[order]
    runs = [runs[i] for i in order]
    with style():
        fig = Figure(figsize=(6.4, 3.9))
        ax = fig.subplots()
        top = max(r.summary.get("steps", 1) for r in runs)
        series_ = [("memorization (train \u2265 0.99)", TRAIN, "o",
                    [r.summary.get("memorization_step") for r in runs])]
        for role, color, marker in (("id", ID, "s"), ("ood", OOD, "D")):
            steps = [(r.summary.get("thresholds", {}).get(_split_for(r, role)) or {}).get("0.95")
                     for r in runs]
            if any(_split_for(r, role) for r in runs):
                series_.append((f"{role.upper()} \u2265 0.95", color, marker, steps))
        for label, color, marker, ys in series_:
            got = [(x, y) for x, y in zip(xs, ys) if y]
            gx, gy = zip(*got) if got else ((), ())  # an empty line still labels the legend
            ax.plot(gx, gy, marker=marker, color=color, lw=1.6, ms=6, label=label)
            miss = [x for x, y in zip(xs, ys) if not y]
            if miss:
                ax.plot(miss, [top * 1.6] * len(miss), marker=marker, ls="none", ms=6,
                        mfc="white", mec=color, mew=1.4)
        ax.axhline(top, color=GRID, lw=1.0, ls="--")
        ax.text(0.01, top * 1.6, "not reached", fontsize=8, va="center", ha="left",
                color=MUTED_INK, transform=blended_transform_factory(ax.transAxes, ax.transData))
        ax.set_yscale("log")
        reached = [y for *_, ys in series_ for y in ys if y]
        ax.set_ylim(max(min(reached, default=top) / 2, 1), top * 2.6)
        ax.set_xlabel(key)
        ax.set_ylabel("first step")
        ax.set_title(f"Steps to memorize and to generalize vs {key}")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=9)
        fig.tight_layout()
    return fig
