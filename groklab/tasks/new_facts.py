"""New atomic facts for a composition graph, and the data an injection trains and is scored on.

Given a composition run's data (``groklab/tasks/composition.py``), the new facts are either

* ``new-relations``: new edges among the existing entities, each filling an empty
  (head, relation) slot (a head has ``out_degree`` of ``relations`` relations, so slots are
  free) with a uniformly drawn tail: no new tokens;
* ``new-entities``: new entities, each with ``out_degree`` out-edges to existing entities and
  two in-edges from existing entities (at empty slots): one new entity token each, appended
  after ``<pad>`` (token ids ``n_ent + n_rel + 1 + i``; graph index ``n_ent + i``);
* facts from a file: one ``head relation tail`` per line, as tokens (``<e_5> <r_3> <e_42>``)
  or graph indices (``5 3 42``); an entity index >= the graph's count is a new entity.

Every new fact fills an empty slot: a (head, relation) that already has a tail is refused (that
would be an edit, not an addition). The two-hop queries the new facts make answerable, and that
nothing trains, are the composition probes, split by which hop is new:

* ``compose_first``: (h, r_new, b) new, then an old in-distribution fact (b, r2, t);
* ``compose_second``: an old ID fact (h, r1, b), then (b, r_new, t) new;
* ``compose_both``: both hops new.

Paths through an OOD atomic fact are left out (the base model never composes those either).
The training split is the new facts as atomic rows; with ``replay`` r, every training batch
adds round(r x n_facts) rows drawn afresh from the run's own training split (the trainer draws
them: ``groklab/train/inject.py``). Retention is read on the run's probes (``atomic_id``,
``train_inferred``, ``test_id``, ...), all kept.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab

MODES = ("new-relations", "new-entities")
IN_EDGES = 2  # per new entity: in-edges from existing entities, so it can be a bridge


def _graph(data: TaskData) -> tuple[np.ndarray, np.ndarray, int, int]:
    if data.name != "composition" or "tails" not in data.arrays:
        raise TaskError(f"fact injection needs a composition run; this run's task is "
                        f"'{data.name}'")
    tails, ood = data.arrays["tails"], data.arrays["ood"]
    return tails, ood, tails.shape[0], tails.shape[1]


def _empty_slots(tails: np.ndarray, rng, k: int, what: str) -> np.ndarray:
    free = np.argwhere(tails < 0)
    if k > len(free):
        raise TaskError(f"{k} {what} asked for, but the graph has only {len(free)} empty "
                        "(head, relation) slots; ask for fewer")
    return free[np.sort(rng.choice(len(free), size=k, replace=False))]


def new_relation_facts(data: TaskData, n: int, seed: int = 0) -> np.ndarray:
    """[n, 3] (h, r, t) graph indices: new edges among existing entities."""
    tails, _, n_ent, _ = _graph(data)
    rng = np.random.default_rng(seed)
    slots = _empty_slots(tails, rng, n, "new facts")
    return np.column_stack([slots, rng.integers(0, n_ent, size=n)]).astype(np.int64)


def new_entity_facts(data: TaskData, n: int, seed: int = 0) -> np.ndarray:
    """About n facts: ceil(n / (out_degree + 2)) new entities, each with out_degree out-edges
    (distinct relations) to existing entities and 2 in-edges from existing entities."""
    tails, _, n_ent, n_rel = _graph(data)
    deg = int((tails >= 0).sum(1).max())
    k = max(1, math.ceil(n / (deg + IN_EDGES)))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        rels = np.sort(rng.choice(n_rel, size=deg, replace=False))
        out += [(n_ent + i, r, int(rng.integers(0, n_ent))) for r in rels]
    slots = _empty_slots(tails, rng, k * IN_EDGES, "in-edges of new entities")
    out += [(int(h), int(r), n_ent + i // IN_EDGES) for i, (h, r) in enumerate(slots)]
    return np.asarray(out, dtype=np.int64)


_TOKEN = re.compile(r"^<([er])_(\d+)>$")


def _field(s: str, kind: str, where: str) -> int:
    m = _TOKEN.match(s)
    if m:
        if m.group(1) != kind:
            raise TaskError(f"{where}: '{s}' is not an {'entity' if kind == 'e' else 'relation'}")
        return int(m.group(2))
    if s.isdigit():
        return int(s)
    raise TaskError(f"{where}: '{s}' is neither a token like <{kind}_3> nor an index")


def read_facts(data: TaskData, path: str | Path) -> np.ndarray:
    """[n, 3] facts from a file (see the module docstring); every line checked."""
    tails, _, n_ent, n_rel = _graph(data)
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"--facts '{path}' is not a file, nor one of: {', '.join(MODES)}")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").replace("\t", " ").split()
        where = f"{path.name} line {i}"
        if len(parts) != 3:
            raise TaskError(f"{where}: expected 'head relation tail', got '{line}'")
        h, r, t = (_field(p, k, where) for p, k in zip(parts, "ere"))
        if r >= n_rel:
            raise TaskError(f"{where}: relation {r} is outside the graph's 0..{n_rel - 1}")
        if h < n_ent and tails[h, r] >= 0:
            raise TaskError(f"{where}: (<e_{h}>, <r_{r}>) already has tail <e_{tails[h, r]}>; "
                            "injected facts must fill empty (head, relation) slots")
        rows.append((h, r, t))
    if not rows:
        raise TaskError(f"--facts '{path}' holds no facts")
    facts = np.asarray(rows, dtype=np.int64)
    if len({(h, r) for h, r, _ in rows}) != len(rows):
        raise TaskError(f"--facts '{path}' gives one (head, relation) two tails")
    new = np.unique(facts[:, [0, 2]][facts[:, [0, 2]] >= n_ent])
    if len(new) and not np.array_equal(new, n_ent + np.arange(len(new))):
        raise TaskError(f"new entities in '{path}' must be numbered {n_ent}, {n_ent + 1}, ... "
                        f"without gaps; got {new[:5].tolist()}")
    return facts


def make_facts(data: TaskData, facts: str, n: int, seed: int) -> np.ndarray:
    if facts == "new-relations":
        return new_relation_facts(data, n, seed)
    if facts == "new-entities":
        return new_entity_facts(data, n, seed)
    return read_facts(data, facts)


def compose_paths(data: TaskData, facts: np.ndarray) -> dict[str, np.ndarray]:
    """kind -> [m, 5] (h, r1, r2, bridge, t) two-hop paths through at least one new fact."""
    tails, ood, n_ent, n_rel = _graph(data)
    n_total = max(n_ent, int(facts[:, [0, 2]].max()) + 1)
    all_tails = np.full((n_total, n_rel), -1, dtype=np.int64)
    all_tails[:n_ent] = np.where(ood, -1, tails)  # OOD hops never compose: left out
    new = np.zeros((n_total, n_rel), dtype=bool)
    all_tails[facts[:, 0], facts[:, 1]] = facts[:, 2]
    new[facts[:, 0], facts[:, 1]] = True
    heads_into: dict[int, list[tuple[int, int]]] = {}
    for h, r in np.argwhere(all_tails >= 0):
        heads_into.setdefault(int(all_tails[h, r]), []).append((int(h), int(r)))
    paths = {"compose_first": set(), "compose_second": set(), "compose_both": set()}
    for h, r, b in facts:
        for r2 in np.flatnonzero(all_tails[b] >= 0):  # the new fact as first hop
            kind = "compose_both" if new[b, r2] else "compose_first"
            paths[kind].add((int(h), int(r), int(r2), int(b), int(all_tails[b, r2])))
        for h0, r1 in heads_into.get(int(h), []):  # the new fact as second hop
            kind = "compose_both" if new[h0, r1] else "compose_second"
            paths[kind].add((h0, r1, int(r), int(h), int(b)))
    return {k: np.asarray(sorted(v), dtype=np.int64).reshape(-1, 5) for k, v in paths.items()}


class Tokens:
    """Graph indices -> token ids, with new entities after ``<pad>``."""

    def __init__(self, n_ent: int, n_rel: int):
        self.n_ent, self.rel0, self.pad = n_ent, n_ent, n_ent + n_rel

    def ent(self, e: np.ndarray) -> np.ndarray:
        e = np.asarray(e, dtype=np.int64)
        return np.where(e < self.n_ent, e, self.pad + 1 + (e - self.n_ent))

    def atomic(self, facts: np.ndarray) -> Split:
        h, r, t = facts.T
        inputs = np.column_stack([self.ent(h), self.rel0 + r, np.full(len(h), self.pad)])
        return Split(torch.from_numpy(inputs), torch.ones(len(h), dtype=torch.long),
                     torch.from_numpy(self.ent(t)),
                     {"kind": np.zeros(len(h), np.int8), "bridge": np.full(len(h), -1),
                      "hop1": facts.copy(), "hop2": np.full((len(h), 3), -1)})

    def two_hop(self, paths: np.ndarray) -> Split:
        h, r1, r2, b, t = paths.T
        inputs = np.column_stack([self.ent(h), self.rel0 + r1, self.rel0 + r2])
        return Split(torch.from_numpy(inputs), torch.full((len(h),), 2, dtype=torch.long),
                     torch.from_numpy(self.ent(t)),
                     {"kind": np.ones(len(h), np.int8), "bridge": self.ent(b),
                      "hop1": np.column_stack([h, r1, b]), "hop2": np.column_stack([b, r2, t])})


def injection_data(data: TaskData, facts: np.ndarray, replay: float = 0.0, seed: int = 0,
                   probe_size: int = 1000) -> TaskData:
    """The data an injection trains on (the new facts) and is scored on; ``info["n_replay"]``
    old rows join every batch."""
    tails, _, n_ent, n_rel = _graph(data)
    n_new_ent = int(max(0, facts[:, [0, 2]].max() + 1 - n_ent))
    tok = Tokens(n_ent, n_rel)
    rng = np.random.default_rng(seed)
    train = tok.atomic(facts)
    if replay < 0:
        raise TaskError(f"--replay {replay} is negative; it must be >= 0")
    n_replay = round(replay * len(facts))
    probes = {"new": tok.atomic(facts)}
    for kind, p in compose_paths(data, facts).items():
        if len(p):
            probes[kind] = tok.two_hop(p[np.sort(rng.choice(len(p), min(len(p), probe_size),
                                                             replace=False))])
    for name, p in data.probes.items():  # retention, on at most probe_size rows each
        probes[name] = p if len(p) <= probe_size else p.subset(
            np.sort(rng.choice(len(p), probe_size, replace=False)))
    vocab = data.vocab
    if n_new_ent:
        vocab = Vocab(tokens=vocab.tokens + [f"<e_{n_ent + i}>" for i in range(n_new_ent)],
                      types=vocab.types + ["entity"] * n_new_ent)
    info = {"n_new_facts": len(facts), "n_new_entities": n_new_ent, "n_replay": n_replay,
            "n_train": len(train), "base_vocab": len(data.vocab),
            **{f"n_{k}": len(v) for k, v in probes.items() if k.startswith("compose")}}
    return replace(data, vocab=vocab, train=train, probes=probes, id_split="test_id",
                   ood_split=None, memorization_split="new", info=info,
                   arrays={**data.arrays, "new_facts": facts})
