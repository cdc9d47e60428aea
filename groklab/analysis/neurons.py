"""MLP neurons: which inputs make each one fire, how selective it is for one token, and (modular
tasks) which Fourier frequency it computes, across training (docs/methods.md section 12.2).

TinyStories (Eldan and Li 2023) shows neurons of small models by the tokens that activate them
most; Nanda et al. 2023 group a modular-addition model's neurons by frequency. Here, for every
MLP neuron (``blocks.L.mlp.hook_post``) at the answer position of a fixed sample of a probe
split, at every checkpoint:

* ``top_rows``: the sample rows (indices into ``example_index``) of the k largest activations;
* ``selectivity``: the largest squared correlation, over input positions p and tokens v,
  between the neuron's activation and the indicator "token v at position p" (1: the neuron is a
  function of that one token's presence; 0: uncorrelated with every single token);
  ``best_token`` and ``best_position`` say which; ``token_type`` is that token's type;
* ``frequency`` and ``frequency_explained`` (modular tasks on Z_p): on the full grid of p^2
  inputs, the neuron's dominant frequency and the fraction of its centred 2-D Fourier norm on it
  (the Fourier analysis's own measure); 0 = no frequency explains >= 0.85 of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from groklab.analysis.fourier_measures import (
    EXPLAINED,
    cluster_neurons,
    fourier_basis,
    neuron_frequency_fractions,
)
from groklab.analysis.saving import pyplot, save_arrays, save_figure
from groklab.analysis.sources import (
    AnalysisError,
    open_source,
    probe_sample,
    read_saved,
)
from groklab.tasks.base import TaskData

NAME = "neurons"
TOP_K = 5
SELECTIVE = 0.5  # neurons counted as selective in the summary and figure


def neuron_hooks(model) -> list[str]:
    hooks, cfg = getattr(model, "hook_dict", {}), getattr(model, "cfg", None)
    names = [f"blocks.{l}.mlp.hook_post" for l in range(getattr(cfg, "n_effective_layers", 0))]
    if not names or any(n not in hooks for n in names):
        arch = getattr(cfg, "architecture", type(model).__name__)
        raise AnalysisError(f"neurons needs a transformer with MLP blocks "
                            f"(blocks.L.mlp.hook_post); this model is '{arch}'")
    return names


@torch.no_grad()
def answer_activations(model, tokens: torch.Tensor, answer_pos: torch.Tensor | None):
    """Every layer's MLP neurons at the answer position: [layers, rows, d_mlp] (float64)."""
    names = neuron_hooks(model)
    dev = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(dev), names_filter=names)
    acts = torch.stack([cache[n] for n in names])  # [L, n, pos, d_mlp]
    n = acts.shape[1]
    ap = torch.full((n,), acts.shape[2] - 1) if answer_pos is None else answer_pos
    return acts[:, torch.arange(n, device=dev), ap.to(dev)].double()


