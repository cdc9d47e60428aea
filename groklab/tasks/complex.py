"""Complex reasoning over a large search space (Wang et al. 2024, section 5 and App. F).

The knowledge base is the comparison task's (``groklab.tasks.comparison``): a value in
0..values-1 for every (entity, attribute), and for each attribute a fresh round(ood_fraction *
entities) entities that are OOD for it. What changes:

* OOD atomic facts are **never trained on**; they are probes only (``atomic_ood``), so a model
  that answers them inferred a value it never saw.
* Train = every ID atomic fact + ``train_fraction`` of the ID-ID comparisons that are not held
  out for ``test_id`` (the paper's "topleft") + ``cross_fraction`` of the ID-OOD comparisons
  ("cross"), both orders of each chosen pair. The paper's totals (18K atomic, 437K ID-ID, 108K
  ID-OOD) come out of 1,000 entities, 20 attributes, test_id_fraction 0.1 and both fractions 0.03.
  ``atomic_repeat`` > 1 writes each ID atomic fact that many times (a CPU-scale recipe knob).
* ``test_hard``: ordered OOD-OOD comparisons whose label follows from the training facts by
  chaining -- the cross comparisons plus every comparison the ID atomic values imply -- but
  *not* from the training comparisons alone (atomic facts left out), sampled
  ``test_per_label`` per label, both orders of every chosen pair (an unequal pair gives one <
  and one >, an equal pair two =, so ``test_per_label`` must be even).

Derivation is graph reasoning over "x >= y" edges (x > y and x = y facts; an equality gives
both directions), not arithmetic: "o > e_3 (value 5)" and "e_9 (value 6) > o'" say nothing about
(o, o') through the graph, although the integers would. Because every training fact is true,
the label of (x, y) follows from the facts exactly when x reaches y for > (y reaches x for <;
both for =): a chain of true >= facts between entities of different values must contain a
strict step. The full graph's reachability between OOD entities needs no search: o reaches o'
iff some ID entity below o (a trained o > i or o = i) has a value >= some ID entity above o'
(paths through other OOD entities add nothing the ID values do not already give). The
training-comparisons-only graph is searched breadth first from the OOD entities with dense
boolean frontiers, one attribute at a time (no graph library needed).

Format as in comparison: "compact" rows [attr, e1, e2] -> < = > and atomic [attr, e] -> value
(``atomic_order`` attribute_first, the order that transfers at small scale), or "paper" rows
[attr, <q>, e1, <mask>, e2] -> per-attribute label with atomic [e, attr]. Probes:
``atomic_id``, ``atomic_ood``, ``atomic_ood_pinned`` (OOD facts whose value the training facts
pin down by integer bounds, the ones a reasoner could state), ``train_inferred``, ``test_id``
(held-out ID-ID), ``test_hard``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from groklab.tasks.base import Split, TaskData, TaskError
from groklab.tasks.comparison import (
    PairSet,
    comparison_rows,
    comparison_vocab,
    draw_table,
    sample_sorted,
    unordered_pairs,
)
from groklab.tasks.registry import TaskConfig, register


class ComplexConfig(TaskConfig):
    name: Literal["complex"] = "complex"
    entities: int = 1000
    attributes: int = 20
    values: int = 20
    ood_fraction: float = 0.1  # of the entities, drawn afresh for each attribute
    test_id_fraction: float = 0.1  # of the unordered ID-ID pairs, held out
    train_fraction: float = 0.03  # of the remaining unordered ID-ID pairs, trained
    cross_fraction: float = 0.03  # of the unordered ID-OOD pairs, trained
    test_per_label: int = 50  # test_hard items per label (even: pairs come in both orders)
    # Each ID atomic fact written this many times into train (the paper: 1). At CPU scale the
    # atomic facts are ~10% of the rows and are memorized slowly; repeating them raises their
    # share of every batch without changing which facts are known.
    atomic_repeat: int = 1
    probe_size: int = 3000
    format: Literal["paper", "compact"] = "paper"
    atomic_order: Literal["entity_first", "attribute_first"] = "entity_first"

    def check(self) -> None:
        _validate(self)


def _validate(cfg: ComplexConfig) -> None:
    for key, low in (("entities", 4), ("attributes", 1), ("values", 2), ("probe_size", 1),
                     ("test_per_label", 2), ("atomic_repeat", 1)):
        v = getattr(cfg, key)
        if v < low:
            raise TaskError(f"{key} {v} is too small; {key} must be >= {low}")
    if cfg.test_per_label % 2:
        raise TaskError(f"test_per_label {cfg.test_per_label} is odd; it must be even "
                        "(both orders of every pair are in test_hard)")
    for key in ("ood_fraction", "test_id_fraction"):
        v = getattr(cfg, key)
        if not (0.0 <= v < 1.0):
            raise TaskError(f"{key} {v} is outside [0, 1); {key} must be >= 0 and < 1")
    for key in ("train_fraction", "cross_fraction"):
        v = getattr(cfg, key)
        if not (0.0 <= v <= 1.0):
            raise TaskError(f"{key} {v} is outside [0, 1]; {key} must be >= 0 and <= 1")
    if cfg.seed < 0:
        raise TaskError(f"seed {cfg.seed} is negative; seed must be >= 0")
    n_ood = round(cfg.ood_fraction * cfg.entities)
    if n_ood < 2 or cfg.entities - n_ood < 2:
        raise TaskError(f"ood_fraction {cfg.ood_fraction} gives {n_ood} OOD and "
                        f"{cfg.entities - n_ood} ID entities per attribute; both must be >= 2")


def _choose(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """round(fraction * n) of range(n), sorted."""
    return sample_sorted(rng, n, round(fraction * n))


def reach_from(sources: np.ndarray, ge: np.ndarray) -> np.ndarray:
    """[len(sources), n] bool: which nodes each source reaches in 1+ steps of the >= graph
    ``ge`` [n, n] (ge[x, y]: a fact says x >= y). Breadth first, all sources at once."""
    adj = ge.astype(np.float32)
    reached = ge[sources].copy()
    frontier = reached
    while frontier.any():
        nxt = (frontier.astype(np.float32) @ adj) > 0
        frontier = nxt & ~reached
        reached |= frontier
    return reached


def ge_graph(n: int, x: np.ndarray, y: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Dense >= graph from unordered comparison facts (x, y, label of x vs y: 0 <, 1 =, 2 >)."""
    ge = np.zeros((n, n), dtype=bool)
    ge[x[label >= 1], y[label >= 1]] = True
    ge[y[label <= 1], x[label <= 1]] = True
    return ge


