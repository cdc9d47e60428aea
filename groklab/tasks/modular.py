"""Binary operations on Z_p and on S5: the tasks on which grokking was first seen.

Power et al. 2022 (openai/grok ``grok/data.py``) train on every equation ``a op b = c`` of one
operation and hold out a random fraction; Nanda et al. 2023 use (a + b) mod 113 with the input
``a b =`` (no operator token). Operations, with their exact definitions (mod p, Python ``%``):

    +  -  *        x+y, x-y, x*y (0 included)
    /              x * y^-1; rows with y = 0 are dropped (p(p-1) rows)
    squarepoly     x**2 + y   (openai/grok ``**2+``: y, not y**2)
    cubepoly       x**3 + y   (openai/grok ``**3+``)
    quad1..3       x²+y², x²+xy+y², x²+xy+y²+x
    cube1, cube2   x³+xy, x³+xy²+y
    mix1           y odd -> x * y^-1, y even (0 included) -> x - y; all p² rows kept
    +*  +-         x even -> x+y; x odd -> x*y / x-y
    s5, s5conj, s5aba   on the 120 permutations of 5 (``p`` is not used): with the product
                   (a*b)[i] = b[a[i]] (openai/grok's ``c = b[a]``, sympy's left-to-right order),
                   s5 = a*b, s5conj = a*b*a^-1, s5aba = a*b*a

Worked example, p=113, op "+", ``with_op_token`` false (the Nanda preset): tokens "0".."112" are
ids 0..112 (type number), "=" is id 113 (special); a=5, b=9 is the row [5, 9, 113], answer at
position 2 (the "="), target 14. With the operator token (the default) "+" is id 114 and the
row is [5, 114, 9, 113], answer at position 3. Answers are always ids 0..n-1, so a model may
unembed only those (``model.d_vocab_out = p`` drops the "=" logit, as the TransformerLens demo).

Split: all rows are permuted with ``numpy.random.default_rng(seed)`` (the data seed, independent
of the training seed, as openai/grok's fixed RandomState(0)); the first ``int(N *
train_fraction)`` rows train (``int`` as Nanda: 3830 of 12769 at 0.3; openai/grok rounds a
*percentage*), the rest are the ``test`` probe. Splits of one seed at different fractions nest.
``pairs="unordered"`` keeps only a <= b (the PAIR explorable: 67*68/2 = 2278 rows at p=67).

``TaskData.arrays``: ``table`` [n, n] (answer of every pair, -1 where undefined) and
``train_mask`` [n, n] (pairs in train); split meta ``a``, ``b`` (operand values).
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import torch
from pydantic import field_validator

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.registry import TaskConfig, register

Op = Literal[
    "+", "-", "*", "/", "squarepoly", "cubepoly", "quad1", "quad2", "quad3", "cube1", "cube2",
    "mix1", "+*", "+-", "s5", "s5conj", "s5aba",
]
S5_OPS = ("s5", "s5conj", "s5aba")


class ModularConfig(TaskConfig):
    name: Literal["modular"] = "modular"
    p: int = 97  # prime modulus (ignored by the S5 operations)
    op: Op = "+"
    train_fraction: float = 0.3  # of all rows of the operation
    with_op_token: bool = True  # False: "a b =" as Nanda et al.
    pairs: Literal["ordered", "unordered"] = "ordered"  # unordered: a <= b only (PAIR)

    @field_validator("op", mode="before")
    @classmethod
    def _bare_minus(cls, v):
        # YAML (and so --set task.op=-) reads a bare "-" as a list holding null.
        return "-" if v == [None] else v

    def check(self) -> None:
        _validate(self)


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def _validate(cfg: ModularConfig) -> None:
    if cfg.op not in S5_OPS and not (cfg.p >= 3 and is_prime(cfg.p)):
        raise TaskError(f"p {cfg.p} is not a prime >= 3; p must be a prime >= 3 (e.g. 97, 113)")
    if not 0.0 < cfg.train_fraction < 1.0:
        raise TaskError(
            f"train_fraction {cfg.train_fraction} is outside (0, 1); it must leave rows to "
            "train on and to test on"
        )
    if cfg.seed < 0:
        raise TaskError(f"seed {cfg.seed} is negative; seed must be >= 0")


def _z_p_table(op: str, p: int) -> np.ndarray:
    """[p, p] answers c of x op y (row x, column y); -1 where the operation is undefined."""
    x, y = np.meshgrid(np.arange(p, dtype=np.int64), np.arange(p, dtype=np.int64), indexing="ij")
    inv = np.array([0] + [pow(int(v), -1, p) for v in range(1, p)], dtype=np.int64)
    y_inv = inv[y]
    tables = {
        "+": lambda: x + y,
        "-": lambda: x - y,
        "*": lambda: x * y,
        "/": lambda: np.where(y == 0, -1, x * y_inv),
        "squarepoly": lambda: x**2 + y,
        "cubepoly": lambda: x**3 + y,
        "quad1": lambda: x**2 + y**2,
        "quad2": lambda: x**2 + x * y + y**2,
        "quad3": lambda: x**2 + x * y + y**2 + x,
        "cube1": lambda: x**3 + x * y,
        "cube2": lambda: x**3 + x * y**2 + y,
        "mix1": lambda: np.where(y % 2 == 1, x * y_inv, x - y),
        "+*": lambda: np.where(x % 2 == 0, x + y, x * y),
        "+-": lambda: np.where(x % 2 == 0, x + y, x - y),
    }
    t = tables[op]()
    return np.where(t < 0, -1, t % p) if op == "/" else t % p


def s5_elements() -> np.ndarray:
    """[120, 5] the permutations of 0..4 in lexicographic order (element i is row i)."""
    return np.array(list(itertools.permutations(range(5))), dtype=np.int64)


def _s5_table(op: str) -> np.ndarray:
    perms = s5_elements()
    index = {tuple(q): i for i, q in enumerate(perms)}
    n = len(perms)
    inv = np.argsort(perms, axis=1)  # inv[a][a[i]] = i

    def mul(u, v):  # (u*v)[i] = v[u[i]]: apply u, then v
        return v[u]

    table = np.empty((n, n), dtype=np.int64)
    for i, a in enumerate(perms):
        for j, b in enumerate(perms):
            if op == "s5":
                c = mul(a, b)
            elif op == "s5conj":
                c = mul(mul(a, b), inv[i])
            else:
                c = mul(mul(a, b), a)
            table[i, j] = index[tuple(c)]
    return table


def operation_table(op: str, p: int) -> np.ndarray:
    """[n, n] answer of every pair (-1 where undefined); n = p, or 120 for the S5 operations."""
    return _s5_table(op) if op in S5_OPS else _z_p_table(op, p)


@register(
    "modular",
    ModularConfig,
    "binary operations mod a prime p and on S5, 'a op b =' (Power et al. 2022; Nanda et al. 2023)",
)
def build(cfg: ModularConfig) -> TaskData:
    _validate(cfg)
    table = operation_table(cfg.op, cfg.p)
    n = table.shape[0]
    if cfg.op in S5_OPS:
        names = ["".join(map(str, q)) for q in s5_elements()]
    else:
        names = [str(i) for i in range(n)]
    tokens, types = names + ["="], ["number"] * n + ["special"]
    eq = n
    if cfg.with_op_token:
        tokens.append(cfg.op)
        types.append("operator")
    vocab = Vocab(tokens=tokens, types=types)

    a, b = np.meshgrid(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), indexing="ij")
    keep = table >= 0
    if cfg.pairs == "unordered":
        keep &= a <= b
    a, b = a[keep], b[keep]  # row-major: a*n + b order
    n_rows = a.size
    n_train = int(n_rows * cfg.train_fraction)
    if n_train == 0 or n_train == n_rows:
        raise TaskError(
            f"train_fraction {cfg.train_fraction} of {n_rows} rows leaves "
            f"{'no training' if n_train == 0 else 'no test'} rows; choose a fraction that leaves both"
        )
    perm = np.random.default_rng(cfg.seed).permutation(n_rows)
    train_idx, test_idx = np.sort(perm[:n_train]), np.sort(perm[n_train:])

    if cfg.with_op_token:
        inputs = np.stack([a, np.full_like(a, eq + 1), b, np.full_like(a, eq)], axis=1)
    else:
        inputs = np.stack([a, b, np.full_like(a, eq)], axis=1)
    answer = table[a, b]
    answer_pos = np.full(n_rows, inputs.shape[1] - 1, dtype=np.int64)

    def split(idx: np.ndarray) -> Split:
        return Split(
            inputs=torch.from_numpy(inputs[idx]),
            answer_pos=torch.from_numpy(answer_pos[idx]),
            targets=torch.from_numpy(answer[idx]),
            meta={"a": a[idx], "b": b[idx]},
        )

    train_mask = np.zeros((n, n), dtype=bool)
    train_mask[a[train_idx], b[train_idx]] = True
    info = {
        "op": cfg.op,
        "n_elements": n,
        "n_rows": int(n_rows),
        "n_train": int(n_train),
        "n_test": int(n_rows - n_train),
        "with_op_token": cfg.with_op_token,
        "pairs": cfg.pairs,
    }
    return TaskData(
        name="modular",
        vocab=vocab,
        train=split(train_idx),
        probes={"test": split(test_idx)},
        id_split="test",
        ood_split=None,
        info=info,
        arrays={"table": table, "train_mask": train_mask},
    )