def token_selectivity(acts: torch.Tensor, tokens: torch.Tensor, d_vocab: int):
    """acts [L, n, N], tokens [n, P] -> (selectivity, best position, best token), each [L, N]:
    the largest squared correlation with a (position, token) indicator, all at once."""
    n, P = tokens.shape
    X = torch.zeros(n, P * d_vocab, dtype=torch.float64, device=acts.device)
    X[torch.arange(n)[:, None], torch.arange(P) * d_vocab + tokens.to(acts.device)] = 1.0
    X = X - X.mean(0)
    Ac = acts - acts.mean(1, keepdim=True)
    cov = torch.einsum("nf,lnk->lfk", X, Ac)  # [L, features, N]
    denom = X.norm(dim=0)[None, :, None] * Ac.norm(dim=1)[:, None, :]
    r2 = torch.where(denom > 1e-12, cov / denom.clamp_min(1e-12), torch.zeros_like(cov)) ** 2
    best = r2.argmax(1)  # [L, N]
    return (r2.max(1).values.cpu().numpy(), (best // d_vocab).cpu().numpy(),
            (best % d_vocab).cpu().numpy())


def modular_p(task: TaskData) -> int | None:
    if task.name != "modular" or task.info.get("op") in ("s5", "s5conj", "s5aba"):
        return None
    return int(task.info["n_elements"])


@dataclass
class NeuronsResult:
    """Per checkpoint, layer and neuron: ``selectivity``, ``best_token``, ``best_position``,
    ``top_rows`` [..., k]; ``frequency`` and ``frequency_explained`` for modular tasks."""

    task: str
    steps: np.ndarray
    split: str
    measures: dict[str, np.ndarray] = field(repr=False)
    vocab_types: list[str] = field(default_factory=list)
    vocab_tokens: list[str] = field(default_factory=list)
    example_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def has_frequency(self) -> bool:
        return "frequency" in self.measures

    def text(self) -> str:
        sel = self.measures["selectivity"][-1]  # [L, N]
        L, N = sel.shape
        lines = [f"neurons ({self.task}, {len(self.steps)} checkpoints, {L} layers x {N} "
                 f"neurons, answer position of {self.split}):"]
        for l in range(L):
            tok = self.measures["best_token"][-1, l]
            picked = sel[l] >= SELECTIVE
            types = {}
            for t in tok[picked]:
                kind = self.vocab_types[t] if t < len(self.vocab_types) else "?"
                types[kind] = types.get(kind, 0) + 1
            line = (f"  L{l}: median selectivity {np.median(sel[l]):.2f}; {int(picked.sum())} "
                    f"neurons >= {SELECTIVE} (by token type: {types or 'none'})")
            if self.has_frequency:
                f = self.measures["frequency"][-1, l]
                ks, counts = np.unique(f[f > 0], return_counts=True)
                top = sorted(zip(counts, ks), reverse=True)[:5]
                line += "; frequencies " + (", ".join(f"k={k}: {c}" for c, k in top) or "none")
            lines.append(line)
        return "\n".join(lines)

    def plot(self):
        """Selectivity over training (median and selective fraction per layer), and the neurons
        of the last checkpoint by dominant frequency (modular) or by best token's type."""
        plt = pyplot()
        sel = self.measures["selectivity"]
        L = sel.shape[1]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
        for l in range(L):
            axes[0].plot(self.steps, (sel[:, l] >= SELECTIVE).mean(-1), marker=".", ms=3,
                         label=f"L{l} >= {SELECTIVE}")
            axes[0].plot(self.steps, np.median(sel[:, l], -1), ":", label=f"L{l} median")
        axes[0].set_ylim(-0.02, 1.02)
        axes[0].set_xlabel("step")
        axes[0].set_title("token selectivity of neurons", fontsize=9)
        axes[0].legend(fontsize=6, ncol=2)
        if self.has_frequency:
            f = self.measures["frequency"][-1]
            kmax = int(self.measures["frequency"].max()) + 1
            for l in range(L):
                axes[1].bar(np.arange(kmax) + 0.8 * l / L, np.bincount(f[l], minlength=kmax),
                            width=0.8 / L, label=f"L{l}")
            axes[1].set_xlabel(f"dominant frequency k (0: none >= {EXPLAINED})")
            axes[1].set_ylabel("neurons")
        else:
            kinds = sorted(set(self.vocab_types))
            tok = self.measures["best_token"][-1]
            for l in range(L):
                picked = tok[l][sel[-1, l] >= SELECTIVE]
                counts = [sum(self.vocab_types[t] == k for t in picked) for k in kinds]
                axes[1].bar(np.arange(len(kinds)) + 0.8 * l / L, counts, width=0.8 / L,
                            label=f"L{l}")
            axes[1].set_xticks(range(len(kinds)), kinds, fontsize=7)
            axes[1].set_ylabel(f"neurons with selectivity >= {SELECTIVE}")
        axes[1].set_title(f"step {int(self.steps[-1])}", fontsize=9)
        axes[1].legend(fontsize=7)
        fig.suptitle(f"MLP neurons, {self.task}", fontsize=10)
        fig.tight_layout()
        return fig

    def save(self, run_dir: str | Path) -> list[Path]:
        """RUN/analysis/neurons.npz (+ .json) and RUN/figures/neurons.png."""
        run_dir = Path(run_dir)
        sel = self.measures["selectivity"][-1]
        order = np.argsort(-sel, axis=None)[:20]
        most = []
        for i in order:  # the most selective neurons of the last checkpoint, for the report
            l, k = np.unravel_index(i, sel.shape)
            t = int(self.measures["best_token"][-1, l, k])
            most.append({"neuron": f"L{l}N{k}", "selectivity": round(float(sel[l, k]), 3),
                         "token": self.vocab_tokens[t] if t < len(self.vocab_tokens) else t,
                         "position": int(self.measures["best_position"][-1, l, k])})
        meta = {"task": self.task, "split": self.split, "steps": self.steps.tolist(),
                "vocab_types": self.vocab_types, "vocab_tokens": self.vocab_tokens,
                "most_selective": most, "hook": "blocks.L.mlp.hook_post at the answer position"}
        arrays = {"steps": self.steps, "example_index": self.example_index, **self.measures}
        paths = save_arrays(run_dir, NAME, arrays, meta)
        paths.append(save_figure(self.plot(), run_dir / "figures" / f"{NAME}.png"))
        return paths

    @classmethod
    def load(cls, run_dir: str | Path) -> "NeuronsResult":
        meta, z = read_saved(run_dir, NAME, "--neurons")
        try:
            return cls(meta["task"], z["steps"], meta["split"],
                       {k: v for k, v in z.items() if k not in ("steps", "example_index")},
                       meta["vocab_types"], meta["vocab_tokens"], z["example_index"])
        except (KeyError, TypeError) as e:
            raise AnalysisError(f"'{run_dir}/analysis/{NAME}' lacks {e}; rerun `groklab analyze "
                                f"{run_dir} --neurons` to rewrite it") from None


def run(source, *, task: TaskData | None = None, checkpoints="all", split: str | None = None,
        n_examples: int = 300, seed: int = 0, top_k: int = TOP_K,
        device: str = "cpu") -> NeuronsResult:
    """Neuron measures at every checkpoint asked for (or of one model with ``task``)."""
    src = open_source(source, task=task, checkpoints=checkpoints, device=device)
    task = src.task
    split, ex, idx = probe_sample(task, split, n_examples, seed)
    p = modular_p(task)
    if p is not None:
        from groklab.analysis.fourier import grid_inputs

        basis, freqs, _ = fourier_basis(p)
        grid, grid_ap = grid_inputs(task)
    per: dict[str, list[np.ndarray]] = {}
    for step in src.steps:
        model = src.model_at(step)
        acts = answer_activations(model, ex.inputs, ex.answer_pos)  # [L, n, N]
        sel, pos, tok = token_selectivity(acts, ex.inputs, len(task.vocab))
        k = min(top_k, acts.shape[1])
        top = acts.topk(k, dim=1).indices.permute(0, 2, 1)  # [L, N, k]
        m = {"selectivity": sel.astype(np.float32), "best_position": pos.astype(np.int32),
             "best_token": tok.astype(np.int32), "top_rows": top.cpu().numpy().astype(np.int32),
             "top_values": acts.topk(k, dim=1).values.permute(0, 2, 1).cpu().numpy()
             .astype(np.float32)}
        if p is not None:
            g = answer_activations(model, grid, grid_ap)  # [L, p^2, N]
            clusters = [cluster_neurons(neuron_frequency_fractions(a.reshape(p, p, -1), basis,
                                                                   freqs)) for a in g]
            m["frequency"] = np.stack([c[0] for c in clusters])
            m["frequency_explained"] = np.stack([c[1] for c in clusters])
        for key, v in m.items():
            per.setdefault(key, []).append(v)
    return NeuronsResult(task.name, np.asarray(src.steps, dtype=np.int64), split,
                         {k: np.stack(v) for k, v in per.items()}, list(task.vocab.types),
                         list(task.vocab.tokens), idx)