def hard_pairs(values: np.ndarray, ood: np.ndarray, id_id: tuple, cross: tuple) -> tuple:
    """Unordered OOD-OOD pairs (attribute, a, b), a < b, whose label follows from the cross
    comparisons and the ID values but not from the trained comparisons alone.
    ``id_id`` / ``cross``: (attribute, x, y) arrays of the trained unordered pairs."""
    n_ent, n_attr = values.shape
    out: tuple[list, list, list] = ([], [], [])
    for k in range(n_attr):
        v = values[:, k]
        o_ids = np.flatnonzero(ood[:, k])
        ck = cross[0] == k
        x, y = cross[1][ck], cross[2][ck]
        # orient each cross pair as (OOD entity, ID entity)
        o_side = np.where(ood[x, k], x, y)
        i_side = np.where(ood[x, k], y, x)
        oi = np.sign(v[o_side] - v[i_side])  # OOD vs ID
        slot = np.full(n_ent, -1)
        slot[o_ids] = np.arange(o_ids.size)
        lo = np.full(o_ids.size, -1)  # max value of an ID entity the OOD entity is >= to
        hi = np.full(o_ids.size, np.iinfo(np.int64).max)  # min value of one it is <=
        np.maximum.at(lo, slot[o_side[oi >= 0]], v[i_side[oi >= 0]])
        np.minimum.at(hi, slot[o_side[oi <= 0]], v[i_side[oi <= 0]])
        full = lo[:, None] >= hi[None, :]  # full[a, b]: OOD a reaches OOD b
        tk = id_id[0] == k
        xs = np.concatenate([id_id[1][tk], x])
        ys = np.concatenate([id_id[2][tk], y])
        ge = ge_graph(n_ent, xs, ys, np.sign(v[xs] - v[ys]) + 1)
        train_only = reach_from(o_ids, ge)[:, o_ids]
        a, b = np.triu_indices(o_ids.size, k=1)
        lab = np.sign(v[o_ids[a]] - v[o_ids[b]])
        derivable = np.where(lab > 0, full[a, b], np.where(lab < 0, full[b, a],
                                                             full[a, b] & full[b, a]))
        trivial = np.where(lab > 0, train_only[a, b], np.where(
            lab < 0, train_only[b, a], train_only[a, b] & train_only[b, a]))
        keep = derivable & ~trivial
        out[0].append(np.full(int(keep.sum()), k, dtype=np.int32))
        out[1].append(o_ids[a[keep]].astype(np.int32))
        out[2].append(o_ids[b[keep]].astype(np.int32))
    return tuple(np.concatenate(p) for p in out)


