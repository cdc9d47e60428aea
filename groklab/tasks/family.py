"""Kinship counting questions, the "Alice in Wonderland" problem (Nezhurina et al. 2024).

"Alice has N brothers and she also has M sisters. How many sisters does Alice's brother
have?" The answer is M + 1 (Alice counts); the paper shows frontier LLMs break down on it. Here
the question is a compact token row a small transformer trains on::

    [subject, N, M, P, Q, hop1, hop2, ask]  -> answer (a number token), read at position 7

``subject`` is ``<Alice>`` (female) or ``<Bob>`` (male); N, M are the subject's brothers and
sisters; P, Q the sons and daughters of the subject's aunt (the cousins); ``hop1``/``hop2``
walk from the subject to a relative (``<brother>``, ``<sister>``, ``<mcousin>``,
``<fcousin>``, ``<none>`` for no hop) and ``ask`` names what to count about that relative
(``<brothers>``, ``<sisters>``, ``<mcousins>``, ``<fcousins>``). Worked example: Alice, N=3,
M=6, hop brother, ask sisters -> 7.

Question types are named by their path, e.g. ``brother.sisters`` (the AIW question) or
``sister.brother.sisters`` (two inference steps: who the relative is, then what they see).
Families of types (``families``):

* ``aiw``: ``brothers``, ``sisters`` (the subject's own), ``brother.sisters``,
  ``brother.brothers``, ``sister.brothers``, ``sister.sisters``;
* ``cousins`` (AIW+-like): ``brother.fcousins``, ``sister.mcousins``, ``mcousin.sisters``,
  ``fcousin.brothers``, ``mcousin.fcousins``, ``fcousin.mcousins``;
* ``two_step``: ``brother.sister.brothers``, ``sister.brother.sisters``,
  ``brother.brother.sisters``, ``sister.sister.brothers``.

Ground truth by counting groups: the subject's sibling group has B = N + [male subject] boys and
G = M + [female subject] girls, the cousin group P boys and Q girls; a relative's brothers are the
boys of their own group less themselves, their male cousins the boys of the other group.
A question whose path names a relative who does not exist (Alice's brother when N = 0) is not
generated.

Splits: a random ``heldout_pair_fraction`` of the (N, M) grid never appears in training
(``test_pairs``), the ``heldout_types`` never appear in training (``test_types``, on trained
(N, M)); of the rest, ``train_fraction`` is trained and the remainder is ``test_id``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.comparison import sample_sorted
from groklab.tasks.registry import TaskConfig, register

FAMILIES = {
    "aiw": ("brothers", "sisters", "brother.sisters", "brother.brothers", "sister.brothers",
            "sister.sisters"),
    "cousins": ("brother.fcousins", "sister.mcousins", "mcousin.sisters", "fcousin.brothers",
                "mcousin.fcousins", "fcousin.mcousins"),
    "two_step": ("brother.sister.brothers", "sister.brother.sisters", "brother.brother.sisters",
                 "sister.sister.brothers"),
}
HOPS = ("brother", "sister", "mcousin", "fcousin")
ASKS = ("brothers", "sisters", "mcousins", "fcousins")
SUBJECTS = ("Alice", "Bob")  # female, male
SEQ_LEN = 8
ANSWER_POS = SEQ_LEN - 1


class FamilyConfig(TaskConfig):
    name: Literal["family"] = "family"
    n_max: int = 9  # brothers range 0..n_max
    m_max: int = 9  # sisters range 0..m_max
    cousins_max: int = 3  # aunt's sons and daughters 0..cousins_max
    families: list[Literal["aiw", "cousins", "two_step"]] = ["aiw"]
    subjects: Literal["alice", "both"] = "both"
    heldout_pair_fraction: float = 0.2
    heldout_types: list[str] = ["brother.sisters"]
    train_fraction: float = 0.5
    probe_size: int = 2000

    def check(self) -> None:
        _validate(self)


def question_types(cfg: FamilyConfig) -> list[str]:
    return [t for f in FAMILIES if f in cfg.families for t in FAMILIES[f]]


def _validate(cfg: FamilyConfig) -> None:
    for key, low in (("n_max", 1), ("m_max", 1), ("cousins_max", 0), ("probe_size", 1)):
        v = getattr(cfg, key)
        if v < low:
            raise TaskError(f"{key} {v} is too small; {key} must be >= {low}")
    for key in ("heldout_pair_fraction", "train_fraction"):
        v = getattr(cfg, key)
        if not (0.0 <= v < 1.0) or (key == "train_fraction" and v == 0.0):
            raise TaskError(f"{key} {v} is outside its range; {key} must be in "
                            f"{'(0, 1)' if key == 'train_fraction' else '[0, 1)'}")
    if not cfg.families:
        raise TaskError(f"families is empty; choose from {', '.join(FAMILIES)}")
    types = question_types(cfg)
    unknown = [t for t in cfg.heldout_types if t not in types]
    if unknown:
        raise TaskError(f"heldout_types {unknown} are not question types of families "
                        f"{cfg.families}; types: {', '.join(types)}")
    if len(set(cfg.heldout_types)) >= len(types):
        raise TaskError("heldout_types holds out every question type; leave one to train on")
    if cfg.seed < 0:
        raise TaskError(f"seed {cfg.seed} is negative; seed must be >= 0")


def family_vocab(max_num: int) -> Vocab:
    tokens = ([f"<{s}>" for s in SUBJECTS] + [f"<{i}>" for i in range(max_num + 1)]
              + [f"<{h}>" for h in HOPS] + [f"<{a}>" for a in ASKS] + ["<none>", "<pad>"])
    types = (["entity"] * len(SUBJECTS) + ["number"] * (max_num + 1) + ["relation"] * len(HOPS)
             + ["attribute"] * len(ASKS) + ["special"] * 2)
    return Vocab(tokens=tokens, types=types)


def split_type(qtype: str) -> tuple[list[str], str]:
    *hops, ask = qtype.split(".")
    return hops, ask


def answer(male: np.ndarray, n: np.ndarray, m: np.ndarray, p: np.ndarray, q: np.ndarray,
           hops, ask: str) -> np.ndarray:
    """Closed-form counts (arrays over questions); -1 where the path names no one."""
    male = np.asarray(male, dtype=bool)
    boys = [np.asarray(n) + male, np.asarray(p)]  # [group]: sibling group 0, cousin group 1
    girls = [np.asarray(m) + ~male, np.asarray(q)]
    group = np.zeros(male.shape, dtype=np.int64)
    x_male = male.copy()
    ok = np.ones(male.shape, dtype=bool)

    def count(g: np.ndarray, want_male: bool) -> np.ndarray:
        return np.where(g == 0, boys[0], boys[1]) if want_male else \
            np.where(g == 0, girls[0], girls[1])

    for hop in hops:
        want_male = hop in ("brother", "mcousin")
        if hop in ("brother", "sister"):
            avail = count(group, want_male) - (x_male == want_male)
        else:
            group = 1 - group
            avail = count(group, want_male)
        ok &= avail >= 1
        x_male = np.full(male.shape, want_male)
    if ask in ("brothers", "sisters"):
        want_male = ask == "brothers"
        out = count(group, want_male) - (x_male == want_male)
    else:
        out = count(1 - group, ask == "mcousins")
    return np.where(ok, out, -1)


@register(
    "family",
    FamilyConfig,
    "Alice-in-Wonderland kinship counts (subject, N, M, P, Q, hops, ask) -> number",
)
def build(cfg: FamilyConfig) -> TaskData:
    _validate(cfg)
    rng = np.random.default_rng(cfg.seed)
    types = question_types(cfg)
    max_num = max(cfg.n_max, cfg.m_max, cfg.cousins_max) + 1
    vocab = family_vocab(max_num)
    num0 = int(vocab.ids_of_type("number")[0])
    males = (False, True) if cfg.subjects == "both" else (False,)
    g, n, m, p, q = (a.reshape(-1) for a in np.meshgrid(
        np.array(males), np.arange(cfg.n_max + 1), np.arange(cfg.m_max + 1),
        np.arange(cfg.cousins_max + 1), np.arange(cfg.cousins_max + 1), indexing="ij"))
    n_pairs = (cfg.n_max + 1) * (cfg.m_max + 1)
    held = np.zeros(n_pairs, dtype=bool)
    held[rng.choice(n_pairs, size=round(cfg.heldout_pair_fraction * n_pairs), replace=False)] = True
    cols: dict[str, list] = {k: [] for k in ("male", "n", "m", "p", "q", "qtype", "answer")}
    for t_idx, t in enumerate(types):
        hops, ask = split_type(t)
        ans = answer(g, n, m, p, q, hops, ask)
        ok = ans >= 0
        for key, arr in (("male", g), ("n", n), ("m", m), ("p", p), ("q", q), ("answer", ans)):
            cols[key].append(arr[ok])
        cols["qtype"].append(np.full(int(ok.sum()), t_idx))
    c = {k: np.concatenate(v).astype(np.int64) for k, v in cols.items()}
    hops_tok = np.full((len(types), 2), vocab.id("<none>"))
    ask_tok = np.zeros(len(types), dtype=np.int64)
    for t_idx, t in enumerate(types):
        hops, ask = split_type(t)
        for j, h in enumerate(hops):
            hops_tok[t_idx, j] = vocab.id(f"<{h}>")
        ask_tok[t_idx] = vocab.id(f"<{ask}>")
    inputs = np.stack([vocab.id("<Alice>") + c["male"], num0 + c["n"], num0 + c["m"], num0 + c["p"], num0 + c["q"],
                       hops_tok[c["qtype"], 0], hops_tok[c["qtype"], 1], ask_tok[c["qtype"]]], 1)
    every = Split(torch.from_numpy(inputs), torch.full((len(inputs),), ANSWER_POS),
                  torch.from_numpy(num0 + c["answer"]), meta=c)

    pair_held = held[c["n"] * (cfg.m_max + 1) + c["m"]]
    type_held = np.isin(c["qtype"], [types.index(t) for t in cfg.heldout_types])
    id_rows = np.flatnonzero(~pair_held & ~type_held)
    to_train = np.zeros(id_rows.size, dtype=bool)
    to_train[sample_sorted(rng, id_rows.size, round(cfg.train_fraction * id_rows.size))] = True
    cap = cfg.probe_size

    def capped(idx: np.ndarray) -> Split:
        return every.subset(idx[sample_sorted(rng, idx.size, cap)])

    train_idx = id_rows[to_train]
    probes = {
        "test_id": capped(id_rows[~to_train]),
        "test_pairs": capped(np.flatnonzero(pair_held & ~type_held)),
        "test_types": capped(np.flatnonzero(~pair_held & type_held)),
    }
    info = {
        "question_types": types,
        "ranges": [cfg.n_max, cfg.m_max, cfg.cousins_max],
        "heldout_types": list(cfg.heldout_types),
        "heldout_pairs": [[int(i // (cfg.m_max + 1)), int(i % (cfg.m_max + 1))]
                          for i in np.flatnonzero(held)],
        "n_questions": len(every),
        "n_train": int(train_idx.size),
    }
    return TaskData(
        name="family",
        vocab=vocab,
        train=every.subset(train_idx),
        probes={k: v for k, v in probes.items() if len(v)},
        id_split="test_id",
        ood_split="test_pairs" if len(probes["test_pairs"]) else None,
        info=info,
    )
