"""Causal tracing across training: which hidden states does the prediction depend on?

Question (Wang et al. 2024, section 3.3 and App. D): in a two-hop query (h, r1, r2), does the
prediction flow through a state that holds the bridge entity -- S[L, r1] at a middle layer --
and does that link strengthen while the model groks?

**Wang et al.'s method** (docs/methods.md section 1; traps 5, 6). For each input slot (composition:
h, r1, r2; comparison: attribute, e1, e2) build a counterfactual input that replaces that one
token with a token of the SAME type chosen so that the correct answer CHANGES:

* h  -> an entity e whose (e, r1) has no fact or whose bridge's (b', r2) tail is not t;
* r1 -> another relation of h (an ID fact) whose tail's (., r2) is not t;
* r2 -> another relation of the bridge b (an ID fact) whose tail is not t;
* e1 -> an entity whose value is v2 (or v2 +- 1 when v1 = v2), symmetric for e2;
* attribute -> another attribute under which the comparison's label differs.

Noising: run the clean input and, at one (layer, slot), overwrite the clean hidden state at
the slot's position(s) (comparison paper format: attribute -> pos 0, 1; e1 -> 2, 3; e2 -> 4)
with the counterfactual run's state there, then finish the forward pass. Causal strength =
the fraction of examples whose top-1 prediction changes (``strength``); the paper's notebook
figure, 1 - mean(rank_after(t) == 0), is kept as ``strength_paper`` (they agree wherever the
clean model is right). Hidden state L = ``blocks.L.hook_resid_pre`` (L = 0: the embeddings).
An example with no valid replacement for a slot is left out of that slot's average.

**ROME's variant** (Meng et al. 2022 section 2.1; docs/methods.md section 2, trap 9): add Gaussian
noise nu * eps to the token embeddings of the subject tokens (composition: h; comparison: e1
and e2), nu = 3 x the std of those embeddings, the same 10 noise samples (seed 1) for every
example; then restore one clean hidden state (layer, position) and measure the probability of
the clean top-1 token. Normalized indirect effect NIE = (P_restored - P_corrupt) /
(P_clean - P_corrupt), from the means over examples and noise samples.

Both run batched through :func:`groklab.analysis.patching.patch_grid`: one forward pass for all
counterfactuals, then one partial forward per layer holding every slot x example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from groklab.analysis import causal_tracing_figures
from groklab.analysis.causal_tracing_counterfactuals import (  # noqa: F401  (re-exported)
    SUPPORTED,
    Counterfactual,
    _pick,
    comparison_counterfactuals,
    composition_counterfactuals,
    counterfactuals,
    subject_positions,
)
from groklab.analysis.causal_tracing_figures import diverging_cmap  # noqa: F401  (re-exported)
from groklab.analysis.logit_lens import position_labels, stable_rank
from groklab.analysis.patching import base_residuals, patch_grid
from groklab.analysis.saving import save_arrays, save_figure
from groklab.analysis.sources import (
    AnalysisError,
    default_splits,
    early_step,
    open_source,
    read_saved,
    require_transformer,
    sample_examples,
)
from groklab.tasks.base import Split, TaskData

NAME = "causal_tracing"


# --- the two tracings ------------------------------------------------------------------------


@torch.no_grad()
def counterfactual_grid(model, tokens: torch.Tensor, answer_pos: torch.Tensor,
                        cfs: Sequence[Counterfactual], reduce=None, *, looped: bool = False):
    """Noising grid: ``reduce(logits)`` [layers, slots, ...] where cell (L, s) runs the clean
    ``tokens`` with the hidden state entering layer L at slot s's positions taken from the
    counterfactual run of slot s. ``looped``: one full forward per cell (the reference).

    Layer 0 is read off the counterfactual runs themselves: the clean and counterfactual
    embeddings differ only at the replaced token, which is one of the patched positions, so
    patching S[0, slot] *is* the counterfactual input. The batched path skips that pass."""
    from groklab.analysis.patching import patch_grid_looped

    n, P = tokens.shape
    S = len(cfs)
    reduce = reduce or (lambda x: x)
    cf_tokens = torch.cat([c.tokens for c in cfs]).to(tokens.device)
    # All counterfactual runs in one forward pass: [S * n, pos].
    names = {f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_effective_layers)}
    cf_logits, cache = model.run_with_cache(cf_tokens, answer_pos.repeat(S),
                                            names_filter=lambda nm: nm in names)
    masks = torch.zeros(S, P, dtype=torch.bool)
    for i, c in enumerate(cfs):
        masks[i, list(c.positions)] = True
        changed = c.tokens.cpu().ne(tokens.cpu()).any(0).nonzero().flatten().tolist()
        if not set(changed) <= set(c.positions):
            raise AnalysisError(f"counterfactual '{c.name}' changes positions {changed} outside "
                                f"its patched positions {list(c.positions)}")

    def source(layer: int) -> torch.Tensor:  # [slots, n, pos, d_model]
        return cache[f"blocks.{layer}.hook_resid_pre"].view(S, n, P, -1)

    if looped:
        return patch_grid_looped(model, tokens, source, "resid_pre", masks,
                                 answer_pos=answer_pos, reduce=reduce)
    first = reduce(cf_logits.view(S, n, -1)).unsqueeze(0)
    if model.cfg.n_effective_layers == 1:
        return first
    rest = patch_grid(model, tokens, source, "resid_pre", masks, answer_pos=answer_pos,
                      reduce=reduce, layers=range(1, model.cfg.n_effective_layers))
    return torch.cat([first, rest])


@torch.no_grad()
def trace_counterfactual(model, ex: Split, cfs: Sequence[Counterfactual], *, looped=False):
    """Wang et al. noising for one model: returns (top1_after, rank_after) [layers, slots, n]
    and (clean_top1, clean_rank) [n]. ``looped`` runs the per-cell reference loop instead."""
    dev = next(model.parameters()).device
    tokens, ap, t = ex.inputs.to(dev), ex.answer_pos.to(dev), ex.targets.to(dev)
    clean = model(tokens, ap)
    clean_top1 = clean.argmax(-1)
    clean_rank = stable_rank(clean, t)

    def reduce(logits: torch.Tensor) -> torch.Tensor:  # [cells, n, vocab] -> [cells, 2, n]
        rank = stable_rank(logits, t.expand(logits.shape[0], -1))
        return torch.stack([logits.argmax(-1), rank], 1)

    grid = counterfactual_grid(model, tokens, ap, cfs, reduce, looped=looped)
    return (grid[:, :, 0].cpu().numpy(), grid[:, :, 1].cpu().numpy(),
            clean_top1.cpu().numpy(), clean_rank.cpu().numpy())


@torch.no_grad()
def noising_grid(model, clean_tokens: torch.Tensor, corrupted_tokens: torch.Tensor,
                 answer_pos: torch.Tensor | None = None, *, looped: bool = False) -> np.ndarray:
    """Causal strength at every (layer, position) for one counterfactual per row: the
    corrupted run's hidden state patched into the clean run at that one site; the fraction of
    rows whose top-1 prediction changes. [layers, pos]. Default answer: the last position."""
    from groklab.analysis.patching import patch_grid_looped

    n, P = clean_tokens.shape
    ap = torch.full((n,), P - 1, dtype=torch.long) if answer_pos is None else answer_pos
    clean_top1 = model(clean_tokens, ap).argmax(-1)
    cf_resid = base_residuals(model, corrupted_tokens)
    grid_fn = patch_grid_looped if looped else patch_grid
    grid = grid_fn(model, clean_tokens, lambda l: cf_resid[l], "resid_pre",
                   torch.eye(P, dtype=torch.bool), answer_pos=ap,
                   reduce=lambda logits: (logits.argmax(-1) != clean_top1).float().mean(-1))
    return grid.cpu().numpy()


@torch.no_grad()
def trace_noise(model, ex: Split, noise_positions: Sequence[int], *, samples: int = 10,
                noise_scale: float = 3.0, seed: int = 1, max_rows: int | None = 200_000):
    """ROME hidden-flow tracing for one model: restored probability [layers, pos, n],
    P_corrupt [n], P_clean [n] of the clean top-1 token."""
    dev = next(model.parameters()).device
    tokens, ap = ex.inputs.to(dev), ex.answer_pos.to(dev)
    n, P = tokens.shape
    clean = model(tokens, ap).softmax(-1)
    o = clean.argmax(-1)
    high = clean.gather(-1, o[:, None])[:, 0]
    npos = list(noise_positions)
    emb = model.W_E[tokens[:, npos]]
    nu = noise_scale * emb.std().item()
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = (torch.randn(samples, len(npos), model.cfg.d_model, generator=g) * nu).to(dev)
    rows = tokens.repeat(samples, 1)  # sample-major: row s * n + i
    per_row = noise.repeat_interleave(n, 0)  # [samples * n, len(npos), d_model]

    def add_noise(act, hook):
        act = act.clone()
        act[:, npos] += per_row
        return act

    ap_rows, o_rows = ap.repeat(samples), o.repeat(samples)
    with model.hooks([("hook_embed", add_noise)]):
        corrupt = model(rows, ap_rows).softmax(-1)
        base = base_residuals(model, rows)
    low = corrupt.gather(-1, o_rows[:, None])[:, 0].view(samples, n).mean(0)
    clean_resid = base_residuals(model, tokens)

    def source(layer: int) -> torch.Tensor:  # the clean state, for every noise sample
        return clean_resid[layer].repeat(samples, 1, 1)

    def reduce(logits: torch.Tensor) -> torch.Tensor:  # [cells, samples * n, vocab] -> [cells, n]
        p = logits.softmax(-1).gather(-1, o_rows.expand(logits.shape[0], -1).unsqueeze(-1))
        return p[..., 0].view(logits.shape[0], samples, n).mean(1)

    masks = torch.eye(P, dtype=torch.bool)
    grid = patch_grid(model, rows, source, "resid_pre", masks, answer_pos=ap_rows,
                      reduce=reduce, base_resid=base, max_rows=max_rows)
    return grid.cpu().numpy(), low.cpu().numpy(), high.cpu().numpy()


# --- result ----------------------------------------------------------------------------------


@dataclass
class CausalTracingResult:
    """Per split: top-1 and rank of the answer after each patch, [checkpoint, layer, slot, n];
    ROME's restored probabilities [checkpoint, layer, position, n]."""

    task: str
    steps: np.ndarray
    slots: list[str]  # counterfactual slots (grid columns of the paper method)
    slot_positions: list[list[int]]
    positions: list[str]  # token positions (grid columns of the ROME variant)
    noise_positions: list[int]
    splits: list[str]
    early_step: int
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def n_layers(self) -> int:
        return self.arrays[f"{self.splits[0]}.top1_after"].shape[1]

    def text(self) -> str:
        """Per split: the strongest (layer, slot) link at the early and final checkpoint."""
        lines = [f"causal tracing ({self.task}, {len(self.steps)} checkpoints, early step "
                 f"{self.early_step}):"]
        steps = list(self.steps)
        for split in self.splits:
            st = self.strength(split)
            for label, step in (("early", self.early_step), ("final", steps[-1])):
                if step not in steps:
                    continue
                grid = st[steps.index(step)]
                layer, slot = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
                lines.append(f"  {split} {label} (step {step}): strongest S[{layer}, "
                             f"{self.slots[slot]}] = {grid[layer, slot]:.2f}")
        return "\n".join(lines)

    def _valid(self, split: str) -> np.ndarray:
        return self.arrays[f"{split}.valid"]  # [slots, n]

    def strength(self, split: str) -> np.ndarray:
        """[checkpoint, layer, slot]: fraction of valid examples whose top-1 changes."""
        changed = self.arrays[f"{split}.top1_after"] != self.arrays[f"{split}.clean_top1"][
            :, None, None, :]
        return _masked_mean(changed, self._valid(split))

    def strength_paper(self, split: str) -> np.ndarray:
        """[checkpoint, layer, slot]: 1 - mean(rank_after(answer) == 0) (the paper's figure)."""
        return _masked_mean(self.arrays[f"{split}.rank_after"] != 0, self._valid(split))

    def clean_accuracy(self, split: str) -> np.ndarray:
        return (self.arrays[f"{split}.clean_rank"] == 0).mean(-1)

    def has_rome(self, split: str) -> bool:
        return f"{split}.rome_restored" in self.arrays

    @property
    def rome_steps(self) -> np.ndarray:
        """The checkpoints ROME tracing ran at (by default the early and the final one)."""
        return self.arrays.get("rome_steps", np.zeros(0, dtype=np.int64))

    def nie(self, split: str) -> np.ndarray:
        """[rome checkpoint, layer, position]: (P_restored - P_corrupt) / (P_clean -
        P_corrupt), means over examples and noise samples; checkpoints in ``rome_steps``."""
        restored = self.arrays[f"{split}.rome_restored"].mean(-1)
        low = self.arrays[f"{split}.rome_low"].mean(-1)[:, None, None]
        high = self.arrays[f"{split}.rome_high"].mean(-1)[:, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return (restored - low) / (high - low)

    def index_of(self, step: int) -> int:
        return int(np.searchsorted(self.steps, step))

    # --- figures ---------------------------------------------------------------------------
    def plot(self, splits: Sequence[str] | None = None):
        """Causal strength at the early checkpoint, the final one, and final minus early (the
        paper's diverging orange-white-green map on [-1, 1]); a row per split."""
        return causal_tracing_figures.plot_strength(self, splits)

    def plot_over_training(self, split: str | None = None):
        """Causal strength of each slot vs step, one line per layer, with clean accuracy."""
        return causal_tracing_figures.plot_over_training(self, split)

    def plot_rome(self, splits: Sequence[str] | None = None):
        """ROME NIE heatmaps [layer, position] at the first and last ROME checkpoints; a row
        per split."""
        return causal_tracing_figures.plot_rome(self, splits)

    # --- persistence -----------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> list[Path]:
        """RUN/analysis/causal_tracing.npz (+ .json) and RUN/figures/causal_tracing_*.png."""
        run_dir = Path(run_dir)
        arrays = dict(self.arrays, steps=self.steps)
        for s in self.splits:
            arrays[f"{s}.strength"] = self.strength(s)
            arrays[f"{s}.strength_paper"] = self.strength_paper(s)
            if self.has_rome(s):
                arrays[f"{s}.rome_nie"] = self.nie(s)
        meta = {"task": self.task, "slots": self.slots, "slot_positions": self.slot_positions,
                "positions": self.positions, "noise_positions": self.noise_positions,
                "splits": self.splits, "early_step": self.early_step,
                "steps": self.steps.tolist(),
                "layers": "hidden state L = blocks.L.hook_resid_pre, L = 0..n_layers-1",
                "strength": "noising; fraction of valid examples whose top-1 changes"}
        paths = save_arrays(run_dir, NAME, arrays, meta)
        figs = run_dir / "figures"
        paths.append(save_figure(self.plot(), figs / f"{NAME}.png"))
        paths.append(save_figure(self.plot_over_training(), figs / f"{NAME}_over_training.png"))
        if any(self.has_rome(s) for s in self.splits):
            paths.append(save_figure(self.plot_rome(), figs / f"{NAME}_rome.png"))
        return paths

    @classmethod
    def load(cls, run_dir: str | Path) -> "CausalTracingResult":
        meta, z = read_saved(run_dir, NAME, "--causal-tracing")
        derived = (".strength", ".strength_paper", ".rome_nie")
        arrays = {k: v for k, v in z.items() if k != "steps" and not k.endswith(derived)}
        try:
            return cls(meta["task"], z["steps"], meta["slots"], meta["slot_positions"],
                       meta["positions"], meta["noise_positions"], meta["splits"],
                       meta["early_step"], arrays)
        except (KeyError, TypeError) as e:
            raise AnalysisError(f"'{run_dir}/analysis/{NAME}' lacks {e}; rerun `groklab analyze "
                                f"{run_dir} --causal-tracing` to rewrite it") from None


def _masked_mean(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """x [C, L, S, n] averaged over the valid examples of each slot (valid [S, n])."""
    w = valid.astype(float)[None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x * w).sum(-1) / w.sum(-1)


def run(
    source,
    *,
    task: TaskData | None = None,
    checkpoints="all",
    splits: Sequence[str] | None = None,
    n_examples: int = 300,
    seed: int = 0,
    rome: bool | str = "ends",
    rome_samples: int = 10,
    noise_scale: float = 3.0,
    device: str = "cpu",
) -> CausalTracingResult:
    """Causal tracing of a run (every checkpoint asked for) or of one model (``task`` needed).

    ``rome``: ``"ends"`` (default) runs ROME's noise tracing at the early and the final
    checkpoint only -- it costs ~30x the paper's method (10 noise copies of every example) --
    ``"all"``/``True`` at every checkpoint, ``False`` never.
    """
    src = open_source(source, task=task, checkpoints=checkpoints, device=device)
    task = src.task
    if task.name not in SUPPORTED:
        counterfactuals(task, task.train, seed)  # raises the one-line error
    splits = list(splits) if splits else default_splits(task)
    examples = {s: sample_examples(task.probes[s], n_examples, seed) for s in splits}
    cfs = {s: counterfactuals(task, examples[s][0], seed) for s in splits}
    npos = subject_positions(task)
    steps = list(src.steps)
    early = early_step(src.run, steps) if src.run is not None else steps[0]
    if rome == "ends":
        rome_steps = sorted({early, steps[-1]})
    elif rome in (True, "all"):
        rome_steps = steps
    elif rome in (False, None, "none"):
        rome_steps = []
    else:
        raise AnalysisError(f"rome={rome!r}; use 'ends', 'all' or False")
    acc: dict[str, list] = {}
    for step in steps:
        model = src.model_at(step)
        require_transformer(model, "causal tracing")
        for s in splits:
            ex = examples[s][0]
            top1, rank, ctop1, crank = trace_counterfactual(model, ex, cfs[s])
            for k, v in (("top1_after", top1), ("rank_after", rank), ("clean_top1", ctop1),
                         ("clean_rank", crank)):
                acc.setdefault(f"{s}.{k}", []).append(v.astype(np.int32))
            if step in rome_steps:
                restored, low, high = trace_noise(model, ex, npos, samples=rome_samples,
                                                  noise_scale=noise_scale)
                for k, v in (("rome_restored", restored), ("rome_low", low), ("rome_high", high)):
                    acc.setdefault(f"{s}.{k}", []).append(v.astype(np.float32))
    arrays = {k: np.stack(v) for k, v in acc.items()}
    for s in splits:
        arrays[f"{s}.valid"] = np.stack([c.valid for c in cfs[s]])
        arrays[f"{s}.example_index"] = examples[s][1]
    if rome_steps:
        arrays["rome_steps"] = np.asarray(rome_steps, dtype=np.int64)
    return CausalTracingResult(
        task=task.name,
        steps=np.asarray(steps, dtype=np.int64),
        slots=[c.name for c in cfs[splits[0]]],
        slot_positions=[list(c.positions) for c in cfs[splits[0]]],
        positions=position_labels(task),
        noise_positions=list(npos),
        splits=splits,
        early_step=int(early),
        arrays=arrays,
    )
