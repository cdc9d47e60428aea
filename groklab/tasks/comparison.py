"""Attribute comparison over a random table of ordinal values (Wang et al. 2024, section 4).

Every (entity, attribute) pair has a value drawn uniformly from 0..values-1; that is one *atomic
fact*. A *comparison* asks, for one attribute k and two distinct entities e1, e2, whether
v1 < v2, v1 = v2 or v1 > v2.

The ID/OOD split is drawn **separately for each attribute**: a fresh round(ood_fraction *
entities) entities are OOD for attribute k, so an entity can be ID for one attribute and OOD for
another (docs/tasks.md, trap 1). Every atomic fact, ID and OOD, is trained on. Unordered pairs
{e1, e2} (no self pairs) are routed per attribute, and both orders always land in the same split,
since a->b gives b->a away (docs/tasks.md, trap 4):

* both entities OOD -> ``test_ood``;
* one OOD           -> dropped;
* both ID           -> ``test_id`` with probability ``test_id_fraction`` (per unordered pair),
                       otherwise the train pool.

round(phi * n_atomic_id) ordered comparisons are drawn without replacement from the pool.

Two formats. Worked example with 200 entities, 10 attributes, 20 values, format "compact",
atomic_order "attribute_first" (tokens: ``<e_0>``..``<e_199>`` ids 0..199, ``<attr_0>``..
``<attr_9>`` 200..209, ``<v_0>``..``<v_19>`` 210..229, ``<lt> <eq> <gt>`` 230..232, ``<pad>``
233). With value(<e_5>, <attr_3>) = 4 and value(<e_17>, <attr_3>) = 11:

* atomic row: tokens [203, 5, 233], answer at position 1, target <v_4> (id 214);
* comparison row: tokens [203, 5, 17], answer at position 2, target <lt> (4 < 11);
  meta: kind 1, attribute 3, e1 5, e2 17, v1 4, v2 11.

Format "paper" follows the official code: the comparison is [<attr_3>, <q>, <e_5>, <mask>,
<e_17>] with the answer at position 4 and per-attribute labels ``<attr_3_0>`` (<), ``<attr_3_1>``
(=), ``<attr_3_2>`` (>); atomic rows are [e, attr] (or [attr, e]) padded to length 5.

``atomic_order`` matters at small scale: written attribute-first, the order comparisons use,
value retrieval learned from atomic facts transfers to the entity slots of a comparison, and the
model reaches OOD accuracy; entity-first (the official format) stays near 0.6 (docs/tasks.md
section 2.1 and trap 15).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.registry import TaskConfig, register


class ComparisonConfig(TaskConfig):
    name: Literal["comparison"] = "comparison"
    entities: int = 1000
    attributes: int = 20
    values: int = 20  # ordinal values 0..values-1
    phi: float = 7.2  # trained comparisons / ID atomic facts
    ood_fraction: float = 0.1  # of the entities, drawn afresh for each attribute
    test_id_fraction: float = 0.1  # of the unordered ID-ID pairs
    probe_size: int = 3000  # cap on every evaluation probe
    format: Literal["paper", "compact"] = "paper"
    atomic_order: Literal["entity_first", "attribute_first"] = "entity_first"

    def check(self) -> None:
        _validate(self)


def _validate(cfg: ComparisonConfig) -> None:
    for key, low in (("entities", 2), ("attributes", 1), ("values", 2), ("probe_size", 1)):
        v = getattr(cfg, key)
        if v < low:
            raise TaskError(f"{key} {v} is too small; {key} must be >= {low}")
    for key in ("ood_fraction", "test_id_fraction"):
        v = getattr(cfg, key)
        if not (0.0 <= v < 1.0):
            raise TaskError(f"{key} {v} is outside [0, 1); {key} must be >= 0 and < 1")
    if not (math.isfinite(cfg.phi) and cfg.phi >= 0):
        raise TaskError(f"phi {cfg.phi} is not a finite number >= 0; phi must be >= 0")
    if cfg.seed < 0:
        raise TaskError(f"seed {cfg.seed} is negative; seed must be >= 0")
    n_id = cfg.entities - round(cfg.ood_fraction * cfg.entities)
    if n_id < 2:
        raise TaskError(
            f"ood_fraction {cfg.ood_fraction} leaves {n_id} ID entities per attribute out of "
            f"{cfg.entities}; at least 2 are needed to form an ID pair"
        )


def unordered_pairs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs (i < j by position) of the given entity ids, as int32 arrays."""
    iu, ju = np.triu_indices(ids.size, k=1)
    return ids[iu].astype(np.int32), ids[ju].astype(np.int32)


