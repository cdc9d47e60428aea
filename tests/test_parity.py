"""Sparse parity (PAIR explorable) and the plain MLP that learns it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from groklab.config import load_config
from groklab.models import MLP, ModelConfig
from groklab.tasks import TaskError, make_task
from groklab.train.loop import Run


def test_labels_are_the_parity_of_the_first_k_bits():
    d = make_task("parity", n_bits=12, k=3, n_train=300, n_test=500, seed=4)
    assert d.vocab.tokens == ["<parity_0>", "<parity_1>", "0", "1", "="]
    assert d.vocab.types == ["label", "label", "bit", "bit", "special"]
    for split in (d.train, d.probes["test"]):
        x = split.inputs.numpy()
        bits = x[:, :12] - 2  # token "0" is id 2, "1" is id 3
        assert set(np.unique(bits)) <= {0, 1} and (x[:, 12] == 4).all()
        assert (split.targets.numpy() == bits[:, :3].sum(1) % 2).all()
        assert (split.answer_pos == 12).all()
        np.testing.assert_array_equal(split.meta["bits"], bits)
    train = {tuple(r) for r in d.train.inputs.tolist()}
    assert len(train) == 300  # a fixed set of distinct strings
    assert not train & {tuple(r) for r in d.probes["test"].inputs.tolist()}
    assert 0.35 < d.train.targets.float().mean() < 0.65
    # Pure function of the config and seed.
    again = make_task("parity", n_bits=12, k=3, n_train=300, n_test=500, seed=4)
    assert torch.equal(again.train.inputs, d.train.inputs)


def test_preset_sizes_and_bad_parameters():
    d = make_task("parity")
    assert d.info["n_bits"] == 30 and d.info["k"] == 3 and len(d.train) == 1200
    assert d.seq_len == 31 and len(d.probes["test"]) == 5000
    with pytest.raises(TaskError, match="k 31 is outside 1..n_bits"):
        make_task("parity", k=31)
    with pytest.raises(TaskError, match="n_train 16 leaves no unseen strings"):
        make_task("parity", n_bits=4, n_train=16)


def test_mlp_is_a_linear_layer_on_concatenated_one_hot_tokens():
    cfg = ModelConfig(architecture="mlp", d_mlp=16, d_vocab_out=2).resolved(5, 7)
    model = MLP(cfg)
    tokens = torch.randint(2, 4, (9, 7))
    logits, cache = model.run_with_cache(tokens, torch.full((9,), 6))
    assert logits.shape == (9, 2) and cache["hook_embed"].shape == (9, 7, 16)
    assert set(model.hook_dict) == {"hook_embed", "mlp.hook_pre", "mlp.hook_post"}
    onehot = torch.nn.functional.one_hot(tokens, 5).float().reshape(9, -1)  # [9, 7 * 5]
    W = model.W_pos_in.reshape(7 * 5, 16)
    expect = torch.relu(onehot @ W + model.b_in) @ model.W_out + model.b_out
    torch.testing.assert_close(logits, expect)


def test_mlp_memorizes_then_generalizes_sparse_parity(tmp_path):
    cfg = load_config("parity", None, [
        "task.n_bits=12", "task.n_train=300", "task.n_test=1000", "model.d_mlp=32",
        "train.steps=1000", "train.eval_every=50", "train.checkpoint_every=0",
        "train.checkpoint_per_decade=0",
    ])
    summary = Run.start(cfg, tmp_path / "parity").train()
    th = summary["thresholds"]["test"]
    mem = summary["memorization_step"]
    assert mem is not None and summary["final"]["test"] >= 0.95, summary
    assert th["0.9"] is not None and th["0.9"] >= mem  # memorized first, generalized after
    first = json.loads((tmp_path / "parity" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["acc/test"] < 0.6  # chance is 0.5
