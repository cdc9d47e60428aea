"""Copy or reverse a digit string: the smallest ``span`` task (an answer of many tokens).

A row is ``d_1 ... d_n = a_1 ... a_n <eos>`` right-padded with ``<pad>``, where ``a`` is the
digit string copied or reversed; the loss and the scores cover ``a_1 ... a_n <eos>`` (the
``<eos>`` says where the answer stops). Training strings have ``min_len..max_len`` digits and
are distinct; ``test`` holds unseen strings of the same lengths, ``test_ood`` strings
``ood_extra`` digits longer than any trained (length generalization: with learned absolute
positions those positions were never trained).

Worked example, op reverse: "3 1 4" -> tokens [3, 1, 4, =, 4, 1, 3, <eos>], targets [IGNORE,
IGNORE, 4, 1, 3, <eos>, IGNORE, IGNORE]: the prediction after "=" must be 4, and so on.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.objectives import IGNORE, Span
from groklab.tasks.registry import TaskConfig, register


class StringsConfig(TaskConfig):
    name: Literal["strings"] = "strings"
    op: Literal["copy", "reverse"] = "reverse"
    base: int = 10  # digits 0..base-1
    min_len: int = 1
    max_len: int = 6
    ood_extra: int = 2  # test_ood strings have max_len + 1 .. max_len + ood_extra digits
    n_train: int = 2000
    n_test: int = 500


def _validate(cfg: StringsConfig) -> None:
    if not 2 <= cfg.base <= 100:
        raise TaskError(f"base {cfg.base} is outside 2..100; base must be in 2..100")
    if not 1 <= cfg.min_len <= cfg.max_len:
        raise TaskError(f"min_len {cfg.min_len} / max_len {cfg.max_len}: need "
                        "1 <= min_len <= max_len")
    if cfg.max_len + cfg.ood_extra > 64:
        raise TaskError(f"max_len + ood_extra = {cfg.max_len + cfg.ood_extra} digits; at most 64")
    if cfg.ood_extra < 0 or cfg.n_train < 1 or cfg.n_test < 1:
        raise TaskError("ood_extra must be >= 0, n_train and n_test >= 1")
    possible = sum(cfg.base**n for n in range(cfg.min_len, cfg.max_len + 1))
    if cfg.n_train + cfg.n_test > possible:
        raise TaskError(f"n_train + n_test = {cfg.n_train + cfg.n_test} exceeds the {possible} "
                        f"distinct strings of {cfg.min_len}..{cfg.max_len} digits")


def _draw(rng, cfg: StringsConfig, n: int, lengths: np.ndarray, seen: set) -> list[tuple]:
    out = []
    while len(out) < n:
        length = int(rng.choice(lengths))
        s = tuple(int(d) for d in rng.integers(0, cfg.base, size=length))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _rows(strings: list[tuple], cfg: StringsConfig, seq_len: int, eq: int, eos: int,
          pad: int) -> Split:
    inputs = np.full((len(strings), seq_len), pad, dtype=np.int64)
    targets = np.full((len(strings), seq_len), IGNORE, dtype=np.int64)
    lengths = np.zeros(len(strings), dtype=np.int64)
    for i, s in enumerate(strings):
        n = len(s)
        answer = list(s) if cfg.op == "copy" else list(reversed(s))
        row = list(s) + [eq] + answer + [eos]
        inputs[i, : len(row)] = row
        targets[i, n : 2 * n + 1] = answer + [eos]  # predicted after "=", ..., after a_n
        lengths[i] = n
    return Split(torch.from_numpy(inputs), None, torch.from_numpy(targets),
                 {"length": lengths})


@register("strings", StringsConfig,
          "copy or reverse a digit string: an answer span scored by exact match (span)")
def build(cfg: StringsConfig) -> TaskData:
    _validate(cfg)
    rng = np.random.default_rng(cfg.seed)
    digits = [str(d) for d in range(cfg.base)]
    vocab = Vocab(tokens=digits + ["=", "<eos>", "<pad>"],
                  types=["number"] * cfg.base + ["special"] * 3)
    eq, eos, pad = cfg.base, cfg.base + 1, cfg.base + 2
    longest = cfg.max_len + cfg.ood_extra
    seq_len = 2 * longest + 2
    seen: set = set()
    ids = np.arange(cfg.min_len, cfg.max_len + 1)
    train = _draw(rng, cfg, cfg.n_train, ids, seen)
    test = _draw(rng, cfg, cfg.n_test, ids, seen)
    probes = {"test": _rows(test, cfg, seq_len, eq, eos, pad)}
    if cfg.ood_extra > 0:
        ood = _draw(rng, cfg, cfg.n_test, np.arange(cfg.max_len + 1, longest + 1), seen)
        probes["test_ood"] = _rows(ood, cfg, seq_len, eq, eos, pad)
    return TaskData(
        name="strings", vocab=vocab, train=_rows(train, cfg, seq_len, eq, eos, pad),
        probes=probes, id_split="test", ood_split="test_ood" if cfg.ood_extra else None,
        info={"op": cfg.op, "train_lengths": f"{cfg.min_len}..{cfg.max_len}",
              "ood_lengths": f"{cfg.max_len + 1}..{longest}", "seq_len": seq_len},
        objective=Span(),
    )
