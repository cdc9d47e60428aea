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

SUPPORTED = ("composition", "comparison", "complex", "family")


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


def family_counterfactuals(task: TaskData, ex: Split, seed: int = 0) -> list[Counterfactual]:
    """Each slot of [subject, N, M, P, Q, hop1, hop2, ask] replaced by a token of its type that
    keeps the question one of the task's types (and its relatives existing) but changes the
    answer; slots the question does not use (P and Q without cousins) have none."""
    from groklab.tasks.family import answer, split_type

    rng = np.random.default_rng(seed)
    v = task.vocab
    types = task.info["question_types"]
    cols = {k: ex.meta[k] for k in ("male", "n", "m", "p", "q")}
    qt = ex.meta["qtype"]
    num0 = int(v.ids_of_type("number")[0])
    n_max, m_max, c_max = task.info["ranges"]
    limits = {"n": n_max, "m": m_max, "p": c_max, "q": c_max}

    def answers(c: dict, q: np.ndarray) -> np.ndarray:
        out = np.full(q.shape, -1)
        for t_idx, t in enumerate(types):
            sel = q == t_idx
            if sel.any():
                hops, ask = split_type(t)
                out[sel] = answer(*(c[k][sel] for k in ("male", "n", "m", "p", "q")), hops, ask)
        return out

    base = answers(cols, qt)
    path = [split_type(t) for t in types]
    slots = [("subject", 0, "male", [0, 1], v.id("<Alice>"))]
    slots += [(k, 1 + j, k, list(range(limits[k] + 1)), num0) for j, k in enumerate("nmpq")]
    out = []
    for name, pos, key, cands, offset in slots:
        cand = np.zeros((len(ex), len(cands)), dtype=bool)
        for j, c in enumerate(cands):
            a = answers({**cols, key: np.full(len(ex), c)}, qt)
            cand[:, j] = (a >= 0) & (a != base)
        choice, valid = _pick(cand, rng)
        tokens = ex.inputs.clone()
        tokens[:, pos] = torch.as_tensor(offset + np.asarray(cands)[choice])
        out.append(Counterfactual(name, (pos,), tokens, valid))
    for name, pos in (("hop1", 5), ("hop2", 6), ("ask", 7)):
        cand = np.zeros((len(ex), len(types)), dtype=bool)
        for t_idx in range(len(types)):  # another type that differs only at this slot
            other = np.array([_differs_only_at(path[int(q)], path[t_idx], pos)
                              for q in range(len(types))])[qt]
            a = answers(cols, np.full(len(ex), t_idx))
            cand[:, t_idx] = other & (a >= 0) & (a != base)
        choice, valid = _pick(cand, rng)
        tokens = ex.inputs.clone()
        tokens[:, pos] = torch.as_tensor(_type_tokens(task, types)[choice, pos - 5])
        out.append(Counterfactual(name, (pos,), tokens, valid))
    return out


def _differs_only_at(a: tuple, b: tuple, pos: int) -> bool:
    """Whether question types a and b (hops, ask) differ exactly at token position pos."""
    def toks(p):
        hops, ask = p
        return [*hops, *["none"] * (2 - len(hops)), ask]
    ta, tb = toks(a), toks(b)
    diff = [i for i in range(3) if ta[i] != tb[i]]
    return diff == [pos - 5]


def _type_tokens(task: TaskData, types: list[str]) -> np.ndarray:
    """[type, 3] token ids of hop1, hop2, ask."""
    from groklab.tasks.family import split_type

    out = []
    for t in types:
        hops, ask = split_type(t)
        hops = [*hops, *["none"] * (2 - len(hops))]
        out.append([task.vocab.id(f"<{h}>") for h in hops] + [task.vocab.id(f"<{ask}>")])
    return np.array(out, dtype=np.int64)


def counterfactuals(task: TaskData, ex: Split, seed: int = 0) -> list[Counterfactual]:
    if task.name == "composition":
        return composition_counterfactuals(task, ex, seed)
    if task.name in ("comparison", "complex"):
        return comparison_counterfactuals(task, ex, seed)
    if task.name == "family":
        return family_counterfactuals(task, ex, seed)
    raise AnalysisError(
        f"causal tracing builds answer-changing counterfactuals for {', '.join(SUPPORTED)}; "
        f"task '{task.name}' has none (use groklab.analysis.patching with your own corruption)"
    )


def subject_positions(task: TaskData) -> tuple[int, ...]:
    """Where ROME's noise goes: the entity tokens of the query."""
    if task.name == "composition":
        return (0,)
    if task.name in ("comparison", "complex"):
        return (1, 2) if task.seq_len == 3 else (2, 4)
    if task.name == "family":
        return (1, 2, 3, 4)  # the counts: the facts the question is about
    raise AnalysisError(f"no subject positions defined for task '{task.name}'")
