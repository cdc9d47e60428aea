"""Answer-changing counterfactual inputs for causal tracing (Wang et al. 2024, section 3.3;
docs/methods.md section 1, traps 5, 6): for each input slot of a composition (h, r1, r2) or
comparison (attribute, e1, e2) query, the same query with that one token replaced by a token of
the same type under which the correct answer changes; and the subject positions ROME's noise
goes to. :mod:`groklab.analysis.causal_tracing` patches with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from groklab.analysis.sources import AnalysisError
from groklab.tasks.base import Split, TaskData

SUPPORTED = ("composition", "comparison")


@dataclass
class Counterfactual:
    """One input slot replaced: the perturbed inputs, which rows have a valid replacement,
    and the positions whose hidden states are patched."""

    name: str
    positions: tuple[int, ...]
    tokens: torch.Tensor  # [n, pos]
    valid: np.ndarray  # [n] bool


def _pick(cand: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One uniformly random True column per row of ``cand`` [n, m]; rows with none invalid."""
    scores = np.where(cand, rng.random(cand.shape), -1.0)
    return scores.argmax(1), cand.any(1)


def composition_counterfactuals(task: TaskData, ex: Split, seed: int = 0) -> list[Counterfactual]:
    tails, ood = task.arrays["tails"], task.arrays["ood"]
    n_ent, n_rel = tails.shape
    rel0 = int(task.vocab.ids_of_type("relation")[0])
    h, r1 = ex.meta["hop1"][:, 0], ex.meta["hop1"][:, 1]
    b, r2 = ex.meta["bridge"], ex.meta["hop2"][:, 1]
    t = ex.targets.numpy()
    if (b < 0).any():
        raise AnalysisError("composition causal tracing needs inferred rows (h, r1, r2)")
    rng = np.random.default_rng(seed)
    known = (tails >= 0) & ~ood  # ID atomic facts

    def second_hop(first_tails: np.ndarray) -> np.ndarray:
        """tail of (x, r2) for each row's r2 and each x in first_tails [n, m]; -1 if none."""
        safe = np.clip(first_tails, 0, None)
        t2 = tails[safe, r2[:, None]]
        return np.where(first_tails >= 0, t2, -1)

    # h': (e, r1) has no fact, or its bridge's (b', r2) is not t.
    cand_h = (second_hop(tails[:, r1].T) != t[:, None]) & (np.arange(n_ent) != h[:, None])
    # r1': another ID relation of h whose tail's (., r2) is not t.
    cand_r1 = known[h] & (second_hop(tails[h]) != t[:, None]) & (np.arange(n_rel) != r1[:, None])
    # r2': another ID relation of the bridge whose tail is not t.
    cand_r2 = known[b] & (tails[b] != t[:, None]) & (np.arange(n_rel) != r2[:, None])

    out = []
    for name, pos, cand, offset in (("h", 0, cand_h, 0), ("r1", 1, cand_r1, rel0),
                                    ("r2", 2, cand_r2, rel0)):
        choice, valid = _pick(cand, rng)
        tokens = ex.inputs.clone()
        tokens[:, pos] = torch.as_tensor(offset + choice)
        out.append(Counterfactual(name, (pos,), tokens, valid))
    return out


def comparison_counterfactuals(task: TaskData, ex: Split, seed: int = 0) -> list[Counterfactual]:
    values, ood = task.arrays["values"], task.arrays["ood"]
    n_ent, n_attr = values.shape
    attr0 = int(task.vocab.ids_of_type("attribute")[0])
    a, e1, e2 = ex.meta["attribute"], ex.meta["e1"], ex.meta["e2"]
    v1, v2 = ex.meta["v1"], ex.meta["v2"]
    if (e2 < 0).any():
        raise AnalysisError("comparison causal tracing needs comparison rows (attribute, e1, e2)")
    rng = np.random.default_rng(seed)
    compact = task.seq_len == 3
    pos = {"a": (0,), "e1": (1,), "e2": (2,)} if compact else \
        {"a": (0, 1), "e1": (2, 3), "e2": (4,)}
    tok_pos = {"a": 0, "e1": pos["e1"][0], "e2": pos["e2"][0]}
    vals_a = values[:, a].T  # [n, n_ent]: each entity's value of the row's attribute
    known = ~ood[:, a].T
    ents = np.arange(n_ent)
    others = (ents != e1[:, None]) & (ents != e2[:, None])

    def replacement(v_other: np.ndarray, equal: np.ndarray) -> np.ndarray:
        # v1 != v2: make the two values equal; v1 == v2: make them differ by one.
        want = np.where(equal[:, None], np.abs(vals_a - v_other[:, None]) == 1,
                        vals_a == v_other[:, None])
        return want & known & others

    label = np.sign(v1 - v2)
    cand_a = (np.sign(values[e1] - values[e2]) != label[:, None]) \
        & (np.arange(n_attr) != a[:, None]) & ~ood[e1] & ~ood[e2]
    out = []
    for name, cand, offset in (("a", cand_a, attr0), ("e1", replacement(v2, v1 == v2), 0),
                               ("e2", replacement(v1, v1 == v2), 0)):
        choice, valid = _pick(cand, rng)
        tokens = ex.inputs.clone()
        tokens[:, tok_pos[name]] = torch.as_tensor(offset + choice)
        out.append(Counterfactual(name, pos[name], tokens, valid))
    return out


def counterfactuals(task: TaskData, ex: Split, seed: int = 0) -> list[Counterfactual]:
    if task.name == "composition":
        return composition_counterfactuals(task, ex, seed)
    if task.name == "comparison":
        return comparison_counterfactuals(task, ex, seed)
    raise AnalysisError(
        f"causal tracing builds answer-changing counterfactuals for {', '.join(SUPPORTED)}; "
        f"task '{task.name}' has none (use groklab.analysis.patching with your own corruption)"
    )


def subject_positions(task: TaskData) -> tuple[int, ...]:
    """Where ROME's noise goes: the entity tokens of the query."""
    if task.name == "composition":
        return (0,)
    if task.name == "comparison":
        return (1, 2) if task.seq_len == 3 else (2, 4)
    raise AnalysisError(f"no subject positions defined for task '{task.name}'")
