"""The modular-arithmetic task (every operation of Power et al. against Python arithmetic, the
splits, the formats) and the PAIR one-layer MLP that learns it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from groklab.config import ConfigError, load_config
from groklab.models import ModelConfig, PairMLP, build_model
from groklab.tasks import TaskError, make_task
from groklab.tasks.modular import S5_OPS
from groklab.train.loop import Run

P = 7


def _inv(y: int, p: int) -> int:
    return pow(y, -1, p)


# Written independently of the generator, from docs/tasks.md section 5.
PYTHON_OPS = {
    "+": lambda x, y, p: (x + y) % p,
    "-": lambda x, y, p: (x - y) % p,
    "*": lambda x, y, p: (x * y) % p,
    "/": lambda x, y, p: (x * _inv(y, p)) % p if y else None,
    "squarepoly": lambda x, y, p: (x * x + y) % p,
    "cubepoly": lambda x, y, p: (x**3 + y) % p,
    "quad1": lambda x, y, p: (x * x + y * y) % p,
    "quad2": lambda x, y, p: (x * x + x * y + y * y) % p,
    "quad3": lambda x, y, p: (x * x + x * y + y * y + x) % p,
    "cube1": lambda x, y, p: (x**3 + x * y) % p,
    "cube2": lambda x, y, p: (x**3 + x * y * y + y) % p,
    "mix1": lambda x, y, p: (x * _inv(y, p)) % p if y % 2 == 1 else (x - y) % p,
    "+*": lambda x, y, p: (x + y) % p if x % 2 == 0 else (x * y) % p,
    "+-": lambda x, y, p: (x + y) % p if x % 2 == 0 else (x - y) % p,
}


def _all_rows(data):
    """(a, b, answer) of every row, train and test together."""
    rows = []
    for split in (data.train, data.probes["test"]):
        toks = split.inputs.numpy()
        ans = split.targets.numpy()
        rows += [(int(t[0]), int(t[2]), int(c)) for t, c in zip(toks, ans)]
    return rows


@pytest.mark.parametrize("op", sorted(PYTHON_OPS))
def test_every_zp_operation_matches_python_for_all_pairs(op):
    data = make_task("modular", p=P, op=op, train_fraction=0.5)
    rows = _all_rows(data)
    expect = {(x, y): PYTHON_OPS[op](x, y, P) for x in range(P) for y in range(P)}
    expect = {k: v for k, v in expect.items() if v is not None}
    assert len(rows) == len(expect) == (P * (P - 1) if op == "/" else P * P)
    assert {(a, b): c for a, b, c in rows} == expect
    # Format "a op b =": numbers are ids 0..p-1, "=" is p, the operator p+1; answer at "=".
    vocab = data.vocab
    assert vocab.tokens[P] == "=" and vocab.types[P] == "special"
    assert vocab.tokens[P + 1] == op and vocab.types[P + 1] == "operator"
    assert set(vocab.types[:P]) == {"number"}
    x = data.train.inputs
    assert (x[:, 1] == P + 1).all() and (x[:, 3] == P).all() and (data.train.answer_pos == 3).all()


def _compose(u, v):  # (u*v)[i] = v[u[i]]: openai/grok's c = b[a]
    return tuple(v[i] for i in u)


def _inverse(u):
    out = [0] * len(u)
    for i, j in enumerate(u):
        out[j] = i
    return tuple(out)


@pytest.mark.parametrize("op", S5_OPS)
def test_s5_operations_match_permutation_products(op):
    data = make_task("modular", op=op, train_fraction=0.5)
    perms = list(itertools.permutations(range(5)))
    assert data.vocab.tokens[:120] == ["".join(map(str, q)) for q in perms]
    table = data.arrays["table"]
    rng = np.random.default_rng(0)
    for i, j in rng.integers(0, 120, size=(300, 2)):
        a, b = perms[i], perms[j]
        c = {"s5": _compose(a, b), "s5conj": _compose(_compose(a, b), _inverse(a)),
             "s5aba": _compose(_compose(a, b), a)}[op]
        assert perms[table[i, j]] == c
    assert len(_all_rows(data)) == 120 * 120
    # Group structure: s5 is a Latin square (every row and column a permutation).
    if op == "s5":
        assert all(len(set(r)) == 120 for r in table) and all(len(set(c)) == 120 for c in table.T)


def test_split_sizes_nesting_and_seeds():
    n = 113 * 113
    d = make_task("modular", p=113, train_fraction=0.3, with_op_token=False)
    assert len(d.train) == int(n * 0.3) == 3830 and len(d.probes["test"]) == n - 3830
    assert d.id_split == "test" and d.ood_split is None and list(d.probes) == ["test"]
    # Nanda's format "a b =": "=" is token 113, d_vocab 114, answer at position 2.
    assert len(d.vocab) == 114 and (d.train.inputs[:, 2] == 113).all()
    assert (d.train.answer_pos == 2).all()
    keys = lambda s: set(map(tuple, s.inputs[:, :2].tolist()))  # noqa: E731
    tr, te = keys(d.train), keys(d.probes["test"])
    assert not tr & te and len(tr | te) == n
    assert d.arrays["train_mask"].sum() == 3830
    # Same seed: the 30% split contains the 20% split; another seed differs.
    small = make_task("modular", p=113, train_fraction=0.2, with_op_token=False)
    assert keys(small.train) < tr
    other = make_task("modular", p=113, train_fraction=0.3, with_op_token=False, seed=1)
    assert keys(other.train) != tr


def test_unordered_pairs_as_the_pair_explorable():
    d = make_task("modular", p=67, train_fraction=0.4, pairs="unordered", with_op_token=False)
    assert d.info["n_rows"] == 67 * 68 // 2 == 2278 and len(d.train) == 911
    a, b = d.train.meta["a"], d.train.meta["b"]
    assert (a <= b).all()


@pytest.mark.parametrize("bad, match", [
    ({"p": 9}, "p 9 is not a prime >= 3"),
    ({"p": 2}, "p 2 is not a prime >= 3"),
    ({"train_fraction": 1.0}, "outside"),
    ({"p": 3, "train_fraction": 0.05}, "leaves no training rows"),
])
def test_bad_parameters_give_one_line_errors(bad, match):
    with pytest.raises(TaskError, match=match) as e:
        make_task("modular", **bad)
    assert "\n" not in str(e.value)


def test_d_vocab_out_must_cover_the_answers(tmp_path):
    cfg = load_config("modular-nanda", None, ["model.d_vocab_out=100"])
    with pytest.raises(ConfigError, match="model.d_vocab_out 100 leaves out answer token 112"):
        Run.start(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_every_preset_builds_its_model():
    for name in ("modular-nanda", "modular-power", "modular-mlp", "parity"):
        cfg = load_config(name)
        data = make_task(cfg.task)
        mcfg = cfg.model.resolved(len(data.vocab), data.seq_len)
        model = build_model(mcfg)
        logits = model(data.train.inputs[:5], data.train.answer_pos[:5])
        assert logits.shape == (5, mcfg.d_vocab_out), name


# --------------------------------------------------------------------------- the PAIR MLP


def _pair_cfg(p=11, d_vocab=12):
    return ModelConfig(architecture="pair_mlp", d_embed=16, d_mlp=8, d_vocab_out=p).resolved(
        d_vocab, 3)


def test_pair_mlp_hooks_shapes_and_factored_math():
    model = _pair_cfg()
    model = PairMLP(model)
    tokens = torch.tensor([[1, 4, 11], [4, 1, 11], [3, 3, 11]])
    logits, cache = model.run_with_cache(tokens, torch.tensor([2, 2, 2]))
    assert set(model.hook_dict) == {"hook_embed", "mlp.hook_pre", "mlp.hook_post", "hook_out"}
    assert cache["hook_embed"].shape == (3, 2, 16) and cache["mlp.hook_pre"].shape == (3, 8)
    assert logits.shape == (3, 11) and model.W_U.shape == (16, 11)
    # The same computation by hand: ReLU(E[a] W_in + E[b] W_in) W_out E[:p]^T; no biases.
    E, W_in, W_out = model.W_E, model.W_in, model.W_out
    by_hand = torch.relu(E[1] @ W_in + E[4] @ W_in) @ W_out @ E[:11].T
    torch.testing.assert_close(logits[0], by_hand)
    torch.testing.assert_close(logits[0], logits[1])  # symmetric in (a, b)
    assert all(p.dim() == 2 for p in model.parameters())
    # Operand b is the token before the answer position, so "a op b =" works too.
    with_op = torch.tensor([[1, 12, 4, 11]])
    torch.testing.assert_close(model(with_op, torch.tensor([3]))[0], logits[0])


def test_pair_mlp_checkpoint_round_trip():
    a, b = PairMLP(_pair_cfg()), PairMLP(_pair_cfg())
    b.load_unique_state_dict(a.unique_state_dict())
    x = torch.tensor([[2, 5, 11]])
    torch.testing.assert_close(a(x), b(x))
    with pytest.raises(ValueError, match="does not match"):
        b.load_unique_state_dict({"W_E": a.W_E})


def test_pair_mlp_learns_modular_addition(tmp_path):
    """A scaled-down PAIR run: memorizes within ~100 steps, then generalizes (p=31)."""
    cfg = load_config("modular-mlp", None, [
        "task.p=31", "model.d_vocab_out=31", "task.train_fraction=0.5", "model.d_embed=64",
        "model.d_mlp=48", "train.lr=1e-2", "train.weight_decay=3", "train.steps=800",
        "train.eval_every=50", "train.checkpoint_every=0", "train.checkpoint_per_decade=0",
    ])
    summary = Run.start(cfg, tmp_path / "mlp").train()
    assert summary["memorization_step"] is not None
    assert summary["final"]["test"] >= 0.9, summary["final"]
    first_test = summary["thresholds"]["test"]["0.9"]
    assert first_test is not None and first_test > summary["memorization_step"]
