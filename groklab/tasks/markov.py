"""Sequences from a random Markov chain: the smallest ``lm`` task, with a known floor.

A first-order chain over ``states`` tokens; each state moves to ``branching`` successors (drawn
per state) with Dirichlet(1) probabilities. Sequences of ``length`` tokens start from the
stationary-free uniform start state and are scored on every next token. The chain's entropy
rate H (nats per token, under its stationary distribution) bounds what any model can reach:
perplexity exp(H) (``info['ppl_floor']``); a model that has learned the transition table gets
close to it, one that only learned unigram statistics stays near exp(H(unigram)).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.objectives import IGNORE, LanguageModel
from groklab.tasks.registry import TaskConfig, register


class MarkovConfig(TaskConfig):
    name: Literal["markov"] = "markov"
    states: int = 16
    branching: int = 3
    length: int = 24
    n_train: int = 2000
    n_val: int = 500


def _sequences(rng, P: np.ndarray, n: int, length: int) -> np.ndarray:
    states = P.shape[0]
    cum = P.cumsum(1)
    seq = np.empty((n, length), dtype=np.int64)
    seq[:, 0] = rng.integers(0, states, size=n)
    for t in range(1, length):  # vectorized over rows: one draw per position
        u = rng.random(n)[:, None]
        seq[:, t] = np.minimum((u > cum[seq[:, t - 1]]).sum(1), states - 1)
    return seq


def _split(seq: np.ndarray) -> Split:
    targets = np.full_like(seq, IGNORE)
    targets[:, :-1] = seq[:, 1:]
    return Split(torch.from_numpy(seq), None, torch.from_numpy(targets))


@register("markov", MarkovConfig,
          "sequences of a random Markov chain: next-token language modelling with a known floor")
def build(cfg: MarkovConfig) -> TaskData:
    if not 2 <= cfg.states <= 4096 or not 1 <= cfg.branching <= cfg.states:
        raise TaskError("states must be in 2..4096 and branching in 1..states")
    if cfg.length < 2 or cfg.n_train < 1 or cfg.n_val < 1:
        raise TaskError("length must be >= 2, n_train and n_val >= 1")
    rng = np.random.default_rng(cfg.seed)
    P = np.zeros((cfg.states, cfg.states))
    for s in range(cfg.states):
        nxt = rng.choice(cfg.states, size=cfg.branching, replace=False)
        P[s, nxt] = rng.dirichlet(np.ones(cfg.branching))
    # Entropy rate under the stationary distribution (the leading left eigenvector).
    w, v = np.linalg.eig(P.T)
    pi = np.abs(np.real(v[:, np.argmin(np.abs(w - 1))]))
    pi /= pi.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(pi[:, None] * np.where(P > 0, P * np.log(P), 0.0))
    vocab = Vocab(tokens=[f"s{i}" for i in range(cfg.states)], types=["number"] * cfg.states)
    return TaskData(
        name="markov", vocab=vocab,
        train=_split(_sequences(rng, P, cfg.n_train, cfg.length)),
        probes={"val": _split(_sequences(rng, P, cfg.n_val, cfg.length))},
        id_split="val", ood_split=None,
        info={"entropy_rate": round(float(h), 6), "ppl_floor": round(math.exp(h), 6)},
        arrays={"transitions": P.astype(np.float32)},
        objective=LanguageModel(),
    )
