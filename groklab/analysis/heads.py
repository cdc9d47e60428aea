"""Attention heads by what they attend to: relative position or token content, and when each
kind of head appears during training (docs/methods.md section "Attention-head classes").

TinyStories (Eldan and Li 2023) describes one-layer models whose heads split into distance-based
heads and semantic heads, found by inspection. Here every head of every checkpoint gets numbers
and a class, from the attention patterns (``blocks.L.attn.hook_pattern``) on a fixed sample of a
probe split. Over the queries q that see at least two keys (1 <= q <= the row's answer position):

* ``by_distance[d]``: mean attention from q to key q - d (the head's profile over relative
  distance); ``prev`` = ``by_distance[1]``, the previous-token score of TransformerLens's head
  detector, and ``prev_above_uniform`` = (prev - u) / (1 - u), u the score of uniform attention
  on the same rows (0.42 on three-token rows; 0 for long ones); ``entropy``: the attention entropy of each query divided by its maximum log(q + 1)
  (0: one key, 1: uniform), averaged, and ``entropy_by_distance[d]``, the same for queries d
  tokens past the first token;
* ``position_explained``: how much of the pattern a position-only model explains. The model is
  the mean pattern M[q, k] over the examples; position_explained = 1 - sum ||A_q - M_q||^2 /
  sum ||A_q - U_q||^2 over examples and queries, U_q the uniform pattern over q + 1 keys (1: the
  pattern is the same for every input, 0: position predicts no more than uniform attention);
  ``content_rms`` = sqrt(mean ||A_q - M_q||^2), the same deviation in absolute terms (a
  near-uniform head has a noisy ratio but a tiny content_rms);
* ``successor`` (tasks whose number tokens are the integers 0..n-1): the succession score of
  Gould et al. 2023: each number's effective embedding (W_E plus MLP0 of it, attention skipped)
  through the layer's ln1, the head's OV circuit, ln_final and W_U; the fraction of numbers t < n-1
  whose top logit among the number tokens is t + 1.
* ``induction`` and ``duplicate`` (models with n_ctx >= 6): on rows of n random tokens repeated
  once ([r, r], TransformerLens's test for induction heads), the mean attention from each query
  in the second copy to the token after that token's first occurrence (induction: q - n + 1) and
  to the first occurrence itself (duplicate-token: q - n), each rescaled above uniform attention
  like ``prev``. Random repeats are outside most tasks' data: the score says what a head does
  with a repeat, whether or not the task ever shows one.

Class of a head, first rule that holds: ``successor`` (score >= 0.4, Gould et al.'s cut),
``induction`` and ``duplicate-token`` (score above uniform >= 0.5),
``previous-token`` (prev_above_uniform >= 0.5: halfway from uniform to only the previous token),
``positional`` (position_explained >= 0.8 or content_rms < 0.05: a distance head, or one whose
pattern barely moves), else ``content`` (the pattern moves with the tokens: a semantic head).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from groklab.analysis.saving import pyplot, save_arrays, save_figure
from groklab.analysis.sources import (
    AnalysisError,
    open_source,
    probe_sample,
    read_saved,
)
from groklab.tasks.base import TaskData

NAME = "heads"
CLASSES = ("successor", "induction", "duplicate-token", "previous-token", "positional",
           "content")
REPEAT = 0.5
SUCCESSOR, PREV, POSITIONAL, CONTENT_RMS = 0.4, 0.5, 0.8, 0.05
MEASURES = ("prev", "entropy", "position_explained", "content_rms", "successor", "induction",
            "duplicate")


def require_heads(model) -> int:
    """The number of layers; an :class:`AnalysisError` for a model without attention heads."""
    cfg = getattr(model, "cfg", None)
    hooks = getattr(model, "hook_dict", {})
    if "blocks.0.attn.hook_pattern" not in hooks:
        arch = getattr(cfg, "architecture", type(model).__name__)
        raise AnalysisError(f"heads needs a model with attention heads "
                            f"(blocks.L.attn.hook_pattern); this model is '{arch}'")
    return cfg.n_effective_layers


@torch.no_grad()
def pattern_measures(patterns: torch.Tensor, answer_pos: torch.Tensor | None) -> dict:
    """Measures of attention patterns [layers, examples, heads, query, key] (causal), each
    [layers, heads] (``by_distance`` and ``entropy_by_distance``: [layers, heads, distance])."""
    A = patterns.double()
    L, n, H, P, _ = A.shape
    q = torch.arange(P, device=A.device)
    ap = torch.full((n,), P - 1, device=A.device) if answer_pos is None else answer_pos.to(A.device)
    valid = (q[None, :] <= ap[:, None]) & (q[None, :] >= 1)  # [n, q]: queries with >= 2 keys
    if not valid.any():
        raise AnalysisError("heads needs rows with at least two positions before the answer")
    w = valid.double()[None, :, None, :]  # [1, n, 1, q]
    causal = (q[None, :] <= q[:, None]).double()  # [q, k]
    dist = (q[:, None] - q[None, :])  # [q, k]: q - k
    one_hot_d = (dist[None] == q[:, None, None]).double() * causal  # [d, q, k]
    at_d = torch.einsum("lnhqk,dqk->lnhqd", A, one_hot_d)  # attention from q to q - d
    has_d = torch.einsum("dqk->qd", one_hot_d)  # [q, d]: does q have a key at distance d
    wd = w[..., None] * has_d  # [1, n, 1, q, d]
    by_distance = (at_d * wd).sum((1, 3)) / wd.sum((1, 3)).clamp_min(1)
    ent = -(A * A.clamp_min(1e-30).log()).sum(-1) / (q + 1).double().log().clamp_min(1e-30)
    entropy = (ent * w).sum((1, 3)) / w.sum((1, 3))
    # "queries d tokens past the first": d = q, the number of keys minus one
    ent_d = (ent * w).sum(1) / w.sum(1).clamp_min(1)  # [L, H, q]
    M = (A * w[..., None]).sum(1, keepdim=True) / w[..., None].sum(1, keepdim=True).clamp_min(1)
    U = causal / causal.sum(-1, keepdim=True)
    content = (((A - M) ** 2).sum(-1) * w).sum((1, 3))
    total = (((A - U) ** 2).sum(-1) * w).sum((1, 3))
    content_rms = (content / w.sum((1, 3))).sqrt()
    pos_expl = torch.where(total > 1e-12, 1 - content / total.clamp_min(1e-12),
                           torch.ones_like(total))
    # uniform attention's previous-token score on these rows: 1/(q + 1) averaged over queries
    u = float((w[0, :, 0] / (q + 1).double()).sum() / w.sum())
    prev = by_distance[..., 1]
    return {"prev": prev.cpu().numpy(), "prev_above_uniform": ((prev - u) / (1 - u)).cpu().numpy(),
            "entropy": entropy.cpu().numpy(),
            "position_explained": pos_expl.cpu().numpy(), "content_rms": content_rms.cpu().numpy(),
            "by_distance": by_distance.cpu().numpy(), "entropy_by_distance": ent_d.cpu().numpy()}


def number_tokens(task: TaskData) -> np.ndarray | None:
    """Ids of the number tokens in value order, if they are exactly the integers 0..n-1."""
    ids = task.vocab.ids_of_type("number")
    try:
        values = [int(task.vocab.tokens[i]) for i in ids]
    except ValueError:
        return None
    if len(ids) < 3 or sorted(values) != list(range(len(ids))):
        return None
    return ids[np.argsort(values)]


@torch.no_grad()
def successor_scores(model, numbers: np.ndarray) -> np.ndarray:
    """Gould et al.'s succession score of every head [layers, heads]."""
    blocks = model.blocks
    x = model.W_E[torch.as_tensor(numbers, device=model.W_E.device)]
    x = x + blocks[0].mlp(blocks[0].ln2(x))  # effective embedding: MLP0 without attention
    out = []
    for block in blocks:
        a = block.attn
        v = torch.einsum("nd,hde->hne", block.ln1(x), a.W_V) + a.b_V[:, None]
        logits = model.unembed(model.ln_final(torch.einsum("hne,hed->hnd", v, a.W_O)))
        top = logits[..., torch.as_tensor(numbers, device=logits.device)].argmax(-1)  # [h, n]
        succ = torch.arange(1, len(numbers), device=top.device)
        out.append((top[:, :-1] == succ).double().mean(-1).cpu().numpy())
    return np.stack(out)


