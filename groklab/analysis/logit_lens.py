"""Logit lens across training: which token does each hidden state already decode to?

Question (Wang et al. 2024, section 3.3 and App. D): where does the model hold the bridge
entity of a two-hop query, or the attribute values of a comparison, and when during training
does that state form?

Method (docs/methods.md section 1; traps 1-4, 10): for every layer L = 0..n_layers (hidden state L
= TL ``blocks.{L}.hook_resid_pre`` = HF ``hidden_states[L]``; L = n_layers is the last
``resid_post``) and every position, put the state through the final LayerNorm with its own
statistics (``ActivationCache.accumulated_resid(apply_ln=True)``) and the unembedding
(``model.unembed``: tied W_U, no bias, full vocabulary). The rank of a target token is the
0-based number of tokens with a strictly larger logit; MRR = mean 1/(rank+1), Recall@k =
fraction with rank < k (ties count in token-id order, as a stable sort gives). Layer
n_layers reproduces the model's own logits.

Targets (each ranked at every position; the paper reads it at the position in brackets):
composition -- ``bridge`` entity [r1], ``r2`` [r2], ``answer`` [last]; comparison and complex --
``v1`` = value token of e1 [e1], ``v2`` [e2], ``labels`` = the three label tokens, the label
space [attribute], ``answer`` [last]; any other task -- ``answer``. Examples: 300 rows of each split
drawn once with a fixed seed and reused at every checkpoint, so curves over training compare
the same items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from groklab.analysis.saving import save_arrays, save_figure
from groklab.analysis.sources import (
    AnalysisError,
    default_splits,
    open_source,
    plot_per_layer,
    read_saved,
    require_transformer,
    sample_examples,
)
from groklab.tasks.base import Split, TaskData

NAME = "logit_lens"


def position_labels(task: TaskData) -> list[str]:
    """Names of the input positions of an inferred/comparison row."""
    P = task.seq_len
    if task.name == "composition":
        return ["h", "r1", "r2"][:P]
    if task.name in ("comparison", "complex"):
        return ["a", "e1", "e2"] if P == 3 else ["a", "q", "e1", "mask", "e2"]
    if task.name == "family":
        return ["subject", "N", "M", "P", "Q", "hop1", "hop2", "ask"]
    return [f"p{i}" for i in range(P)]


def lens_targets(task: TaskData, ex: Split) -> dict[str, tuple[np.ndarray, int]]:
    """target name -> (token ids [n, k], the position the paper reads it at)."""
    answer_pos = int(np.bincount(ex.answer_pos.numpy()).argmax())
    out = {}
    if task.name == "composition" and "bridge" in ex.meta:
        out["bridge"] = (ex.meta["bridge"][:, None], 1)  # entity token id == entity id
        out["r2"] = (ex.inputs[:, 2].numpy()[:, None], 2)
    elif task.name in ("comparison", "complex") and "v1" in ex.meta:
        vals = task.vocab.ids_of_type("value")
        labels = task.vocab.ids_of_type("label")
        e1_pos, e2_pos = (1, 2) if task.seq_len == 3 else (2, 4)
        out["v1"] = (vals[ex.meta["v1"]][:, None], e1_pos)
        out["v2"] = (vals[ex.meta["v2"]][:, None], e2_pos)
        if len(labels) == 3:  # compact: one shared label set
            lab = np.broadcast_to(labels, (len(ex), 3))
        else:  # paper: per-attribute labels <attr_k_0..2>
            lab = labels[3 * ex.meta["attribute"][:, None] + np.arange(3)]
        out["labels"] = (np.ascontiguousarray(lab), 0)
    out["answer"] = (ex.targets.numpy()[:, None], answer_pos)
    return out


def stable_rank(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``target`` [...] in ``logits`` [..., d_vocab]: its position in a stable
    descending sort (the paper sorts a Python list), i.e. larger logits first and ties in
    token-id order, so a flat state never scores rank 0 and rank 0 == argmax."""
    tl = logits.gather(-1, target.unsqueeze(-1))
    ids = torch.arange(logits.shape[-1], device=logits.device)
    return ((logits > tl) | ((logits == tl) & (ids < target.unsqueeze(-1)))).sum(-1)


