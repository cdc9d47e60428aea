"""Two-hop composition over a random knowledge graph (Wang et al. 2024, "Grokked Transformers").

The graph has ``entities`` entities and ``relations`` relations. Every entity h has exactly
``out_degree`` out-edges, with distinct relations, and each edge (h, r) points at one tail t drawn
uniformly (self-loops and shared tails allowed). An edge is an *atomic fact* (h, r, t). Two
chained atomic facts (h, r1, b) and (b, r2, t) give an *inferred fact* (h, r1, r2) -> t through
the bridge entity b. Because the relations of one head are distinct, (h, r1, r2) names one path.

A fraction ``ood_fraction`` of the individual atomic facts is marked OOD (per fact, not per
entity or relation: one entity can have both kinds of out-edges). Every atomic fact, ID and OOD,
is trained on. Each two-hop path is routed by its hops:

* both hops OOD  -> ``test_ood`` (the model saw both facts, never a composition of OOD facts);
* one hop OOD    -> dropped (neither a clean ID nor a clean OOD test);
* both hops ID   -> ``test_id`` with probability ``test_id_fraction``, otherwise the train pool.

``phi`` is the ratio of trained inferred facts to ID atomic facts, so round(phi * n_atomic_id)
inferred facts are drawn without replacement from the pool. The pool bounds phi; the build fails
with the feasible maximum when phi asks for more.

Worked example with 200 entities and 20 relations (tokens: ``<e_0>``..``<e_199>`` are ids
0..199, ``<r_0>``..``<r_19>`` are 200..219, ``<pad>`` is 220). Take h=<e_5>, r1=<r_3> with
atomic fact (<e_5>, <r_3>, <e_42>) and then r2=<r_7> with (<e_42>, <r_7>, <e_17>):

* inferred row: tokens [5, 203, 207], answer at position 2, target <e_17> (id 17);
  meta: kind 1, bridge 42, hop1 [5, 3, 42], hop2 [42, 7, 17];
* atomic row for the first hop: tokens [5, 203, 220] (padded), answer at position 1, target
  <e_42>; meta: kind 0, bridge -1, hop1 [5, 3, 42], hop2 [-1, -1, -1].

``meta`` arrays hold graph indices (entity id, relation index 0..relations-1), not token ids;
for entities the two coincide. ``TaskData.arrays`` holds the graph itself: ``tails``
[entities, relations] (tail entity, -1 where h has no r-edge) and ``ood`` [entities, relations]
(True for OOD atomic facts), so analyses can build counterfactual inputs and answers.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.registry import TaskConfig, register


class CompositionConfig(TaskConfig):
    name: Literal["composition"] = "composition"
    entities: int = 2000
    relations: int = 200
    out_degree: int = 20  # distinct relations per head entity
    phi: float = 7.2  # trained inferred facts / ID atomic facts
    ood_fraction: float = 0.05  # of the individual atomic facts
    test_id_fraction: float = 0.005  # of the ID-ID paths
    probe_size: int = 3000  # cap on every evaluation probe

    def check(self) -> None:
        _validate(self)


def _validate(cfg: CompositionConfig) -> None:
    for key in ("entities", "relations", "out_degree", "probe_size"):
        v = getattr(cfg, key)
        if v <= 0:
            raise TaskError(f"{key} {v} is not positive; {key} must be >= 1")
    if cfg.out_degree > cfg.relations:
        raise TaskError(
            f"out_degree {cfg.out_degree} exceeds relations {cfg.relations}; "
            "out_degree must be <= relations"
        )
    for key in ("ood_fraction", "test_id_fraction"):
        v = getattr(cfg, key)
        if not (0.0 <= v < 1.0):
            raise TaskError(f"{key} {v} is outside [0, 1); {key} must be >= 0 and < 1")
    if not (math.isfinite(cfg.phi) and cfg.phi >= 0):
        raise TaskError(f"phi {cfg.phi} is not a finite number >= 0; phi must be >= 0")
    if cfg.seed < 0:
        raise TaskError(f"seed {cfg.seed} is negative; seed must be >= 0")


def _sample(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k of range(n) without replacement (all of them if n <= k), sorted to keep the
    canonical enumeration order inside a split."""
    if n <= k:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=k, replace=False))


