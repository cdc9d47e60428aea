"""Multi-digit addition (subtraction, multiplication) as an answer span: length generalization.

A row is ``a op b = c <eos>`` right-padded with ``<pad>``, one token per digit; with ``reverse``
(the default, as McLeish et al. 2024 train) every number (both operands and the answer) is
written least-significant digit first, so the answer can be produced in the order its carries
arise. The loss and the scores cover ``c <eos>`` (``span``: exact match is the headline).

Sampling follows the reference generator: every (len a, len b) pair of the training lengths
``min_digits..max_digits`` is an equal share of the rows (a bucket), and an l-digit operand is
uniform over [10^(l-1), 10^l - 1] (so no operand has a leading zero, and 0 is never drawn).
Subtraction puts the larger operand first (answers are never negative); answers are written
without leading zeros.

Probes: ``id`` holds rows of the training buckets that are not training rows (where a bucket
has room: a 1+1-digit bucket has only 81 pairs); ``ood`` rows have both operands of
``max_digits + 1 .. eval_digits`` digits. :func:`grid_split` builds the rows of any (len a, len
b) cell up to ``eval_digits`` for the length-grid evaluation (``groklab analyze RUN
--length-grid``). The ``ood`` rows are padded to the longest row of ``eval_digits``-digit
operands, so a model's context covers every cell; training and ``id`` rows only to their own
longest row (a training step does not pay for the longest evaluated lengths).

Worked example, reversed: 12 + 9 = 21 -> tokens [2, 1, +, 9, =, 1, 2, <eos>], targets
[IGNORE, IGNORE, IGNORE, IGNORE, 1, 2, <eos>, IGNORE]: after "=" the model must write the units
digit 1, then the tens digit 2, then stop.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.objectives import IGNORE, Span
from groklab.tasks.registry import TaskConfig, register

OPS = {"add": "+", "subtract": "-", "multiply": "*"}
MAX_DIGITS = 200  # a row of 200-digit operands is already ~600 tokens


class AdditionConfig(TaskConfig):
    name: Literal["addition"] = "addition"
    op: Literal["add", "subtract", "multiply"] = "add"
    reverse: bool = True  # least-significant digit first, operands and answer
    min_digits: int = 1
    max_digits: int = 10  # training operands have min_digits..max_digits digits
    eval_digits: int = 30  # the longest operand of the ood probe and the length grid
    n_train: int = 20000
    n_test: int = 500

    def check(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise TaskError(f"min_digits {self.min_digits} / max_digits {self.max_digits}: "
                            "need 1 <= min_digits <= max_digits (an operand has >= 1 digit)")
        if not self.max_digits <= self.eval_digits <= MAX_DIGITS:
            raise TaskError(f"eval_digits {self.eval_digits}: need max_digits ({self.max_digits})"
                            f" <= eval_digits <= {MAX_DIGITS}")
        if self.n_train < 1 or self.n_test < 1:
            raise TaskError(f"n_train {self.n_train} / n_test {self.n_test}: both must be >= 1")


def answer_digits(op: str, la: int, lb: int) -> int:
    """The most digits an answer of la- and lb-digit operands can have."""
    return la + lb if op == "multiply" else max(la, lb) + (op == "add")


def row_length(op: str, la: int, lb: int) -> int:
    return la + 1 + lb + 1 + answer_digits(op, la, lb) + 1  # a op b = c <eos>


def make_vocab(op: str) -> Vocab:
    """Digits 0-9 are ids 0-9 (type ``number``: the Abacus positions count runs of them)."""
    return Vocab(tokens=[str(d) for d in range(10)] + [OPS[op], "=", "<eos>", "<pad>"],
                 types=["number"] * 10 + ["operator", "special", "special", "special"])


def _operands(rng, length: int, n: int) -> list[int]:
    first = rng.integers(1, 10, size=(n, 1))
    rest = rng.integers(0, 10, size=(n, length - 1))
    return [int("".join(map(str, r))) for r in np.concatenate([first, rest], 1)]


def _compute(op: str, a: int, b: int) -> tuple[int, int, int]:
    if op == "subtract" and a < b:
        a, b = b, a
    c = a + b if op == "add" else a - b if op == "subtract" else a * b
    return a, b, c


def _digits(x: int, reverse: bool) -> list[int]:
    s = [int(ch) for ch in str(x)]
    return s[::-1] if reverse else s


def _draw(rng, cfg: AdditionConfig, buckets: list[tuple[int, int]], n: int,
          seen: set | None = None, tries: int = 20) -> list[tuple[int, int]]:
    """``n`` (a, b) pairs, an equal share per bucket (the first ``n % len(buckets)`` buckets one
    more), in a shuffled order; pairs in ``seen`` are redrawn up to ``tries`` times."""
    counts = np.full(len(buckets), n // len(buckets))
    counts[: n % len(buckets)] += 1
    pairs = []
    for (la, lb), k in zip(buckets, counts):
        if not k:
            continue
        a, b = _operands(rng, la, int(k)), _operands(rng, lb, int(k))
        for i in range(int(k)):
            for _ in range(tries if seen is not None else 0):
                if (a[i], b[i]) not in seen:
                    break
                a[i], b[i] = _operands(rng, la, 1)[0], _operands(rng, lb, 1)[0]
            pairs.append((a[i], b[i]))
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


def _rows(pairs: list[tuple[int, int]], cfg: AdditionConfig, vocab: Vocab,
          seq_len: int | None = None) -> Split:
    """Rows padded to ``seq_len``, or (None) to the longest row among them."""
    if seq_len is None:
        seq_len = max(row_length(cfg.op, len(str(a)), len(str(b))) for a, b in pairs)
    op_id, eq, eos, pad = (vocab.id(t) for t in (OPS[cfg.op], "=", "<eos>", "<pad>"))
    inputs = np.full((len(pairs), seq_len), pad, dtype=np.int64)
    targets = np.full((len(pairs), seq_len), IGNORE, dtype=np.int64)
    len_a = np.zeros(len(pairs), dtype=np.int64)
    len_b = np.zeros(len(pairs), dtype=np.int64)
    for i, (a0, b0) in enumerate(pairs):
        len_a[i], len_b[i] = len(str(a0)), len(str(b0))
        a, b, c = _compute(cfg.op, a0, b0)
        prompt = _digits(a, cfg.reverse) + [op_id] + _digits(b, cfg.reverse) + [eq]
        answer = _digits(c, cfg.reverse) + [eos]
        row = prompt + answer
        inputs[i, : len(row)] = row
        targets[i, len(prompt) - 1 : len(row) - 1] = answer  # predicted after "=", ...
    meta = {"len_a": len_a, "len_b": len_b}
    return Split(torch.from_numpy(inputs), None, torch.from_numpy(targets), meta)


def seq_len_of(cfg: AdditionConfig) -> int:
    return row_length(cfg.op, cfg.eval_digits, cfg.eval_digits)


def grid_split(cfg: AdditionConfig, len_a: int, len_b: int, n: int, seed: int = 0) -> Split:
    """``n`` rows of ``len_a``- and ``len_b``-digit operands (one length-grid cell), padded to
    their own length; seeded per cell so every run is scored on the same rows."""
    if not (1 <= len_a <= cfg.eval_digits and 1 <= len_b <= cfg.eval_digits):
        raise TaskError(f"grid cell ({len_a}, {len_b}) is outside 1..eval_digits "
                        f"({cfg.eval_digits}); raise task.eval_digits")
    rng = np.random.default_rng([cfg.seed, seed, len_a, len_b])
    return _rows(_draw(rng, cfg, [(len_a, len_b)], n), cfg, make_vocab(cfg.op))


def decode_numbers(tokens, vocab: Vocab, reverse: bool) -> tuple[int, int, int | None]:
    """(a, b, c) read back from one row's token ids; c is None if the answer is malformed."""
    words = vocab.decode(tokens)
    op = next(i for i, w in enumerate(words) if w in OPS.values())
    eq = words.index("=")
    end = words.index("<eos>") if "<eos>" in words else len(words)

    def number(ws):
        s = "".join(ws[::-1] if reverse else ws)
        return int(s) if s.isdigit() else None

    return number(words[:op]), number(words[op + 1 : eq]), number(words[eq + 1 : end])