@torch.no_grad()
def repeat_measures(patterns: torch.Tensor, half: int) -> dict[str, np.ndarray]:
    """Induction and duplicate-token scores [layers, heads], above uniform, from patterns
    [layers, examples, heads, 2 * half, 2 * half] of rows [r, r] with r of ``half`` tokens."""
    A = patterns.double()
    q = torch.arange(half, 2 * half, device=A.device)
    u = float((1.0 / (q + 1).double()).mean())  # uniform attention's score on these queries
    out = {}
    for name, key in (("induction", q - half + 1), ("duplicate", q - half)):
        score = A[..., q, key].mean((1, 3))
        out[name] = ((score - u) / (1 - u)).cpu().numpy()
    return out


def repeat_scores(model, n_layers: int, seed: int, n_rows: int = 64) -> dict[str, np.ndarray]:
    """:func:`repeat_measures` on random repeated rows; NaN when n_ctx < 6 (no room for a
    repeat of three tokens)."""
    cfg = model.cfg
    half = cfg.n_ctx // 2
    if half < 3:
        nan = np.full((n_layers, cfg.n_heads), np.nan)
        return {"induction": nan, "duplicate": nan.copy()}
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, cfg.d_vocab, (n_rows, half), generator=g)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)]
    dev = next(model.parameters()).device
    _, cache = model.run_with_cache(torch.cat([r, r], 1).to(dev), names_filter=names)
    return repeat_measures(torch.stack([cache[nm] for nm in names]), half)


