"""Sparse parity: the label of an n-bit string is the parity of k of its bits.

As in the PAIR explorable "Do Machine Learning Models Memorize or Generalize?" (2023): 30-bit
random strings, the label is the parity of the **first 3** bits, and the model sees one fixed
set of training strings (1,200 in the post; the sweep's default is 500) for the whole run. The
other n - k bits are noise the model must learn to ignore; a network that memorizes the
training set first and generalizes much later has grokked.

Worked example, n=4, k=2 (tokens: "<parity_0>", "<parity_1>" are ids 0, 1 (type label),
bits "0", "1" are ids 2, 3 (type bit), "=" is id 4): the string 1011 is the row [3, 2, 3, 3, 4],
answer at position 4 (the "="), target id 1 (1 xor 0 = 1). Labels come first so a model can
unembed only them (``model.d_vocab_out = 2``). For an MLP on the concatenated one-hot inputs
the constant "=" plays the part of the explorable's input column fixed to 1.

Train and test strings are drawn uniformly with ``numpy.random.default_rng(seed)``; test strings
that also occur in train are dropped (none at n=30, where 2^30 strings exist). Split meta
``bits`` [rows, n] holds the bit values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.registry import TaskConfig, register


class ParityConfig(TaskConfig):
    name: Literal["parity"] = "parity"
    n_bits: int = 30
    k: int = 3  # the label is the parity of the first k bits
    n_train: int = 1200  # fixed training set (PAIR post: 1,200; sweep default 500)
    n_test: int = 5000

    def check(self) -> None:
        _validate(self)


def _validate(cfg: ParityConfig) -> None:
    if not 1 <= cfg.n_bits <= 62:
        raise TaskError(f"n_bits {cfg.n_bits} is outside 1..62; n_bits must be in 1..62")
    if not 1 <= cfg.k <= cfg.n_bits:
        raise TaskError(f"k {cfg.k} is outside 1..n_bits ({cfg.n_bits}); k must be in 1..n_bits")
    for key in ("n_train", "n_test"):
        if getattr(cfg, key) < 1:
            raise TaskError(f"{key} {getattr(cfg, key)} is not positive; {key} must be >= 1")
    if cfg.n_train >= 2**cfg.n_bits:
        raise TaskError(
            f"n_train {cfg.n_train} leaves no unseen strings of {cfg.n_bits} bits; "
            f"n_train must be < 2^{cfg.n_bits}"
        )
    if cfg.seed < 0:
        raise TaskError(f"seed {cfg.seed} is negative; seed must be >= 0")


@register(
    "parity",
    ParityConfig,
    "sparse parity: the parity of the first k of n random bits (PAIR explorable, 2023)",
)
def build(cfg: ParityConfig) -> TaskData:
    _validate(cfg)
    n, k = cfg.n_bits, cfg.k
    rng = np.random.default_rng(cfg.seed)
    # Training strings are distinct: a fixed set of n_train examples, in draw order.
    if n <= 20:
        train_codes = rng.choice(2**n, size=cfg.n_train, replace=False).astype(np.int64)
    else:
        draws = rng.integers(0, 2**n, size=2 * cfg.n_train, dtype=np.int64)
        _, first = np.unique(draws, return_index=True)
        train_codes = draws[np.sort(first)][: cfg.n_train]
    if train_codes.size < cfg.n_train:  # pragma: no cover - 2^n > 2^20 makes repeats rare
        raise TaskError(f"could not draw {cfg.n_train} distinct strings of {n} bits")
    test_codes = rng.integers(0, 2**n, size=cfg.n_test, dtype=np.int64)
    test_codes = test_codes[~np.isin(test_codes, train_codes)]
    if test_codes.size == 0:
        raise TaskError(f"every test string of {n} bits is in train; lower n_train or raise n_bits")

    vocab = Vocab(
        tokens=["<parity_0>", "<parity_1>", "0", "1", "="],
        types=["label", "label", "bit", "bit", "special"],
    )
    bit0, eq = 2, 4
    shifts = np.arange(n - 1, -1, -1, dtype=np.int64)  # bit 0 is the most significant

    def split(codes: np.ndarray) -> Split:
        bits = (codes[:, None] >> shifts) & 1
        inputs = np.concatenate([bit0 + bits, np.full((codes.size, 1), eq)], axis=1)
        label = bits[:, :k].sum(1) % 2
        return Split(
            inputs=torch.from_numpy(inputs.astype(np.int64)),
            answer_pos=torch.full((codes.size,), n, dtype=torch.long),
            targets=torch.from_numpy(label.astype(np.int64)),
            meta={"bits": bits.astype(np.int8)},
        )

    train = split(train_codes)
    test = split(test_codes)
    info = {
        "n_bits": n,
        "k": k,
        "n_train": int(train_codes.size),
        "n_test": int(test_codes.size),
        "train_label_mean": float(train.targets.float().mean()),
    }
    return TaskData(
        name="parity",
        vocab=vocab,
        train=train,
        probes={"test": test},
        id_split="test",
        ood_split=None,
        info=info,
    )
