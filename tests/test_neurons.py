"""MLP neurons: a neuron wired to one token is maximally selective for it; a neuron of a modular
model that computes cos(w_k a) has dominant frequency k."""

import math

import numpy as np
import pytest
import torch

from groklab.analysis import neurons
from groklab.analysis.sources import AnalysisError
from groklab.models import HookedTransformer, ModelConfig, build_model
from groklab.tasks import make_task


def _one_hot_model(task, d_mlp=4):
    V, P = len(task.vocab), task.seq_len
    cfg = ModelConfig(n_layers=1, d_model=V + P, n_heads=1, d_mlp=d_mlp, act_fn="relu",
                      normalization_type=None, tie_word_embeddings=False)
    model = HookedTransformer(cfg.resolved(d_vocab=V, n_ctx=P))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[:, :V] = torch.eye(V)
        model.W_pos[:, V:] = torch.eye(P)
    return model.eval()


def test_a_neuron_wired_to_one_token_is_maximally_selective_for_it(tmp_path):
    task = make_task("composition", entities=40, relations=6, out_degree=3, phi=2.0)
    model = _one_hot_model(task)
    v = int(task.vocab.ids_of_type("relation")[2])
    with torch.no_grad():
        model.blocks[0].mlp.W_in[v, 0] = 1.0  # neuron 0 fires iff the answer position holds v
    res = neurons.run(model, task=task, n_examples=200)
    m = res.measures
    assert m["selectivity"][0, 0, 0] == pytest.approx(1.0, abs=1e-6)  # stored as float32
    assert m["best_token"][0, 0, 0] == v and m["best_position"][0, 0, 0] == 2
    assert (m["selectivity"][0, 0, 1:] < 1e-9).all()  # silent neurons are not selective
    ex = task.probes["train_inferred"]
    rows = res.example_index[m["top_rows"][0, 0, 0]]
    assert (ex.inputs[rows, 2] == v).all()  # its top rows all hold the token
    assert "relation" in res.text()
    paths = res.save(tmp_path)
    assert {p.name for p in paths} >= {"neurons.npz", "neurons.json", "neurons.png"}
    back = neurons.NeuronsResult.load(tmp_path)
    np.testing.assert_array_equal(back.measures["best_token"], m["best_token"])


def test_selectivity_is_the_squared_correlation_with_a_token_indicator():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (300, 2), generator=g)
    noise = torch.randn(300, generator=g, dtype=torch.float64)
    acts = ((tokens[:, 1] == 3).double() + noise)[None, :, None]  # [L, n, N]
    sel, pos, tok = neurons.token_selectivity(acts, tokens, 5)
    ind = (tokens[:, 1] == 3).double().numpy()
    assert sel[0, 0] == pytest.approx(np.corrcoef(ind, acts[0, :, 0].numpy())[0, 1] ** 2)
    assert (pos[0, 0], tok[0, 0]) == (1, 3)


def test_a_fourier_neuron_gets_its_frequency():
    task = make_task("modular", p=11, train_fraction=0.5)
    model = _one_hot_model(task, d_mlp=2)
    V = len(task.vocab)
    with torch.no_grad():  # the head reads cos(w_3 a) + 2 off position 0 into the answer
        a = model.blocks[0].attn  # position's (empty) position-0 dimension; neuron 0 reads it
        a.W_Q[0, V:, 0] = 50.0  # every query matches key position 0 only
        a.W_K[0, V, 0] = 1.0
        a.W_V[0, :11, 0] = torch.tensor([math.cos(2 * math.pi * 3 * x / 11) + 2
                                         for x in range(11)])
        a.W_O[0, 0, V] = 1.0
        model.blocks[0].mlp.W_in[V, 0] = 1.0
    res = neurons.run(model, task=task, n_examples=50)
    assert res.measures["frequency"][0, 0, 0] == 3
    assert res.measures["frequency_explained"][0, 0, 0] > 0.99
    assert "k=3: 1" in res.text()


def test_a_model_without_mlp_neurons_is_refused_in_one_line():
    parity = make_task("parity", n_bits=6, n_train=20)
    mlp = build_model(ModelConfig(architecture="mlp", d_mlp=8).for_task(parity))
    with pytest.raises(AnalysisError, match="needs a transformer with MLP blocks") as e:
        neurons.run(mlp, task=parity)
    assert "\n" not in str(e.value)