@torch.no_grad()
def lens_ranks(model, tokens: torch.Tensor, targets: dict[str, np.ndarray]) -> dict:
    """target -> 0-based ranks [n_layers + 1, pos, n, k] of its tokens at every state."""
    n = model.cfg.n_effective_layers
    names = {f"blocks.{l}.hook_resid_pre" for l in range(n)} | {f"blocks.{n - 1}.hook_resid_post"}
    dev = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(dev), names_filter=lambda nm: nm in names)
    states = cache.accumulated_resid(apply_ln=True)  # [L+1, batch, pos, d_model]
    out = {name: [] for name in targets}
    for layer_states in states:  # one layer at a time: [batch, pos, d_vocab] logits
        logits = model.unembed(layer_states)
        for name, tok in targets.items():
            t = torch.as_tensor(tok, device=dev)  # [batch, k]
            idx = t[:, None, :].expand(-1, logits.shape[1], -1)
            lg = logits.unsqueeze(-2).expand(-1, -1, idx.shape[-1], -1)
            rank = stable_rank(lg, idx)  # [batch, pos, k]
            out[name].append(rank.permute(1, 0, 2).cpu().numpy().astype(np.int32))
    return {name: np.stack(v) for name, v in out.items()}


@dataclass
class LogitLensResult:
    """Ranks of the targets at every (checkpoint, layer, position).

    ``ranks["split.target"]`` is [checkpoint, layer (0..n_layers), position, example, k];
    :meth:`mrr` and :meth:`recall` reduce it to [checkpoint, layer, position].
    """

    task: str
    steps: np.ndarray
    positions: list[str]
    targets: dict[str, int]  # target -> position it is read at
    splits: list[str]
    ranks: dict[str, np.ndarray] = field(repr=False)
    example_index: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    ks: tuple[int, ...] = (1, 5, 10)

    @property
    def n_layers(self) -> int:
        return next(iter(self.ranks.values())).shape[1] - 1

    def mrr(self, split: str, target: str) -> np.ndarray:
        return (1.0 / (self.ranks[f"{split}.{target}"] + 1.0)).mean(axis=(-2, -1))

    def recall(self, split: str, target: str, k: int) -> np.ndarray:
        return (self.ranks[f"{split}.{target}"] < k).mean(axis=(-2, -1))

    def text(self) -> str:
        """Per split and target: the layer and position where it decodes best at the end."""
        lines = [f"logit lens ({self.task}, {len(self.steps)} checkpoints, "
                 f"{self.n_layers + 1} layers x {len(self.positions)} positions):"]
        for key in self.ranks:
            split, target = key.split(".", 1)
            m = self.mrr(split, target)[-1]  # [layer, position]
            layer, pos = np.unravel_index(int(np.argmax(m)), m.shape)
            lines.append(f"  {split} {target}: best MRR {m.max():.2f} at layer {layer}, "
                         f"position {self.positions[pos]}")
        return "\n".join(lines)

    def has(self, split: str, target: str) -> bool:
        return f"{split}.{target}" in self.ranks

    # --- figures ---------------------------------------------------------------------------
    def plot(self, splits: Sequence[str] | None = None, checkpoint: int = -1):
        """Layer x position heatmaps of MRR at one checkpoint: a row per split, a panel per
        target."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        splits = list(splits or self.splits)
        names = list(self.targets)
        fig, axes = plt.subplots(len(splits), len(names), squeeze=False,
                                 figsize=(1.2 + 0.9 * len(self.positions) * len(names),
                                          0.6 + 2.6 * len(splits)))
        im = None
        for row, split in zip(axes, splits):
            for ax, t in zip(row, names):
                if not self.has(split, t):
                    ax.axis("off")
                    continue
                grid = self.mrr(split, t)[checkpoint]
                im = ax.imshow(grid, origin="lower", vmin=0, vmax=1, cmap="viridis",
                               aspect="auto")
                for (i, j), v in np.ndenumerate(grid):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 else "black")
                ax.set_xticks(range(len(self.positions)), self.positions)
                ax.set_yticks(range(self.n_layers + 1))
                ax.set_title(f"{split}: {t} (read at {self.positions[self.targets[t]]})",
                             fontsize=8)
            row[0].set_ylabel("layer (hidden state)")
        if im is not None:
            fig.colorbar(im, ax=axes.ravel().tolist(), label="MRR", shrink=0.8)
        fig.suptitle(f"logit lens MRR, {self.task}, step {int(self.steps[checkpoint])}",
                     fontsize=10)
        return fig

    def plot_over_training(self, split: str | None = None):
        """MRR of each target at its position vs step, one line per layer."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        split = split or self.splits[0]
        names = [t for t in self.targets if self.has(split, t)]
        fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
        for ax, t in zip(axes[0], names):
            m = self.mrr(split, t)[:, :, self.targets[t]]  # [C, L+1]
            plot_per_layer(ax, self.steps, m, self.n_layers)
            ax.set_title(f"{t} at {self.positions[self.targets[t]]}", fontsize=9)
        axes[0][0].set_ylabel("MRR")
        axes[0][-1].legend(fontsize=7, ncol=2)
        fig.suptitle(f"logit lens over training, {self.task} {split}", fontsize=10)
        fig.tight_layout()
        return fig

    # --- persistence -----------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> list[Path]:
        """RUN/analysis/logit_lens.npz (+ .json) and RUN/figures/logit_lens_*.png."""

        run_dir = Path(run_dir)
        arrays = {"steps": self.steps}
        for key in self.ranks:
            split, target = key.split(".")
            arrays[f"{key}.ranks"] = self.ranks[key]
            arrays[f"{key}.mrr"] = self.mrr(split, target)
            for k in self.ks:
                arrays[f"{key}.recall@{k}"] = self.recall(split, target, k)
        for split, idx in self.example_index.items():
            arrays[f"{split}.example_index"] = idx
        meta = {"task": self.task, "positions": self.positions, "targets": self.targets,
                "splits": self.splits, "ks": list(self.ks), "steps": self.steps.tolist(),
                "layers": "hidden state L = blocks.L.hook_resid_pre; L = n_layers: final",
                "rank": "0-based; MRR = mean 1/(rank+1)"}
        paths = save_arrays(run_dir, NAME, arrays, meta)
        paths.append(save_figure(self.plot(), run_dir / "figures" / f"{NAME}.png"))
        paths.append(save_figure(self.plot_over_training(),
                               run_dir / "figures" / f"{NAME}_over_training.png"))
        return paths

    @classmethod
    def load(cls, run_dir: str | Path) -> "LogitLensResult":
        meta, z = read_saved(run_dir, NAME, "--logit-lens")
        ranks = {k[: -len(".ranks")]: v for k, v in z.items() if k.endswith(".ranks")}
        idx = {k.split(".")[0]: v for k, v in z.items() if k.endswith(".example_index")}
        try:
            return cls(meta["task"], z["steps"], meta["positions"], meta["targets"],
                       meta["splits"], ranks, idx, tuple(meta["ks"]))
        except (KeyError, TypeError) as e:
            raise AnalysisError(f"'{run_dir}/analysis/{NAME}' lacks {e}; rerun `groklab analyze "
                                f"{run_dir} --logit-lens` to rewrite it") from None