@register("addition", AdditionConfig,
          "multi-digit addition (or subtraction, multiplication) with reversed digits: an "
          "answer span; probes beyond the training lengths (length generalization)")
def build(cfg: AdditionConfig) -> TaskData:
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    vocab = make_vocab(cfg.op)
    seq_len = seq_len_of(cfg)
    lengths = range(cfg.min_digits, cfg.max_digits + 1)
    buckets = [(la, lb) for la in lengths for lb in lengths]
    train = _draw(rng, cfg, buckets, cfg.n_train)
    seen = set(train)
    # Training and id rows are padded to their longest row (training does not pay for the
    # context of the longest evaluated operands); ood to the full seq_len, the model's context.
    full = None if cfg.eval_digits > cfg.max_digits else seq_len
    probes = {"id": _rows(_draw(rng, cfg, buckets, cfg.n_test, seen), cfg, vocab, full)}
    ood_id = None
    if cfg.eval_digits > cfg.max_digits:
        far = range(cfg.max_digits + 1, cfg.eval_digits + 1)
        ood = _draw(rng, cfg, [(la, lb) for la in far for lb in far], cfg.n_test)
        probes["ood"] = _rows(ood, cfg, vocab, seq_len)
        ood_id = "ood"
    longest = answer_digits(cfg.op, cfg.eval_digits, cfg.eval_digits)
    return TaskData(
        name="addition", vocab=vocab, train=_rows(train, cfg, vocab), probes=probes,
        id_split="id", ood_split=ood_id,
        info={"op": cfg.op, "reverse": cfg.reverse,
              "train_digits": f"{cfg.min_digits}..{cfg.max_digits}",
              "ood_digits": f"{cfg.max_digits + 1}..{cfg.eval_digits}",
              "seq_len": seq_len, "longest_number": longest,
              "distinct_train": len(seen)},
        objective=Span(),
    )
