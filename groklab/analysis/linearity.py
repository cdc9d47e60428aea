"""Layer linearity: how close is each transformer block to a linear map of the residual stream,
and how does that change over training? ("Your Transformer is Secretly Linear", Razzhigaev et
al. 2024, arXiv 2405.12250; docs/methods.md section "Layer linearity").

Method, per checkpoint, split and pair of consecutive hidden states (X = hidden state L =
``blocks.L.hook_resid_pre``, Y = hidden state L + 1; the last Y is the final ``resid_post``,
before ``ln_final``), with the rows of X and Y the same tokens:

* centre every column of X and Y (subtract the mean over tokens), divide each matrix by its
  Frobenius norm;
* A = pinv(X) Y, the least-squares linear map (a general one, not an orthogonal Procrustes
  rotation: trap 15), in float64;
* linearity = 1 - ||X A - Y||_F^2, in [0, 1] (1: the block is exactly linear on these tokens);
* the residual-removed variant does the same with Y - X (the block's own update, which the
  skip connection would otherwise dominate) in place of Y.

Tokens: the paper stacks every token of its text chunks; here ``tokens`` stacks every position
up to the answer of each probe row (padding after the answer is left out), and ``answer`` keeps
only the answer position. A score is undefined (NaN) where there are no more rows than
d_model, since then any X of full rank maps onto any Y exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from groklab.analysis.saving import pyplot, save_arrays, save_figure
from groklab.analysis.sources import (
    AnalysisError,
    default_splits,
    open_source,
    plot_per_layer,
    read_saved,
    require_transformer,
    sample_examples,
)
from groklab.tasks.base import TaskData

NAME = "linearity"
VARIANTS = ("linearity", "residual_removed")
WHERE = ("tokens", "answer")


def linearity_score(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Linearity of the map X -> Y, X and Y [..., n_tokens, d] (a leading batch of layer pairs
    is computed at once): centred, Frobenius-normalised, least squares, 1 - residual."""
    X, Y = X.double(), Y.double()
    X = X - X.mean(-2, keepdim=True)
    Y = Y - Y.mean(-2, keepdim=True)
    tiny = torch.finfo(torch.float64).tiny
    X = X / torch.linalg.matrix_norm(X, keepdim=True).clamp_min(tiny)
    Y = Y / torch.linalg.matrix_norm(Y, keepdim=True).clamp_min(tiny)
    A = torch.linalg.pinv(X) @ Y
    return 1.0 - (X @ A - Y).pow(2).sum((-2, -1))


def state_names(n_layers: int) -> list[str]:
    """Hidden states 0..n_layers: each block's input, then the last block's output."""
    return [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"]


@torch.no_grad()
def layer_scores(model, tokens: torch.Tensor, answer_pos: torch.Tensor | None) -> dict:
    """(variant, where) -> scores [n_layers] for the pairs (state L, state L + 1)."""
    n = model.cfg.n_effective_layers
    names = state_names(n)
    dev = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(dev), names_filter=lambda nm: nm in names)
    states = torch.stack([cache[nm] for nm in names])  # [L + 1, batch, pos, d]
    batch, pos, d = states.shape[1:]
    ap = (torch.full((batch,), pos - 1) if answer_pos is None else answer_pos).to(dev)
    keep = torch.arange(pos, device=dev)[None, :] <= ap[:, None]  # [batch, pos]
    rows = {"tokens": states[:, keep], "answer": states[:, torch.arange(batch, device=dev), ap]}
    out = {}
    for where, S in rows.items():  # S [L + 1, rows, d]
        X, Y = S[:-1], S[1:]
        enough = S.shape[1] > d
        for variant, target in zip(VARIANTS, (Y, Y - X)):
            s = linearity_score(X, target).cpu().numpy()
            out[variant, where] = s if enough else np.full(n, np.nan)
    return out