def run(
    source,
    *,
    task: TaskData | None = None,
    checkpoints="all",
    splits: Sequence[str] | None = None,
    n_examples: int = 300,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    device: str = "cpu",
) -> LogitLensResult:
    """Logit lens of a run (every checkpoint asked for) or of one model (``task`` needed)."""
    src = open_source(source, task=task, checkpoints=checkpoints, device=device)
    task = src.task
    splits = list(splits) if splits else default_splits(task)
    examples = {s: sample_examples(task.probes[s], n_examples, seed) for s in splits}
    targets = {s: lens_targets(task, ex) for s, (ex, _) in examples.items()}
    read_at = {t: pos for s in splits for t, (_, pos) in targets[s].items()}
    per_step: dict[str, list[np.ndarray]] = {}
    for step in src.steps:
        model = src.model_at(step)
        require_transformer(model, "the logit lens")
        for s in splits:
            ex, _ = examples[s]
            ranks = lens_ranks(model, ex.inputs, {t: tok for t, (tok, _) in targets[s].items()})
            for t, r in ranks.items():
                per_step.setdefault(f"{s}.{t}", []).append(r)
    return LogitLensResult(
        task=task.name,
        steps=np.asarray(src.steps, dtype=np.int64),
        positions=position_labels(task),
        targets=read_at,
        splits=splits,
        ranks={k: np.stack(v) for k, v in per_step.items()},
        example_index={s: idx for s, (_, idx) in examples.items()},
        ks=tuple(ks),
    )
