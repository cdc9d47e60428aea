"""Figures of causal tracing (:class:`groklab.analysis.causal_tracing.CausalTracingResult`'s
``plot``, ``plot_over_training`` and ``plot_rome``). matplotlib is imported inside each function.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from groklab.analysis.sources import plot_per_layer


def plot_strength(result, splits: Sequence[str] | None = None):
    """Causal strength at the early checkpoint, the final one, and final minus early (the
    paper's diverging orange-white-green map on [-1, 1]); a row per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(splits or result.splits)
    i0 = result.index_of(result.early_step)
    fig, axes = plt.subplots(len(splits), 3, squeeze=False,
                             figsize=(3.0 + 1.1 * 3 * len(result.slots), 0.6 + 2.8 * len(splits)))
    for row, split in zip(axes, splits):
        s = result.strength(split)
        panels = [(f"step {result.steps[i0]} (early)", s[i0], "Greys", 0),
                  (f"step {result.steps[-1]} (final)", s[-1], "Greys", 0),
                  ("final - early", s[-1] - s[i0], diverging_cmap(), -1)]
        for ax, (title, grid, cmap, vmin) in zip(row, panels):
            im = ax.imshow(grid, origin="lower", vmin=vmin, vmax=1, cmap=cmap, aspect="auto")
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if (vmin == 0 and v > 0.6) else "black")
            ax.set_xticks(range(len(result.slots)), result.slots)
            ax.set_yticks(range(result.n_layers))
            ax.set_title(f"{split}: {title}", fontsize=8)
            fig.colorbar(im, ax=ax, shrink=0.8)
        row[0].set_ylabel("layer (hidden state)")
    for ax in axes[-1]:
        ax.set_xlabel("patched slot")
    fig.suptitle(f"causal strength (noising: fraction of top-1 changed), {result.task}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_over_training(result, split: str | None = None):
    """Causal strength of each slot vs step, one line per layer, with clean accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = split or result.splits[0]
    s = result.strength(split)
    fig, axes = plt.subplots(1, len(result.slots), figsize=(3.6 * len(result.slots), 3.2),
                             squeeze=False)
    for j, (ax, slot) in enumerate(zip(axes[0], result.slots)):
        plot_per_layer(ax, result.steps, s[:, :, j], result.n_layers)
        ax.plot(result.steps, result.clean_accuracy(split), "k--", lw=1, label="clean acc")
        ax.axvline(result.early_step, color="grey", lw=0.6)
        ax.set_title(f"slot {slot}", fontsize=9)
    axes[0][0].set_ylabel("causal strength")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"causal strength over training, {result.task} {split}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_rome(result, splits: Sequence[str] | None = None):
    """ROME NIE heatmaps [layer, position] at the first and last ROME checkpoints; a row
    per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [s for s in (splits or result.splits) if result.has_rome(s)]
    idx = sorted({0, len(result.rome_steps) - 1})
    fig, axes = plt.subplots(len(splits), len(idx), squeeze=False,
                             figsize=(1.5 + 1.1 * len(result.positions) * len(idx),
                                      0.6 + 2.8 * len(splits)))
    labels = [p + ("*" if k in result.noise_positions else "")
              for k, p in enumerate(result.positions)]
    for row, split in zip(axes, splits):
        nie = result.nie(split)
        for ax, i in zip(row, idx):
            im = ax.imshow(nie[i], origin="lower", vmin=0, vmax=1, cmap="Purples",
                           aspect="auto")
            for (a, b), v in np.ndenumerate(nie[i]):
                ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(result.positions)), labels)
            ax.set_yticks(range(result.n_layers))
            ax.set_title(f"{split}: step {result.rome_steps[i]}", fontsize=8)
            fig.colorbar(im, ax=ax, shrink=0.8)
        row[0].set_ylabel("layer (hidden state)")
    for ax in axes[-1]:
        ax.set_xlabel("restored position (* noised)")
    fig.suptitle(f"ROME tracing: normalized indirect effect, {result.task}", fontsize=10)
    fig.tight_layout()
    return fig


def diverging_cmap():
    """The paper's orange - white - green map for differences in [-1, 1]."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("orange_white_green",
                                             ["#e66101", "#ffffff", "#1b9e3a"])
