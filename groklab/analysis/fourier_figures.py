"""Figures of the Fourier progress measures (:class:`groklab.analysis.fourier.FourierResult`'s
``plot``, ``plot_spectra`` and ``plot_neurons``). matplotlib is imported inside each function.
"""

from __future__ import annotations

import numpy as np

from groklab.analysis.fourier_measures import EXPLAINED


def phase_lines(result, ax) -> None:
    colors = {"step_memorized": "tab:red", "step_cleanup": "tab:purple",
              "step_generalized": "tab:green"}
    for key, color in colors.items():
        step = result.phases.get(key)
        if step is not None:
            ax.axvline(step, color=color, ls="--", lw=1, alpha=0.7)


def plot_progress(result):
    """Losses (full, restricted, excluded), accuracies and Fourier sparsity vs step, with the
    memorization / circuit formation / cleanup boundaries as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    x = np.maximum(result.steps, 1)
    ax = axes[0]
    for name, y in [("train", result.train_loss), ("test", result.test_loss),
                    ("restricted", result.restricted_loss), ("excluded", result.excluded_loss)]:
        ax.plot(x, y, label=f"{name} loss")
    ax.set_yscale("log")
    ax.set_title(f"losses (key freqs {', '.join(map(str, result.key_freqs)) or 'none'})")
    ax = axes[1]
    ax.plot(x, result.train_acc, label="train")
    ax.plot(x, result.test_acc, label="test")
    ax.set_title("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax = axes[2]
    ax.plot(x, result.gini_embed, label="Gini, W_E Fourier norms")
    ax.plot(x, result.gini_wl, label="Gini, W_L Fourier norms")
    ax.plot(x, result.embed_key_fraction, label="W_E norm² in key freqs")
    ax.set_title("Fourier sparsity")
    ax.set_ylim(-0.02, 1.02)
    for ax in axes:
        phase_lines(result, ax)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.suptitle(f"Fourier progress measures, {result.op} mod {result.p} "
                 "(dashed: memorized, cleanup starts, test acc 0.99)")
    fig.tight_layout()
    return fig


def plot_spectra(result):
    """Final embedding and neuron-logit map per frequency; embedding spectrum over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    k = np.arange(result.embed_energy.shape[1])
    for ax, energy, title in [(axes[0], result.embed_energy[-1], "W_E"),
                              (axes[1], result.wl_energy[-1], "W_L = W_out W_U")]:
        colors = ["tab:orange" if i in set(result.key_freqs.tolist()) else "tab:blue" for i in k]
        ax.bar(k, energy / max(energy.sum(), 1e-300), color=colors)
        ax.set_title(f"{title}: squared norm per frequency, step {int(result.steps[-1])}")
        ax.set_xlabel("frequency k (orange: key)")
    e = result.embed_energy / np.maximum(result.embed_energy.sum(1, keepdims=True), 1e-300)
    ax = axes[2]
    im = ax.imshow(e.T, aspect="auto", origin="lower", cmap="viridis",
                   extent=[-0.5, len(result.steps) - 0.5, -0.5, e.shape[1] - 0.5])
    ticks = np.linspace(0, len(result.steps) - 1, min(6, len(result.steps))).astype(int)
    ax.set_xticks(ticks, [str(int(result.steps[i])) for i in ticks])
    ax.set_xlabel("step (checkpoint index spacing)")
    ax.set_ylabel("frequency k")
    ax.set_title("W_E squared norm fraction per frequency")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def plot_neurons(result):
    """Neuron clusters by dominant frequency over steps, and the final fraction explained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.maximum(result.steps, 1)
    n = result.neuron_cluster.shape[1]
    ax = axes[0]
    for kf in result.key_freqs:
        ax.plot(x, (result.neuron_cluster == kf).sum(1) / n, label=f"k={int(kf)}")
    ax.plot(x, (result.neuron_cluster == 0).sum(1) / n, "k--", label="residual")
    ax.set_title(f"fraction of neurons per key-frequency cluster (>= {EXPLAINED} explained)")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    phase_lines(result, ax)
    ax = axes[1]
    ax.hist(result.neuron_explained[-1], bins=40, range=(0, 1))
    ax.axvline(EXPLAINED, color="k", ls="--")
    ax.set_title(f"fraction explained by the dominant frequency, step {int(result.steps[-1])}")
    fig.tight_layout()
    return fig
