"""Exact match of an arithmetic run on a grid of operand lengths: where does it extrapolate?

Question: a model trained on operands of at most N digits, does it add (subtract, multiply)
longer numbers? McLeish et al. 2024 show the answer as a heatmap of exact-match accuracy over
(length of a, length of b): learned absolute positions fail as soon as a row is longer than
any trained, Abacus positions with a looped block carry on to several times N.

Method: for every cell (len a, len b) of 1..``max_digits`` (default the task's
``eval_digits``), ``rows`` fresh rows of the task's kind (seeded per cell, the same rows for
every run of the same task) are scored by the span objective's exact match (greedy decoding's
exact match: the whole answer and its ``<eos>``), at the last checkpoint. ``loops`` runs the
looped stack that many times (the model's ``eval_loops``): more passes for longer operands.
Saves ``RUN/analysis/length_grid.npz`` (``exact`` [len a, len b], index 0 = 1 digit) + ``.json``
(means inside and beyond the training lengths, and per longest-operand length) and
``RUN/figures/length_grid.png`` (the heatmap, the training square outlined).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from groklab.analysis.sources import AnalysisError, open_source


@dataclass
class LengthGridResult:
    exact: np.ndarray  # [max_digits, max_digits]: exact match of cell (len a - 1, len b - 1)
    train_digits: tuple[int, int]  # (min, max) operand digits in training
    rows: int
    step: int
    loops: int

    def by_longest(self) -> dict[int, float]:
        """Mean exact match over the cells whose longer operand has n digits, per n."""
        n = self.exact.shape[0]
        longest = np.maximum.outer(np.arange(1, n + 1), np.arange(1, n + 1))
        return {k: float(self.exact[longest == k].mean()) for k in range(1, n + 1)}

    def region(self, inside: bool) -> float:
        """Mean exact match inside the training square, or over every cell beyond it."""
        lo, hi = self.train_digits
        d = np.arange(1, self.exact.shape[0] + 1)
        ok = (d >= lo) & (d <= hi)
        mask = np.outer(ok, ok) if inside else np.maximum.outer(d, d) > hi
        return float(self.exact[mask].mean()) if mask.any() else float("nan")

    def summary(self) -> dict:
        return {"step": self.step, "loops": self.loops, "rows_per_cell": self.rows,
                "train_digits": list(self.train_digits), "max_digits": self.exact.shape[0],
                "exact_inside": round(self.region(True), 4),
                "exact_beyond": round(self.region(False), 4),
                "exact_by_longest": {k: round(v, 4) for k, v in self.by_longest().items()}}

    def text(self) -> str:
        s = self.summary()
        hi = self.train_digits[1]
        far = {k: v for k, v in s["exact_by_longest"].items() if k > hi}
        shown = ", ".join(f"{k}: {v:.2f}" for k, v in list(far.items())[:: max(1, len(far) // 6)])
        return (f"exact match at step {self.step} ({self.loops} loops, {self.rows} rows per "
                f"cell): {s['exact_inside']:.3f} inside the training lengths "
                f"({self.train_digits[0]}..{hi} digits), {s['exact_beyond']:.3f} beyond"
                + (f"; by longer operand {shown}" if shown else ""))

    def plot(self):
        from groklab.analysis.saving import pyplot

        plt = pyplot()
        n = self.exact.shape[0]
        fig, ax = plt.subplots(figsize=(5.6, 4.8))
        im = ax.imshow(self.exact, origin="lower", vmin=0, vmax=1, cmap="viridis",
                       extent=(0.5, n + 0.5, 0.5, n + 0.5))
        lo, hi = self.train_digits
        ax.add_patch(plt.Rectangle((lo - 0.5, lo - 0.5), hi - lo + 1, hi - lo + 1, fill=False,
                                   ec="white", lw=1.5, ls="--"))
        ax.set_xlabel("digits of b")
        ax.set_ylabel("digits of a")
        ax.set_title(f"exact match (training lengths dashed), step {self.step}")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        return fig

    def save(self, run_dir) -> list[Path]:
        from groklab.analysis.saving import save_arrays, save_figure

        run_dir = Path(run_dir)
        paths = save_arrays(run_dir, "length_grid", {"exact": self.exact}, self.summary())
        return [*paths, save_figure(self.plot(), run_dir / "figures" / "length_grid.png")]


@torch.no_grad()
def run(source, *, task=None, rows: int = 20, max_digits: int | None = None,
        loops: int | None = None, device: str = "cpu") -> LengthGridResult:
    from groklab.tasks.addition import grid_split

    src = open_source(source, task=task, checkpoints="last", device=device)
    if src.task.name != "addition":
        raise AnalysisError(f"length_grid needs an arithmetic task (addition); this run's task "
                            f"is '{src.task.name}'")
    cfg = _task_config(src)
    top = cfg.eval_digits if max_digits is None else max_digits
    if not 1 <= top <= cfg.eval_digits or rows < 1:
        raise AnalysisError(f"length_grid: max_digits {top} must be in 1..{cfg.eval_digits} "
                            f"(the task's eval_digits) and rows {rows} >= 1")
    step = src.steps[-1]
    model = _with_loops(src.model_at(step), loops).eval()
    objective = src.task.objective
    exact = np.zeros((top, top))
    for la in range(1, top + 1):
        for lb in range(1, top + 1):
            cell = grid_split(cfg, la, lb, rows).to(device)
            values = objective.evaluate(model, cell, 4096, F.cross_entropy,
                                        contextlib.nullcontext)
            exact[la - 1, lb - 1] = values["exact"]
    used = getattr(getattr(model, "cfg", None), "eval_loops", 1)
    return LengthGridResult(exact, (cfg.min_digits, cfg.max_digits), rows, step, int(used))


def _task_config(src):
    from groklab.tasks.addition import AdditionConfig

    if src.run is not None:
        return src.run.config.task
    info = src.task.info  # a model in memory: the task's parameters from its info
    lo, hi = (int(x) for x in info["train_digits"].split(".."))
    eval_digits = int(info["ood_digits"].split("..")[1]) if ".." in info["ood_digits"] else hi
    return AdditionConfig(op=info["op"], reverse=info["reverse"], min_digits=lo, max_digits=hi,
                          eval_digits=max(eval_digits, hi))


def _with_loops(model, loops: int | None):
    """The same weights with its looped stack run ``loops`` times in eval mode."""
    if loops is None:
        return model
    cfg = getattr(model, "cfg", None)
    if cfg is None or getattr(cfg, "architecture", None) != "transformer":
        raise AnalysisError("length_grid loops= needs a transformer")
    if loops < cfg.n_loops:
        raise AnalysisError(f"length_grid loops {loops} is below the trained n_loops "
                            f"{cfg.n_loops}")
    from groklab.models import HookedTransformer

    new = HookedTransformer(cfg.model_copy(update={"eval_loops": loops}))
    new.load_unique_state_dict(model.unique_state_dict())
    return new.to(next(model.parameters()).device)
