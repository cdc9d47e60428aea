"""Per-class accuracy of a ``classify`` run across checkpoints, and the final confusion matrix.

Question: which classes does a model get right first, and which does it confuse? MNIST-1D's
paper shows the CNN's and humans' errors per digit; in an Omnigrok run the per-class curves
show whether generalization arrives for every digit at once or digit by digit.

Method: at each checkpoint asked for, every row of every evaluated split (the run's training
rows and its probes) is classified; per class c, accuracy = right predictions / rows of class
c (NaN for a class a split lacks). The confusion matrix counts (true, predicted) pairs at the
last checkpoint. Saves ``RUN/analysis/class_accuracy.npz`` (+ ``.json``) and
``RUN/figures/class_accuracy.png`` (per-class test accuracy against step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from groklab.analysis.saving import save_arrays, save_figure
from groklab.analysis.sources import AnalysisError, open_source


@dataclass
class ClassAccuracyResult:
    steps: list[int]
    classes: list[str]
    acc: dict[str, np.ndarray]  # split -> [n_steps, n_classes]
    confusion: dict[str, np.ndarray]  # split -> [n_classes, n_classes] (true, predicted), last step

    def summary(self) -> dict:
        return {"steps": self.steps, "classes": self.classes,
                "final": {s: [None if np.isnan(v) else round(float(v), 4) for v in a[-1]]
                          for s, a in self.acc.items()}}

    def text(self) -> str:
        lines = []
        for split, a in self.acc.items():
            last = a[-1]
            order = [int(i) for i in np.argsort(np.nan_to_num(last, nan=2.0))]
            worst = ", ".join(f"{self.classes[i]} {last[i]:.2f}" for i in order[:3])
            lines.append(f"{split}: per-class accuracy at step {self.steps[-1]} from "
                         f"{np.nanmin(last):.2f} to {np.nanmax(last):.2f}; lowest {worst}")
        return "\n".join(lines)

    def plot(self, split: str = "test"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        split = split if split in self.acc else next(iter(self.acc))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        x = np.maximum(self.steps, 1)
        for c, name in enumerate(self.classes):
            ax.plot(x, self.acc[split][:, c], label=name, lw=1.2)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{split} accuracy")
        ax.set_title(f"per-class {split} accuracy")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        return fig

    def save(self, run_dir) -> list[Path]:
        arrays = {"steps": np.asarray(self.steps), **{f"acc_{s}": a for s, a in self.acc.items()},
                  **{f"confusion_{s}": m for s, m in self.confusion.items()}}
        paths = save_arrays(run_dir, "class_accuracy", arrays, self.summary())
        return [*paths, save_figure(self.plot(), Path(run_dir) / "figures" / "class_accuracy.png")]


@torch.no_grad()
def _predict(model, inputs: torch.Tensor, chunk: int = 4096) -> np.ndarray:
    return torch.cat([model(inputs[i:i + chunk]).argmax(-1)
                      for i in range(0, len(inputs), chunk)]).cpu().numpy()


def run(source, *, task=None, checkpoints="all", device: str = "cpu") -> ClassAccuracyResult:
    src = open_source(source, task=task, checkpoints=checkpoints, device=device)
    objective = src.task.objective
    if objective.kind != "classify":
        raise AnalysisError(f"class_accuracy needs a classify task; '{src.task.name}' is "
                            f"{objective.kind}")
    k = objective.n_classes
    splits = {"train": src.task.train, **src.task.probes}
    acc = {s: np.full((len(src.steps), k), np.nan) for s in splits}
    confusion = {}
    for i, step in enumerate(src.steps):
        model = src.model_at(step).eval()
        for name, split in splits.items():
            y = split.targets.cpu().numpy()
            pred = _predict(model, split.inputs.to(device))
            counts = np.bincount(y, minlength=k)
            right = np.bincount(y[pred == y], minlength=k)
            with np.errstate(invalid="ignore", divide="ignore"):
                acc[name][i] = np.where(counts > 0, right / np.maximum(counts, 1), np.nan)
            if i == len(src.steps) - 1:
                confusion[name] = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    return ClassAccuracyResult(list(src.steps), list(src.task.vocab.tokens[:k]), acc, confusion)
