"""Phase diagrams over a sweep: when (and whether) each point generalized.

Question: how does the time to generalize depend on the swept knobs? Wang et al. 2024 (Fig. 2)
plot it against phi, the ratio of inferred to atomic facts (higher phi groks sooner), and against
the number of entities at fixed phi (no change in epochs); Liu et al. 2022 (Omnigrok) and Power
et al. 2022 draw weight decay x data fraction phase diagrams.

Method: for every point of a sweep directory, the first evaluated step where the chosen split
(default: the task's ID split, e.g. ``test_id``) reaches ``threshold`` (default 0.95), read from
the point's ``metrics.jsonl``, and its final accuracy. Points are laid on a grid over two swept
keys (x, y); every other swept key (seeds first) is a replicate: a cell reports the median
steps over its replicates and the mean final accuracy. A finished point that never reached the
threshold is *censored* (stored as +inf, drawn as "never"), not dropped; a point not finished
yet, failed or missing is NaN. Steps can be shown as epochs (steps x batch / training rows), the
unit in which Wang et al. find the entity count irrelevant.

Writes ``DIR/analysis/phase.npz`` (+ ``phase.json``) and ``DIR/figures/phase_steps.png``
(steps to threshold against x, one line per y value, never-generalizing runs marked) and, with a
second axis, ``phase_heatmap_steps.png`` and ``phase_heatmap_final.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from groklab.rundir import RunDir  # noqa: E402
from groklab.sweep.runner import FINISHED, INDEX_FILE, SPEC_FILE, read_index  # noqa: E402
from groklab.sweep.spec import SweepError  # noqa: E402
from groklab.train.summary import first_step  # noqa: E402

REPLICATE_KEYS = ("train.seed", "task.seed")


@dataclass
class PhaseResult:
    x_key: str
    y_key: str | None
    x_values: list
    y_values: list
    split: str
    threshold: float
    unit: str  # "steps" or "epochs"
    steps: np.ndarray  # [ny, nx, n_rep] to threshold; inf = never (finished), nan = no data
    final: np.ndarray  # [ny, nx, n_rep] final accuracy of ``split``; nan = no data
    run_length: np.ndarray  # [ny, nx, n_rep] steps trained (in ``unit``)
    points: np.ndarray  # [ny, nx, n_rep] point slugs ("" = none)
    replicate_keys: list = field(default_factory=list)

    @property
    def median_steps(self) -> np.ndarray:
        """[ny, nx] median over replicates with data; inf when most of them never reached."""
        out = np.full(self.steps.shape[:2], np.nan)
        for idx in np.ndindex(*out.shape):
            v = self.steps[idx]
            v = v[~np.isnan(v)]
            if len(v):
                out[idx] = np.median(v)  # inf sorts last: a majority of "never" gives inf
        return out

    @property
    def mean_final(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            counts = (~np.isnan(self.final)).sum(-1)
            sums = np.nansum(self.final, -1)
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    @property
    def never(self) -> np.ndarray:
        return np.isinf(self.median_steps)

    # ------------------------------------------------------------------ figures

    def _label(self, key: str | None) -> str:
        return {"task.phi": "phi (inferred / atomic ID facts)", "task.entities": "entities |E|",
                "train.weight_decay": "weight decay", "train.lr": "learning rate"}.get(key, key)

    def plot(self) -> plt.Figure:
        """Steps to threshold against x (one line per y value), never-generalizing runs marked."""
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        xs = np.arange(len(self.x_values))
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                      for v in self.x_values)
        xpos = np.array(self.x_values, dtype=float) if numeric else xs
        colors = plt.cm.viridis(np.linspace(0, 0.85, max(1, len(self.y_values))))
        top = np.nanmax(np.where(np.isfinite(self.run_length), self.run_length, np.nan)) \
            if np.isfinite(self.run_length).any() else 1.0
        never_drawn = False
        for j, yv in enumerate(self.y_values):
            label = f"{self.y_key.split('.')[-1]}={yv}" if self.y_key else None
            med = self.median_steps[j]
            ok = np.isfinite(med)
            ax.plot(xpos[ok], med[ok], "o-", color=colors[j], label=label)
            for r in range(self.steps.shape[2]):
                s = self.steps[j, :, r]
                fin = np.isfinite(s)
                ax.plot(xpos[fin], s[fin], ".", color=colors[j], alpha=0.4)
                nev = np.isinf(s)
                if nev.any():
                    ax.plot(xpos[nev], self.run_length[j, nev, r], "^", mfc="none", ms=10,
                            color="crimson", label=None if never_drawn else
                            f"never reached {self.threshold:g} (at its run length)")
                    never_drawn = True
            ax2.plot(xpos, self.mean_final[j], "o-", color=colors[j], label=label)
        ax.set_yscale("log")
        ax.set_ylim(top=top * 1.6)
        ax.set_xlabel(self._label(self.x_key))
        ax.set_ylabel(f"{self.unit} until {self.split} >= {self.threshold:g}")
        ax.set_title(f"time to generalize ({self.split})")
        ax2.set_xlabel(self._label(self.x_key))
        ax2.set_ylabel(f"final {self.split} accuracy")
        ax2.set_ylim(-0.03, 1.03)
        ax2.set_title("final accuracy")
        for a in (ax, ax2):
            if not numeric:
                a.set_xticks(xs, [str(v) for v in self.x_values])
            a.grid(alpha=0.3)
        if self.y_key or never_drawn:
            ax.legend(fontsize=8)
        reps = f"; median over {', '.join(self.replicate_keys)}" if self.replicate_keys else ""
        fig.suptitle(f"phase diagram over {self.x_key}{' x ' + self.y_key if self.y_key else ''}"
                     f"{reps}", fontsize=10)
        fig.tight_layout()
        return fig

    def plot_heatmap(self, which: str = "steps") -> plt.Figure:
        """Heatmap over (x, y): steps to threshold (log colour) or final accuracy."""
        if self.y_key is None:
            raise ValueError("a heatmap needs a second swept key (y)")
        fig, ax = plt.subplots(figsize=(1.2 * len(self.x_values) + 3, 0.8 * len(self.y_values) + 2))
        if which == "steps":
            grid = self.median_steps
            shown = np.where(np.isfinite(grid), grid, np.nan)
            data = np.log10(np.maximum(shown, 1))
            cmap = plt.cm.magma_r.copy()
            im = ax.imshow(data, cmap=cmap, aspect="auto", origin="lower")
            cb = fig.colorbar(im, ax=ax)
            cb.set_label(f"log10 {self.unit} until {self.split} >= {self.threshold:g}")
        else:
            grid = self.mean_final
            im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto", origin="lower")
            fig.colorbar(im, ax=ax).set_label(f"final {self.split} accuracy")
        for (j, i), _ in np.ndenumerate(grid):
            v = grid[j, i]
            if which == "steps" and np.isinf(v):
                ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, hatch="///",
                                           color="grey"))
                text = "never"
            elif np.isnan(v):
                text = "-"
            else:
                text = f"{v:.0f}" if which == "steps" else f"{v:.2f}"
            # Light text on the dark end of each colour map.
            level = im.norm(np.log10(max(v, 1)) if which == "steps" else v) \
                if np.isfinite(v) else 0.0
            dark = level > 0.55 if which == "steps" else level < 0.45
            ax.text(i, j, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
        ax.set_xticks(range(len(self.x_values)), [str(v) for v in self.x_values])
        ax.set_yticks(range(len(self.y_values)), [str(v) for v in self.y_values])
        ax.set_xlabel(self._label(self.x_key))
        ax.set_ylabel(self._label(self.y_key))
        title = (f"{self.unit} until {self.split} >= {self.threshold:g}" if which == "steps"
                 else f"final {self.split} accuracy")
        ax.set_title(title)
        fig.tight_layout()
        return fig

    # ------------------------------------------------------------------ files

    def save(self, sweep_dir: str | Path) -> list[Path]:
        """analysis/phase.npz + phase.json and figures/phase_*.png; returns the figure paths."""
        d = Path(sweep_dir)
        (d / "analysis").mkdir(parents=True, exist_ok=True)
        (d / "figures").mkdir(parents=True, exist_ok=True)
        np.savez(d / "analysis" / "phase.npz", steps=self.steps, final=self.final,
                 run_length=self.run_length, median_steps=self.median_steps,
                 mean_final=self.mean_final, never=self.never, points=self.points.astype(str),
                 x_values=np.array([str(v) for v in self.x_values]),
                 y_values=np.array([str(v) for v in self.y_values]))
        meta = {"x_key": self.x_key, "y_key": self.y_key, "x_values": self.x_values,
                "y_values": self.y_values, "split": self.split, "threshold": self.threshold,
                "unit": self.unit, "replicate_keys": self.replicate_keys,
                "median_steps": [[None if not np.isfinite(v) else float(v) for v in row]
                                 for row in self.median_steps],
                "never": self.never.tolist()}
        (d / "analysis" / "phase.json").write_text(json.dumps(meta, indent=1) + "\n")
        paths = [d / "figures" / "phase_steps.png"]
        figs = [self.plot()]
        if self.y_key is not None:
            paths += [d / "figures" / "phase_heatmap_steps.png",
                      d / "figures" / "phase_heatmap_final.png"]
            figs += [self.plot_heatmap("steps"), self.plot_heatmap("final")]
        for fig, path in zip(figs, paths):
            fig.savefig(path, dpi=110)
            plt.close(fig)
        return paths


def _sort_values(values: list) -> list:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _key_json(v) -> str:
    return json.dumps(v, sort_keys=True)


def run(sweep_dir: str | Path, *, split: str | None = None, threshold: float = 0.95,
        x: str | None = None, y: str | None = None, unit: str = "steps") -> PhaseResult:
    """Phase-diagram data of a sweep directory (see the module docstring)."""
    d = Path(sweep_dir)
    if not (d / INDEX_FILE).exists() or not (d / SPEC_FILE).exists():
        raise SweepError(f"'{d}' is not a sweep directory (no {SPEC_FILE} / {INDEX_FILE}); "
                         "make one with: groklab sweep SPEC --out DIR")
    if unit not in ("steps", "epochs"):
        raise SweepError(f"unknown unit '{unit}'; units: steps, epochs")
    if not 0 < threshold <= 1:
        raise SweepError(f"threshold must lie in (0, 1], got {threshold}")
    rows = read_index(d)
    doc = yaml.safe_load((d / SPEC_FILE).read_text()) or {}
    varying = list(doc.get("varying") or [])
    if not varying:
        keys = []
        for r in rows:
            keys += [k for k in r["overrides"] if k not in keys]
        varying = [k for k in keys
                   if len({_key_json(r["overrides"].get(k)) for r in rows}) > 1]
    if not varying:
        raise SweepError(f"sweep '{d}' varies no key; a phase diagram needs at least one axis")
    for key, name in ((x, "--x"), (y, "--y")):
        if key is not None and key not in varying:
            raise SweepError(f"{name} '{key}' is not a swept key of '{d}'; swept keys: "
                             f"{', '.join(varying)}")
    axes = [k for k in varying if k not in REPLICATE_KEYS]
    if x is None:
        x = "task.phi" if "task.phi" in axes else (axes[0] if axes else varying[0])
    if y is None:
        rest = [k for k in axes if k != x]
        y = rest[0] if rest else None
    replicate_keys = [k for k in varying if k not in (x, y)]
    xs = _sort_values(list({_key_json(r["overrides"].get(x)): r["overrides"].get(x)
                            for r in rows}.values()))
    ys = (_sort_values(list({_key_json(r["overrides"].get(y)): r["overrides"].get(y)
                             for r in rows}.values())) if y else [None])
    cells: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        i = [_key_json(v) for v in xs].index(_key_json(r["overrides"].get(x)))
        j = [_key_json(v) for v in ys].index(_key_json(r["overrides"].get(y))) if y else 0
        cells.setdefault((j, i), []).append(r)
    n_rep = max(len(v) for v in cells.values())
    shape = (len(ys), len(xs), n_rep)
    steps, final, length = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    points = np.full(shape, "", dtype=object)
    for (j, i), members in cells.items():
        for k, r in enumerate(members):
            points[j, i, k] = r["point"]
            s, f, n = _point_numbers(d / r["path"], split, threshold, unit)
            steps[j, i, k], final[j, i, k], length[j, i, k] = s, f, n
    return PhaseResult(x_key=x, y_key=y, x_values=xs, y_values=ys if y else [None],
                       split=split or _id_split(d, rows), threshold=threshold, unit=unit,
                       steps=steps, final=final, run_length=length, points=points,
                       replicate_keys=replicate_keys)


def _id_split(d: Path, rows: list[dict]) -> str:
    for r in rows:
        s = RunDir(d / r["path"]).read_summary()
        if s.get("id_split"):
            return s["id_split"]
    return "test_id"


def _point_numbers(run_dir: Path, split: str | None, threshold: float,
                   unit: str) -> tuple[float, float, float]:
    """(steps to threshold or inf/nan, final accuracy, run length) of one point."""
    rd = RunDir(run_dir)
    summary = rd.read_summary()
    rows = rd.read_metrics()
    if not rows:
        return np.nan, np.nan, np.nan
    split = split or summary.get("id_split") or "test_id"
    metric = summary.get("metric", "acc")
    key = f"{metric}/{split}"
    if key not in rows[-1]:
        names = [k.split("/", 1)[1] for k in rows[-1] if k.startswith(f"{metric}/")]
        raise SweepError(f"point '{run_dir.name}' has no split '{split}'; splits: "
                         f"{', '.join(names)}")
    scale = 1.0
    if unit == "epochs":
        tree = rd.read_config_tree()
        batch = tree.get("train", {}).get("batch_size", 0)
        n_train = summary.get("task_info", {}).get("n_train")
        if not n_train:
            raise SweepError(f"point '{run_dir.name}' does not record its training-set size "
                             "(summary task_info.n_train); use --unit steps")
        scale = 1.0 if batch == 0 or batch >= n_train else batch / n_train
    reached = first_step(rows, key, threshold)
    finished = summary.get("status") in FINISHED
    length = float(rows[-1]["step"]) * scale
    if reached is not None:
        s = reached * scale
    else:
        s = np.inf if finished else np.nan
    return s, float(rows[-1][key]), length