def pinned_ood(values: np.ndarray, ood: np.ndarray, cross: tuple, n_val: int) -> np.ndarray:
    """[entities, attributes] bool: OOD facts whose value the trained cross comparisons fix
    (integer bounds: o > e of value 5 means o >= 6)."""
    n_ent, n_attr = values.shape
    lo = np.zeros((n_ent, n_attr), dtype=np.int64)
    hi = np.full((n_ent, n_attr), n_val - 1, dtype=np.int64)
    k, x, y = (np.asarray(c, dtype=np.int64) for c in cross)
    for a, b in ((x, y), (y, x)):  # each orientation: a the OOD side
        m = ood[a, k]
        a, b, kk = a[m], b[m], k[m]
        d = np.sign(values[a, kk] - values[b, kk])
        np.maximum.at(lo, (a, kk), np.where(d > 0, values[b, kk] + 1,
                                             np.where(d == 0, values[b, kk], 0)))
        np.minimum.at(hi, (a, kk), np.where(d < 0, values[b, kk] - 1,
                                             np.where(d == 0, values[b, kk], n_val)))
    return ood & (lo == hi)


@register(
    "complex",
    ComplexConfig,
    "complex reasoning: OOD-OOD comparisons only derivable by chaining facts (Wang et al. 2024)",
)
def build(cfg: ComplexConfig) -> TaskData:
    _validate(cfg)
    n_ent, n_attr, n_val = cfg.entities, cfg.attributes, cfg.values
    rng = np.random.default_rng(cfg.seed)
    values, ood = draw_table(rng, n_ent, n_attr, n_val, cfg.ood_fraction)

    train_p: tuple[list, list, list] = ([], [], [])
    test_p: tuple[list, list, list] = ([], [], [])
    cross_p: tuple[list, list, list] = ([], [], [])
    n_id_id = n_cross = 0
    for k in range(n_attr):
        id_ent, ood_ent = np.flatnonzero(~ood[:, k]), np.flatnonzero(ood[:, k])
        x, y = unordered_pairs(id_ent)
        n_id_id += x.size
        to_test = rng.random(x.size) < cfg.test_id_fraction  # per unordered pair
        pool = np.flatnonzero(~to_test)
        chosen = pool[_choose(rng, pool.size, cfg.train_fraction)]
        for parts, idx in ((train_p, chosen), (test_p, np.flatnonzero(to_test))):
            parts[0].append(np.full(idx.size, k, dtype=np.int32))
            parts[1].append(x[idx])
            parts[2].append(y[idx])
        cx = np.repeat(id_ent, ood_ent.size).astype(np.int32)
        cy = np.tile(ood_ent, id_ent.size).astype(np.int32)
        n_cross += cx.size
        c = _choose(rng, cx.size, cfg.cross_fraction)
        cross_p[0].append(np.full(c.size, k, dtype=np.int32))
        cross_p[1].append(cx[c])
        cross_p[2].append(cy[c])
    topleft, test_id, cross = PairSet(*train_p), PairSet(*test_p), PairSet(*cross_p)
    tl = (topleft.attr, topleft.e1, topleft.e2)
    cr = (cross.attr, cross.e1, cross.e2)
    hard = PairSet(*([p] for p in hard_pairs(values, ood, tl, cr)))

    # test_hard: per label, test_per_label ordered items, both orders of each chosen pair
    hv = np.sign(values[hard.e1, hard.attr] - values[hard.e2, hard.attr])
    want = cfg.test_per_label
    unequal, equal = np.flatnonzero(hv != 0), np.flatnonzero(hv == 0)
    if unequal.size < want or equal.size < want // 2:
        raise TaskError(
            f"only {unequal.size} unequal and {equal.size} equal OOD-OOD pairs need chaining "
            f"(test_per_label {want} needs {want} and {want // 2}); raise entities or "
            f"cross_fraction, or lower train_fraction or test_per_label")
    pick = np.concatenate([unequal[sample_sorted(rng, unequal.size, want)],
                           equal[sample_sorted(rng, equal.size, want // 2)]])
    hard_o = np.sort(np.concatenate([2 * pick, 2 * pick + 1]))

    vocab = comparison_vocab(n_ent, n_attr, n_val, cfg.format == "paper")
    attribute_first = cfg.atomic_order == "attribute_first"

    def rows(attr, e1, e2) -> Split:
        return comparison_rows(values, vocab, attribute_first, attr, e1, e2)

    def atomic(f: np.ndarray) -> Split:
        e, k = np.divmod(f, n_attr)
        return rows(k, e, np.full(f.size, -1))

    def every(ps: PairSet) -> np.ndarray:
        return np.arange(len(ps))

    f_ood = ood.reshape(-1)
    id_f, ood_f = np.flatnonzero(~f_ood), np.flatnonzero(f_ood)
    pin_f = np.flatnonzero(pinned_ood(values, ood, cr, n_val).reshape(-1))
    ta, t1, t2 = (np.concatenate(z) for z in zip(topleft.ordered(every(topleft)),
                                                 cross.ordered(every(cross))))
    id_rep = np.repeat(id_f, cfg.atomic_repeat)
    train = rows(np.concatenate([id_rep % n_attr, ta]), np.concatenate([id_rep // n_attr, t1]),
                 np.concatenate([np.full(id_rep.size, -1), t2]))
    cap = cfg.probe_size
    n_inf = len(topleft) + len(cross)
    inf_pick = sample_sorted(rng, n_inf, cap)
    probes = {
        "atomic_id": atomic(id_f[sample_sorted(rng, id_f.size, cap)]),
        "atomic_ood": atomic(ood_f[sample_sorted(rng, ood_f.size, cap)]),
        "atomic_ood_pinned": atomic(pin_f[sample_sorted(rng, pin_f.size, cap)]),
        "train_inferred": rows(ta[inf_pick], t1[inf_pick], t2[inf_pick]),
        "test_id": rows(*test_id.ordered(sample_sorted(rng, len(test_id), cap))),
        "test_hard": rows(*hard.ordered(hard_o)),
    }
    info = {
        "n_atomic_id": int(id_f.size),
        "n_atomic_ood": int(ood_f.size),
        "n_atomic_ood_pinned": int(pin_f.size),
        "n_id_id_pairs": 2 * n_id_id,
        "n_cross_pairs": 2 * n_cross,
        "n_train_id_id": len(topleft),
        "n_train_cross": len(cross),
        "n_train": len(train),
        "n_test_id_pool": len(test_id),
        "n_hard_pool": len(hard),
        "n_test_hard": int(hard_o.size),
        "chance_test_hard": 1 / 3,
    }
    return TaskData(
        name="complex",
        vocab=vocab,
        train=train,
        probes=probes,
        id_split="test_id",
        ood_split="test_hard",
        memorization_split="train_inferred",
        info=info,
        arrays={"values": values, "ood": ood},
    )