@register(
    "composition",
    CompositionConfig,
    "two-hop composition (h, r1, r2) -> t over a random knowledge graph (Wang et al. 2024)",
)
def build(cfg: CompositionConfig) -> TaskData:
    _validate(cfg)
    n_ent, n_rel, deg = cfg.entities, cfg.relations, cfg.out_degree
    rng = np.random.default_rng(cfg.seed)

    # --- atomic facts. Fact index a = h * deg + k (k-th out-edge of h), so the out-edges of
    # the bridge b of any fact are the contiguous block b*deg .. b*deg + deg - 1.
    rel_of_head = np.sort(np.argsort(rng.random((n_ent, n_rel)), axis=1)[:, :deg], axis=1)
    tail_of_head = rng.integers(0, n_ent, size=(n_ent, deg))
    a_h = np.repeat(np.arange(n_ent, dtype=np.int64), deg)
    a_r = rel_of_head.reshape(-1).astype(np.int64)
    a_t = tail_of_head.reshape(-1).astype(np.int64)
    n_atomic = n_ent * deg

    # OOD is drawn over individual facts (docs/tasks.md, trap 1): split(atomics, round(0.05 N)).
    n_atomic_ood = round(cfg.ood_fraction * n_atomic)
    n_atomic_id = n_atomic - n_atomic_ood
    if n_atomic_id == 0:
        raise TaskError(
            f"ood_fraction {cfg.ood_fraction} marks all {n_atomic} atomic facts OOD; "
            "ood_fraction must leave at least one ID atomic fact"
        )
    a_ood = np.zeros(n_atomic, dtype=bool)
    a_ood[rng.choice(n_atomic, size=n_atomic_ood, replace=False)] = True

    # --- every two-hop path (a1, a2): a1 any fact, a2 any out-edge of a1's tail.
    n_paths = n_atomic * deg
    p1 = np.repeat(np.arange(n_atomic, dtype=np.int64), deg)
    p2 = (a_t[p1] * deg) + np.tile(np.arange(deg, dtype=np.int64), n_atomic)
    o1, o2 = a_ood[p1], a_ood[p2]
    both_ood = o1 & o2
    both_id = ~o1 & ~o2
    n_dropped = int(np.count_nonzero(o1 ^ o2))  # one OOD hop: neither clean ID nor clean OOD

    id_paths = np.flatnonzero(both_id)
    to_test = rng.random(id_paths.size) < cfg.test_id_fraction
    test_id_pool = id_paths[to_test]
    train_pool = id_paths[~to_test]
    test_ood_pool = np.flatnonzero(both_ood)

    # --- phi: its denominator is the ID atomic facts only (docs/tasks.md, trap 3).
    phi_max = train_pool.size / n_atomic_id
    n_train_inferred = round(cfg.phi * n_atomic_id)
    if n_train_inferred > train_pool.size:
        shown = math.floor(phi_max * 100) / 100  # round down so the stated maximum is feasible
        raise TaskError(
            f"phi {cfg.phi} is above the feasible maximum {shown:.2f} for this graph "
            f"(train pool {train_pool.size:,} inferred facts / {n_atomic_id:,} ID atomic facts)"
        )
    train_inf = train_pool[_sample(rng, train_pool.size, n_train_inferred)]

    # --- tokens: entities first (token id = entity id), then relations, then <pad>.
    rel0, pad = n_ent, n_ent + n_rel
    vocab = Vocab(
        tokens=[f"<e_{i}>" for i in range(n_ent)] + [f"<r_{j}>" for j in range(n_rel)] + ["<pad>"],
        types=["entity"] * n_ent + ["relation"] * n_rel + ["special"],
    )

    def split(f1: np.ndarray, f2: np.ndarray) -> Split:
        """Rows from fact indices: f2 == -1 makes an atomic row of fact f1, otherwise the
        inferred row of path f1 -> f2."""
        f1 = np.asarray(f1, dtype=np.int64)
        f2 = np.asarray(f2, dtype=np.int64)
        inf = f2 >= 0
        g2 = np.where(inf, f2, 0)  # safe index; masked below
        inputs = np.stack([a_h[f1], rel0 + a_r[f1], np.where(inf, rel0 + a_r[g2], pad)], axis=1)
        hop1 = np.stack([a_h[f1], a_r[f1], a_t[f1]], axis=1)
        hop2 = np.where(inf[:, None], np.stack([a_h[g2], a_r[g2], a_t[g2]], axis=1), -1)
        meta = {
            "kind": inf.astype(np.int8),
            "difficulty": inf.astype(np.float32),  # train.curriculum: atomic facts first
            "bridge": np.where(inf, a_t[f1], -1),
            "hop1": hop1,
            "hop2": hop2,
        }
        return Split(
            inputs=torch.from_numpy(inputs.astype(np.int64)),
            answer_pos=torch.from_numpy(np.where(inf, 2, 1).astype(np.int64)),
            targets=torch.from_numpy(np.where(inf, a_t[g2], a_t[f1]).astype(np.int64)),
            meta=meta,
        )

    def atomic(idx: np.ndarray) -> Split:
        return split(idx, np.full(idx.size, -1))

    def inferred(paths: np.ndarray) -> Split:
        return split(p1[paths], p2[paths])

    # Train = all atomic facts (ID and OOD: docs/tasks.md, trap 2) + the phi-sampled inferred facts.
    train = split(
        np.concatenate([np.arange(n_atomic), p1[train_inf]]),
        np.concatenate([np.full(n_atomic, -1), p2[train_inf]]),
    )
    k = cfg.probe_size
    id_atomic, ood_atomic = np.flatnonzero(~a_ood), np.flatnonzero(a_ood)
    probes = {
        "atomic_id": atomic(id_atomic[_sample(rng, id_atomic.size, k)]),
        "atomic_ood": atomic(ood_atomic[_sample(rng, ood_atomic.size, k)]),
        "train_inferred": inferred(train_inf[_sample(rng, train_inf.size, k)]),
        "test_id": inferred(test_id_pool[_sample(rng, test_id_pool.size, k)]),
        "test_ood": inferred(test_ood_pool[_sample(rng, test_ood_pool.size, k)]),
    }

    tails = np.full((n_ent, n_rel), -1, dtype=np.int64)
    tails[a_h, a_r] = a_t
    ood = np.zeros((n_ent, n_rel), dtype=bool)
    ood[a_h, a_r] = a_ood

    info = {
        "n_atomic": n_atomic,
        "n_atomic_id": n_atomic_id,
        "n_atomic_ood": n_atomic_ood,
        "n_paths": n_paths,
        "n_train_pool": int(train_pool.size),
        "n_test_id_pool": int(test_id_pool.size),
        "n_test_ood": int(test_ood_pool.size),
        "n_dropped": n_dropped,
        "n_train_inferred": n_train_inferred,
        "n_train": len(train),
        "phi_realised": n_train_inferred / n_atomic_id,
        "phi_max": float(phi_max),
    }
    return TaskData(
        name="composition",
        vocab=vocab,
        train=train,
        probes=probes,
        id_split="test_id",
        ood_split="test_ood",
        # Wang et al.'s "train" curve: the trained inferred facts. The whole train split also
        # holds the OOD atomic facts, which weight decay keeps just under 0.99 (docs/anchors.md).
        memorization_split="train_inferred",
        info=info,
        arrays={"tails": tails, "ood": ood},
    )