def sample_sorted(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k of range(n) without replacement (all of them if n <= k), sorted."""
    if n <= k:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=k, replace=False))


def draw_table(rng: np.random.Generator, n_ent: int, n_attr: int, n_val: int,
               ood_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The value table [entities, attributes] and the OOD mask, drawn per attribute."""
    values = rng.integers(0, n_val, size=(n_ent, n_attr)).astype(np.int64)
    n_ood_ent = round(ood_fraction * n_ent)
    ood = np.zeros((n_ent, n_attr), dtype=bool)
    for k in range(n_attr):  # a fresh entity split per attribute, not one global split
        ood[rng.choice(n_ent, size=n_ood_ent, replace=False), k] = True
    return values, ood


class PairSet:
    """Unordered pairs of several attributes; ordered pair o is unordered pair o // 2 in
    order o % 2 (1 = swapped), so both orders of a pair are always in the same set and a
    sample of ordered comparisons never needs the 2x-larger ordered list materialised."""

    def __init__(self, attr: list[np.ndarray], e1: list[np.ndarray], e2: list[np.ndarray]):
        self.attr = np.concatenate(attr) if attr else np.zeros(0, np.int32)
        self.e1 = np.concatenate(e1) if e1 else np.zeros(0, np.int32)
        self.e2 = np.concatenate(e2) if e2 else np.zeros(0, np.int32)

    def __len__(self) -> int:  # ordered comparisons
        return 2 * int(self.attr.size)

    def ordered(self, o: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        u, swap = o // 2, (o % 2).astype(bool)
        a, x, y = self.attr[u], self.e1[u], self.e2[u]
        return a, np.where(swap, y, x), np.where(swap, x, y)


def comparison_vocab(n_ent: int, n_attr: int, n_val: int, paper: bool) -> Vocab:
    """Entities first (token id = entity id), attributes, values, labels, specials."""
    if paper:
        labels = [f"<attr_{k}_{lab}>" for k in range(n_attr) for lab in range(3)]
        specials = ["<q>", "<mask>", "<pad>"]
    else:
        labels = ["<lt>", "<eq>", "<gt>"]
        specials = ["<pad>"]
    tokens = (
        [f"<e_{i}>" for i in range(n_ent)]
        + [f"<attr_{k}>" for k in range(n_attr)]
        + [f"<v_{v}>" for v in range(n_val)]
        + labels
        + specials
    )
    types = (
        ["entity"] * n_ent
        + ["attribute"] * n_attr
        + ["value"] * n_val
        + ["label"] * len(labels)
        + ["special"] * len(specials)
    )
    return Vocab(tokens=tokens, types=types)


def comparison_rows(values: np.ndarray, vocab: Vocab, attribute_first: bool,
                    attr: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> Split:
    """Rows from (attribute, e1, e2); e2 == -1 makes the atomic fact of (e1, attribute).
    The format ("paper" or "compact") is read off the vocabulary (it has ``<q>`` or not)."""
    n_ent, n_attr = values.shape
    paper = "<q>" in vocab.tokens
    attr0 = n_ent
    val0 = attr0 + n_attr
    lab0 = int(vocab.ids_of_type("label")[0])
    pad = vocab.id("<pad>")
    seq_len = 5 if paper else 3
    attr, e1, e2 = (np.asarray(z, dtype=np.int64) for z in (attr, e1, e2))
    n = attr.size
    cmp = e2 >= 0
    v1 = values[e1, attr]
    v2 = np.where(cmp, values[np.where(cmp, e2, 0), attr], -1)
    label = np.sign(v1 - v2) + 1  # 0: v1 < v2, 1: equal, 2: v1 > v2
    a_tok, e1_tok = attr0 + attr, e1
    inputs = np.full((n, seq_len), pad, dtype=np.int64)
    first, second = (a_tok, e1_tok) if attribute_first else (e1_tok, a_tok)
    if paper:  # comparison: [attr, <q>, e1, <mask>, e2] -> per-attribute label at pos 4
        c_rows = [
            a_tok,
            np.full(n, vocab.id("<q>")),
            e1_tok,
            np.full(n, vocab.id("<mask>")),
            e2,
        ]
        label_tok = lab0 + 3 * attr + label
    else:  # comparison: [attr, e1, e2] -> shared label at pos 2
        c_rows = [a_tok, e1_tok, e2]
        label_tok = lab0 + label
    for j, col in enumerate(c_rows):
        inputs[:, j] = np.where(cmp, col, inputs[:, j])
    inputs[:, 0] = np.where(cmp, inputs[:, 0], first)
    inputs[:, 1] = np.where(cmp, inputs[:, 1], second)
    return Split(
        inputs=torch.from_numpy(inputs),
        answer_pos=torch.from_numpy(np.where(cmp, seq_len - 1, 1).astype(np.int64)),
        targets=torch.from_numpy(np.where(cmp, label_tok, val0 + v1).astype(np.int64)),
        meta={
            "kind": cmp.astype(np.int8),
            "difficulty": cmp.astype(np.float32),  # train.curriculum: atomic facts first
            "attribute": attr,
            "e1": e1,
            "e2": np.where(cmp, e2, -1),
            "v1": v1,
            "v2": v2,
        },
    )


@register(
    "comparison",
    ComparisonConfig,
    "attribute comparison (attr, e1, e2) -> < = > from atomic values (Wang et al. 2024)",
)
def build(cfg: ComparisonConfig) -> TaskData:
    _validate(cfg)
    n_ent, n_attr, n_val = cfg.entities, cfg.attributes, cfg.values
    rng = np.random.default_rng(cfg.seed)

    values, ood = draw_table(rng, n_ent, n_attr, n_val, cfg.ood_fraction)
    n_ood_ent = int(ood[:, 0].sum())

    pool_parts: tuple[list, list, list] = ([], [], [])
    test_parts: tuple[list, list, list] = ([], [], [])
    ood_parts: tuple[list, list, list] = ([], [], [])
    for k in range(n_attr):  # loops over attributes only; pairs are handled as arrays
        id_ent, ood_ent = np.flatnonzero(~ood[:, k]), np.flatnonzero(ood[:, k])
        x, y = unordered_pairs(id_ent)
        to_test = rng.random(x.size) < cfg.test_id_fraction  # per unordered pair
        for parts, m in ((pool_parts, ~to_test), (test_parts, to_test)):
            parts[0].append(np.full(int(m.sum()), k, dtype=np.int32))
            parts[1].append(x[m])
            parts[2].append(y[m])
        x, y = unordered_pairs(ood_ent)
        ood_parts[0].append(np.full(x.size, k, dtype=np.int32))
        ood_parts[1].append(x)
        ood_parts[2].append(y)
    pool, test_id, test_ood = PairSet(*pool_parts), PairSet(*test_parts), PairSet(*ood_parts)

    n_atomic = n_ent * n_attr
    n_atomic_ood = n_ood_ent * n_attr
    n_atomic_id = n_atomic - n_atomic_ood
    n_pairs = n_attr * n_ent * (n_ent - 1)  # ordered comparisons
    n_dropped = n_attr * 2 * n_ood_ent * (n_ent - n_ood_ent)  # ID-OOD, both orders

    phi_max = len(pool) / n_atomic_id
    n_train_inferred = round(cfg.phi * n_atomic_id)
    if n_train_inferred > len(pool):
        shown = math.floor(phi_max * 100) / 100  # round down so the stated maximum is feasible
        raise TaskError(
            f"phi {cfg.phi} is above the feasible maximum {shown:.2f} for this table "
            f"(train pool {len(pool):,} ordered comparisons / {n_atomic_id:,} ID atomic facts)"
        )
    train_o = sample_sorted(rng, len(pool), n_train_inferred)

    vocab = comparison_vocab(n_ent, n_attr, n_val, cfg.format == "paper")
    attribute_first = cfg.atomic_order == "attribute_first"

    def split(attr: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> Split:
        return comparison_rows(values, vocab, attribute_first, attr, e1, e2)

    # Atomic fact index f = e * n_attr + k.
    f_ent, f_attr = np.divmod(np.arange(n_atomic, dtype=np.int64), n_attr)
    f_ood = ood.reshape(-1)

    def atomic(f: np.ndarray) -> Split:
        return split(f_attr[f], f_ent[f], np.full(f.size, -1))

    def comparisons(ps: PairSet, o: np.ndarray) -> Split:
        return split(*ps.ordered(o))

    # Train = all atomic facts (ID and OOD) + the phi-sampled ordered comparisons.
    ta, t1, t2 = pool.ordered(train_o)
    train = split(
        np.concatenate([f_attr, ta]),
        np.concatenate([f_ent, t1]),
        np.concatenate([np.full(n_atomic, -1), t2]),
    )
    cap = cfg.probe_size
    id_f, ood_f = np.flatnonzero(~f_ood), np.flatnonzero(f_ood)
    probes = {
        "atomic_id": atomic(id_f[sample_sorted(rng, id_f.size, cap)]),
        "atomic_ood": atomic(ood_f[sample_sorted(rng, ood_f.size, cap)]),
        "train_inferred": comparisons(pool, train_o[sample_sorted(rng, train_o.size, cap)]),
        "test_id": comparisons(test_id, sample_sorted(rng, len(test_id), cap)),
        "test_ood": comparisons(test_ood, sample_sorted(rng, len(test_ood), cap)),
    }

    info = {
        "n_atomic": n_atomic,
        "n_atomic_id": n_atomic_id,
        "n_atomic_ood": n_atomic_ood,
        "n_ood_entities_per_attribute": n_ood_ent,
        "n_pairs": n_pairs,
        "n_train_pool": len(pool),
        "n_test_id_pool": len(test_id),
        "n_test_ood": len(test_ood),
        "n_dropped": n_dropped,
        "n_train_inferred": n_train_inferred,
        "n_train": len(train),
        "phi_realised": n_train_inferred / n_atomic_id,
        "phi_max": float(phi_max),
    }
    return TaskData(
        name="comparison",
        vocab=vocab,
        train=train,
        probes=probes,
        id_split="test_id",
        memorization_split="train_inferred",  # as composition: the paper's train curve
        ood_split="test_ood",
        info=info,
        arrays={"values": values, "ood": ood},
    )