def classify(m: dict[str, np.ndarray]) -> np.ndarray:
    """Class index into :data:`CLASSES` of each head, the first rule that holds."""
    cls = np.full(m["prev"].shape, CLASSES.index("content"))
    nan = np.full(cls.shape, np.nan)  # measures a model could not give (no number tokens, ...)
    for name, hit in reversed([("successor", np.nan_to_num(m.get("successor", nan)) >= SUCCESSOR),
                               ("induction", np.nan_to_num(m.get("induction", nan)) >= REPEAT),
                               ("duplicate-token", np.nan_to_num(m.get("duplicate", nan)) >= REPEAT),
                               ("previous-token", m["prev_above_uniform"] >= PREV),
                               ("positional", (m["position_explained"] >= POSITIONAL)
                                | (m["content_rms"] < CONTENT_RMS))]):
        cls[hit] = CLASSES.index(name)
    return cls


@dataclass
class HeadsResult:
    """Measures [checkpoint, layer, head] (``by_distance``: [..., distance]) and classes."""

    task: str
    steps: np.ndarray
    split: str
    measures: dict[str, np.ndarray] = field(repr=False)

    @property
    def classes(self) -> np.ndarray:
        return self.measures["class"]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.classes.shape[1:])

    def first_steps(self) -> dict[str, int | None]:
        """Each class -> the first checkpoint at which some head has it."""
        out = {}
        for i, name in enumerate(CLASSES):
            hit = (self.classes == i).any((1, 2))
            out[name] = int(self.steps[hit.argmax()]) if hit.any() else None
        return out

    def settled_steps(self) -> np.ndarray:
        """[layer, head]: the first checkpoint from which the head keeps its final class."""
        same = self.classes == self.classes[-1]
        # the last checkpoint where the class differs, plus one
        differs = ~same
        last_diff = np.where(differs.any(0), len(self.steps) - 1 - differs[::-1].argmax(0), -1)
        return self.steps[last_diff + 1]

    def text(self) -> str:
        L, H = self.shape
        lines = [f"heads ({self.task}, {len(self.steps)} checkpoints, {L} layers x {H} heads, "
                 f"patterns on {self.split}):"]
        settled = self.settled_steps()
        for l in range(L):
            for h in range(H):
                m = {k: (self.measures[k][-1, l, h] if k in self.measures else np.nan)
                     for k in MEASURES}
                succ = "".join(f", {k} {m[k]:.2f}" for k in ("successor", "induction", "duplicate")
                               if not np.isnan(m[k]))
                lines.append(f"  L{l}H{h}: {CLASSES[self.classes[-1, l, h]]} (since step "
                             f"{settled[l, h]}); prev {m['prev']:.2f}, position-explained "
                             f"{m['position_explained']:.2f}, content-rms "
                             f"{m['content_rms']:.2f}, entropy {m['entropy']:.2f}{succ}")
        first = ", ".join(f"{k} {v}" for k, v in self.first_steps().items() if v is not None)
        lines.append(f"  first step each class appears: {first}")
        return "\n".join(lines)

    # --- figures ---------------------------------------------------------------------------
    def plot_classes(self):
        """Class of every head (rows) at every checkpoint (columns)."""
        plt = pyplot()
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch

        L, H = self.shape
        colors = ["#d62728", "#9467bd", "#8c564b", "#ff7f0e", "#1f77b4", "#2ca02c"]
        grid = self.classes.reshape(len(self.steps), L * H).T
        fig, ax = plt.subplots(figsize=(min(12, 3 + 0.25 * len(self.steps)), 1.2 + 0.3 * L * H))
        ax.imshow(grid, cmap=ListedColormap(colors), vmin=-0.5, vmax=len(CLASSES) - 0.5,
                  aspect="auto", interpolation="nearest")
        ax.set_yticks(range(L * H), [f"L{l}H{h}" for l in range(L) for h in range(H)])
        ticks = np.unique(np.linspace(0, len(self.steps) - 1, min(8, len(self.steps))).astype(int))
        ax.set_xticks(ticks, [str(int(self.steps[i])) for i in ticks])
        ax.set_xlabel("step")
        ax.legend(handles=[Patch(color=c, label=n) for c, n in zip(colors, CLASSES)],
                  fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.set_title(f"head classes over training, {self.task}", fontsize=10)
        fig.tight_layout()
        return fig

    def plot_measures(self):
        """Previous-token score and position-explained over training (a line per head), and
        each head's attention by relative distance at the last checkpoint."""
        plt = pyplot()
        L, H = self.shape
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        for ax, key in zip(axes[:2], ("prev", "position_explained")):
            for l in range(L):
                for h in range(H):
                    ax.plot(self.steps, self.measures[key][:, l, h], marker=".", ms=3,
                            label=f"L{l}H{h}")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("step")
            ax.set_title(key.replace("_", "-"), fontsize=9)
        axes[1].legend(fontsize=6, ncol=2)
        prof = self.measures["by_distance"][-1].reshape(L * H, -1)
        im = axes[2].imshow(prof, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axes[2].set_yticks(range(L * H), [f"L{l}H{h}" for l in range(L) for h in range(H)])
        axes[2].set_xlabel("relative distance q - k")
        axes[2].set_title(f"attention by distance, step {int(self.steps[-1])}", fontsize=9)
        fig.colorbar(im, ax=axes[2])
        fig.tight_layout()
        return fig

    # --- persistence -----------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> list[Path]:
        """RUN/analysis/heads.npz (+ .json) and RUN/figures/heads*.png."""
        run_dir = Path(run_dir)
        L, H = self.shape
        final = {f"L{l}H{h}": CLASSES[self.classes[-1, l, h]] for l in range(L) for h in range(H)}
        meta = {"task": self.task, "split": self.split, "steps": self.steps.tolist(),
                "classes": list(CLASSES), "final_class": final,
                "first_step": self.first_steps(),
                "thresholds": {"successor": SUCCESSOR, "prev_above_uniform": PREV,
                               "induction_and_duplicate_above_uniform": REPEAT,
                               "position_explained": POSITIONAL, "content_rms": CONTENT_RMS}}
        paths = save_arrays(run_dir, NAME, {"steps": self.steps, **self.measures}, meta)
        figs = run_dir / "figures"
        paths.append(save_figure(self.plot_classes(), figs / f"{NAME}.png"))
        paths.append(save_figure(self.plot_measures(), figs / f"{NAME}_measures.png"))
        return paths

    @classmethod
    def load(cls, run_dir: str | Path) -> "HeadsResult":
        meta, z = read_saved(run_dir, NAME, "--heads")
        try:
            return cls(meta["task"], z["steps"], meta["split"],
                       {k: v for k, v in z.items() if k != "steps"})
        except (KeyError, TypeError) as e:
            raise AnalysisError(f"'{run_dir}/analysis/{NAME}' lacks {e}; rerun `groklab analyze "
                                f"{run_dir} --heads` to rewrite it") from None


def run(source, *, task: TaskData | None = None, checkpoints="all", split: str | None = None,
        n_examples: int = 300, seed: int = 0, device: str = "cpu") -> HeadsResult:
    """Head measures and classes at every checkpoint asked for (or of one model with ``task``)."""
    src = open_source(source, task=task, checkpoints=checkpoints, device=device)
    task = src.task
    split, ex, _ = probe_sample(task, split, n_examples, seed)
    numbers = number_tokens(task)
    per: dict[str, list[np.ndarray]] = {}
    for step in src.steps:
        model = src.model_at(step)
        n = require_heads(model)
        names = [f"blocks.{l}.attn.hook_pattern" for l in range(n)]
        dev = next(model.parameters()).device
        _, cache = model.run_with_cache(ex.inputs.to(dev), names_filter=names)
        m = pattern_measures(torch.stack([cache[nm] for nm in names]), ex.answer_pos)
        m["successor"] = (np.full(m["prev"].shape, np.nan) if numbers is None
                          else successor_scores(model, numbers))
        m.update(repeat_scores(model, n, seed))
        m["class"] = classify(m)
        for k, v in m.items():
            per.setdefault(k, []).append(v)
    return HeadsResult(task.name, np.asarray(src.steps, dtype=np.int64), split,
                       {k: np.stack(v) for k, v in per.items()})