@dataclass
class LinearityResult:
    """``scores["split.variant.where"]`` [checkpoint, layer pair] (pair L: state L -> L + 1)."""

    task: str
    steps: np.ndarray
    splits: list[str]
    scores: dict[str, np.ndarray] = field(repr=False)
    n_rows: dict[str, int] = field(default_factory=dict)  # split.where -> token rows used

    @property
    def n_layers(self) -> int:
        return next(iter(self.scores.values())).shape[1]

    def get(self, split: str, variant: str = "linearity", where: str = "tokens") -> np.ndarray:
        return self.scores[f"{split}.{variant}.{where}"]

    def text(self) -> str:
        lines = [f"layer linearity ({self.task}, {len(self.steps)} checkpoints, "
                 f"{self.n_layers} layer pairs; all tokens up to the answer):"]
        for split in self.splits:
            for variant in VARIANTS:
                s = self.get(split, variant)
                last = " ".join(f"{v:.3f}" for v in s[-1])
                line = f"  {split} {variant}: final [{last}]"
                if len(self.steps) > 1 and np.isfinite(s).any():
                    change = np.abs(s[-1] - s[0])
                    if np.isfinite(change).any():
                        layer = int(np.nanargmax(change))
                        line += (f"; largest change at pair {layer}->{layer + 1}: "
                                 f"{s[0, layer]:.3f} -> {s[-1, layer]:.3f}")
                lines.append(line)
        return "\n".join(lines)

    # --- figures ---------------------------------------------------------------------------
    def plot_over_training(self, split: str | None = None):
        """Each variant vs step, one line per layer pair."""
        plt = pyplot()
        split = split or self.splits[0]
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.3), squeeze=False)
        for ax, variant in zip(axes[0], VARIANTS):
            plot_per_layer(ax, self.steps, self.get(split, variant), self.n_layers)
            ax.set_title(variant.replace("_", "-"), fontsize=9)
        axes[0][0].set_ylabel("linearity score")
        axes[0][-1].legend([f"{l}->{l + 1}" for l in range(self.n_layers)], fontsize=7, ncol=2)
        fig.suptitle(f"layer linearity over training, {self.task} {split}", fontsize=10)
        fig.tight_layout()
        return fig

    def plot_layers(self, split: str | None = None):
        """Score against depth at the first and the last checkpoint."""
        plt = pyplot()
        split = split or self.splits[0]
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.1), squeeze=False)
        x = np.arange(self.n_layers)
        ends = sorted({0, len(self.steps) - 1})
        for ax, variant in zip(axes[0], VARIANTS):
            for where, style in zip(WHERE, ("-", ":")):
                for c in ends:
                    ax.plot(x, self.get(split, variant, where)[c], style, marker="o", ms=3,
                            label=f"step {int(self.steps[c])}, {where}")
            ax.set_xticks(x, [f"{l}->{l + 1}" for l in x])
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(variant.replace("_", "-"), fontsize=9)
            ax.set_xlabel("hidden state pair")
        axes[0][0].set_ylabel("linearity score")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"layer linearity by depth, {self.task} {split}", fontsize=10)
        fig.tight_layout()
        return fig

    # --- persistence -----------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> list[Path]:
        """RUN/analysis/linearity.npz (+ .json) and RUN/figures/linearity*.png."""
        run_dir = Path(run_dir)
        meta = {"task": self.task, "splits": self.splits, "steps": self.steps.tolist(),
                "variants": list(VARIANTS), "where": list(WHERE), "n_rows": self.n_rows,
                "pairs": "pair L: blocks.L.hook_resid_pre -> the next hidden state (the last: "
                         "final resid_post)",
                "final": {k: [None if np.isnan(v) else round(float(v), 4) for v in s[-1]]
                          for k, s in self.scores.items()}}
        paths = save_arrays(run_dir, NAME, {"steps": self.steps, **self.scores}, meta)
        figs = run_dir / "figures"
        paths.append(save_figure(self.plot_over_training(), figs / f"{NAME}.png"))
        paths.append(save_figure(self.plot_layers(), figs / f"{NAME}_by_layer.png"))
        return paths

    @classmethod
    def load(cls, run_dir: str | Path) -> "LinearityResult":
        meta, z = read_saved(run_dir, NAME, "--linearity")
        try:
            return cls(meta["task"], z["steps"], meta["splits"],
                       {k: v for k, v in z.items() if k != "steps"}, meta.get("n_rows", {}))
        except (KeyError, TypeError) as e:
            raise AnalysisError(f"'{run_dir}/analysis/{NAME}' lacks {e}; rerun `groklab analyze "
                                f"{run_dir} --linearity` to rewrite it") from None


def run(
    source,
    *,
    task: TaskData | None = None,
    checkpoints="all",
    splits: Sequence[str] | None = None,
    n_examples: int = 300,
    seed: int = 0,
    device: str = "cpu",
) -> LinearityResult:
    """Linearity of every block at every checkpoint asked for (or of one model with ``task``)."""
    src = open_source(source, task=task, checkpoints=checkpoints, device=device)
    task = src.task
    splits = list(splits) if splits else default_splits(task)
    unknown = [s for s in splits if s not in task.probes]
    if unknown:
        raise AnalysisError(f"no split {unknown} in task '{task.name}'; "
                            f"available: {', '.join(task.probes)}")
    examples = {s: sample_examples(task.probes[s], n_examples, seed)[0] for s in splits}
    per: dict[str, list[np.ndarray]] = {}
    n_rows: dict[str, int] = {}
    for step in src.steps:
        model = src.model_at(step)
        require_transformer(model, "linearity")
        for s, ex in examples.items():
            ap = ex.answer_pos
            for (variant, where), v in layer_scores(model, ex.inputs, ap).items():
                per.setdefault(f"{s}.{variant}.{where}", []).append(v)
            pos = ex.inputs.shape[1]
            n_rows[f"{s}.tokens"] = int(len(ex) * pos if ap is None else (ap + 1).sum())
            n_rows[f"{s}.answer"] = len(ex)
    return LinearityResult(task.name, np.asarray(src.steps, dtype=np.int64), splits,
                           {k: np.stack(v) for k, v in per.items()}, n_rows)
