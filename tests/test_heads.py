"""Attention-head classes on hand-built models with a known answer: a head that attends only to
the previous token, a head that attends by content, a head whose OV circuit maps each number to
its successor."""

import numpy as np
import pytest
import torch

from groklab.analysis import heads
from groklab.analysis.sources import AnalysisError
from groklab.models import HookedTransformer, ModelConfig, build_model
from groklab.tasks import make_task

BIG = 50.0


def _blank(d_vocab, n_ctx, d_model, n_heads=2, d_head=8):
    cfg = ModelConfig(n_layers=1, d_model=d_model, n_heads=n_heads, d_head=d_head, d_mlp=4,
                      normalization_type=None, tie_word_embeddings=False)
    model = HookedTransformer(cfg.resolved(d_vocab=d_vocab, n_ctx=n_ctx))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model.eval()


def previous_and_content_model(task, content_tokens):
    """Token one-hots in dims 0..V-1, position one-hots after them. Head 0: query at q matches
    the key at q - 1. Head 1: every query matches keys whose token is in ``content_tokens``."""
    V, P = len(task.vocab), task.seq_len
    model = _blank(V, P, V + P)
    with torch.no_grad():
        model.W_E[:, :V] = torch.eye(V)
        model.W_pos[:, V:] = torch.eye(P)
        a = model.blocks[0].attn
        for p in range(P):
            a.W_Q[0, V + p, p] = BIG
            if p + 1 < 8:
                a.W_K[0, V + p, p + 1] = 1.0
            a.W_Q[1, V + p, 0] = BIG
        a.W_K[1, content_tokens, 0] = 1.0
    return model


def test_previous_token_and_content_heads_are_told_apart():
    task = make_task("composition", entities=40, relations=6, out_degree=3, phi=2.0)
    # half of the entities (position 0) and half of the relations (positions 1, 2)
    marked = np.concatenate([task.vocab.ids_of_type("entity")[::2],
                             task.vocab.ids_of_type("relation")[::2]])
    model = previous_and_content_model(task, marked)
    res = heads.run(model, task=task, n_examples=100)
    m = res.measures
    assert m["prev"][0, 0, 0] > 0.99 and m["position_explained"][0, 0, 0] > 0.99
    assert m["prev"][0, 0, 1] < 0.5 and m["position_explained"][0, 0, 1] < 0.5
    assert m["content_rms"][0, 0, 1] > 0.2 and m["content_rms"][0, 0, 0] < 1e-6
    assert [heads.CLASSES[c] for c in res.classes[0, 0]] == ["previous-token", "content"]
    np.testing.assert_allclose(m["by_distance"][0, 0, 0], [0, 1, 0], atol=1e-6)
    assert m["entropy"][0, 0, 0] < 0.01 < m["entropy"][0, 0, 1]
    assert np.isnan(m["successor"]).all()  # composition has no number tokens


def test_position_explained_is_one_minus_content_over_total_variance():
    g = torch.Generator().manual_seed(0)
    pat = torch.rand(1, 50, 1, 4, 4, generator=g).tril()  # [L, n, H, q, k], causal
    pat = pat / pat.sum(-1, keepdim=True)
    m = heads.pattern_measures(pat, None)
    A, q = pat[0, :, 0, 1:].double(), np.arange(1, 4)  # queries with >= 2 keys
    M = A.mean(0)
    U = torch.stack([torch.cat([torch.full((k + 1,), 1 / (k + 1)), torch.zeros(3 - k)])
                     for k in q]).double()
    expect = 1 - ((A - M) ** 2).sum() / ((A - U) ** 2).sum()
    assert m["position_explained"][0, 0] == pytest.approx(float(expect), abs=1e-9)
    assert m["prev"][0, 0] == pytest.approx(float(A[:, [0, 1, 2], [0, 1, 2]].mean()), abs=1e-9)
    u = (1 / 2 + 1 / 3 + 1 / 4) / 3  # uniform attention's prev on 4-token rows
    assert m["prev_above_uniform"][0, 0] == pytest.approx((m["prev"][0, 0] - u) / (1 - u))
    uniform = heads.pattern_measures(torch.ones(1, 5, 1, 4, 4).tril() /
                                     torch.arange(1, 5.0)[:, None], None)
    assert uniform["prev_above_uniform"][0, 0] == pytest.approx(0.0, abs=1e-6)
    assert uniform["entropy"][0, 0] == pytest.approx(1.0)
    uniform["successor"] = np.full((1, 1), np.nan)
    assert heads.CLASSES[heads.classify(uniform)[0, 0]] == "positional"
    # nearly uniform, with a little input-dependent noise: the ratio is noise, the class is not
    jitter = torch.ones(1, 50, 1, 4, 4).tril() + 1e-3 * torch.rand(1, 50, 1, 4, 4, generator=g)
    near = heads.pattern_measures((jitter.tril() / jitter.tril().sum(-1, keepdim=True)), None)
    near["successor"] = np.full((1, 1), np.nan)
    assert near["position_explained"][0, 0] < 0.8 and near["content_rms"][0, 0] < 1e-3
    assert heads.CLASSES[heads.classify(near)[0, 0]] == "positional"
    # the same pattern on every example is fully explained by position
    same = heads.pattern_measures(pat[:, :1].expand(1, 50, 1, 4, 4), None)
    assert same["position_explained"][0, 0] == pytest.approx(1.0, abs=1e-9)


def test_a_successor_head_is_found_on_number_tokens_over_checkpoints(tmp_path):
    task = make_task("modular", p=7, train_fraction=0.5)
    V, P = len(task.vocab), task.seq_len
    model = _blank(V, P, 16, d_head=8)
    with torch.no_grad():
        model.W_E[:, :V] = torch.eye(V)[:, :V]
        a = model.blocks[0].attn
        a.W_V[1, :7, :7] = torch.eye(7)
        for t in range(6):
            a.W_O[1, t, t + 1] = 1.0  # OV: number t -> number t + 1
        model.W_U_param[:V, :V] = torch.eye(V)
    res = heads.run(model, task=task, n_examples=30)
    np.testing.assert_allclose(res.measures["successor"][0, 0], [0.0, 1.0])
    assert heads.CLASSES[res.classes[0, 0, 1]] == "successor"
    assert res.first_steps()["successor"] == -1  # a model in memory is step -1
    paths = res.save(tmp_path)
    assert {p.name for p in paths} >= {"heads.npz", "heads.json", "heads.png",
                                       "heads_measures.png"}
    back = heads.HeadsResult.load(tmp_path)
    np.testing.assert_array_equal(back.classes, res.classes)
    assert "L0H1: successor" in res.text()


def test_a_model_without_heads_is_refused_in_one_line():
    parity = make_task("parity", n_bits=6, n_train=20)
    mlp = build_model(ModelConfig(architecture="mlp", d_mlp=8).for_task(parity))
    with pytest.raises(AnalysisError, match="needs a model with attention heads") as e:
        heads.run(mlp, task=parity)
    assert "\n" not in str(e.value)


def _repeat_model(n_layers, V=40, P=10):
    """Token one-hots in dims 0..V-1, position one-hots in V..V+P-1, a free block after them."""
    cfg = ModelConfig(n_layers=n_layers, d_model=2 * V + P, n_heads=2, d_head=V + P, d_mlp=4,
                      normalization_type=None, tie_word_embeddings=False)
    model = HookedTransformer(cfg.resolved(d_vocab=V, n_ctx=P))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[:, :V] = torch.eye(V)
        model.W_pos[:, V:V + P] = torch.eye(P)
    return model.eval()


def test_induction_and_duplicate_token_heads_are_found_on_repeated_random_tokens():
    V, P = 40, 10
    dup = _repeat_model(1)
    with torch.no_grad():  # head 0: same token (+BIG) but not the same position (-BIG)
        a = dup.blocks[0].attn
        a.W_Q[0, :V, :V] = BIG * torch.eye(V)
        a.W_K[0, :V, :V] = torch.eye(V)
        a.W_Q[0, V:V + P, V:V + P] = BIG * torch.eye(P)
        a.W_K[0, V:V + P, V:V + P] = -torch.eye(P)
    m = heads.repeat_scores(dup, 1, seed=0)
    assert m["duplicate"][0, 0] > 0.8 and m["induction"][0, 0] < 0.2

    ind = _repeat_model(2)
    with torch.no_grad():
        a0, a1 = ind.blocks[0].attn, ind.blocks[1].attn
        for p in range(P):  # layer 0 head 0: previous token, copied into dims V+P..
            a0.W_Q[0, V + p, p] = BIG
            if p + 1 < P:
                a0.W_K[0, V + p, p + 1] = 1.0
        a0.W_V[0, :V, :V] = torch.eye(V)
        a0.W_O[0, :V, V + P:] = torch.eye(V)
        a1.W_Q[0, :V, :V] = BIG * torch.eye(V)  # layer 1 head 0: my token = key's previous
        a1.W_K[0, V + P:, :V] = torch.eye(V)
    m = heads.repeat_scores(ind, 2, seed=0)
    # 0.79, not 1: the first query of the copy also matches position 0 (whose "previous token"
    # is its own) and random rows repeat a token now and then
    assert m["induction"][1, 0] > 0.7 and m["duplicate"][1, 0] < 0.2
    assert abs(m["induction"][1, 1]) < 0.05  # a uniform head scores 0 above uniform
    m["prev"] = m["prev_above_uniform"] = np.zeros((2, 2))
    m["position_explained"] = m["content_rms"] = np.zeros((2, 2)) + 0.5
    m["successor"] = np.full((2, 2), np.nan)
    assert heads.CLASSES[heads.classify(m)[1, 0]] == "induction"


def test_short_contexts_get_no_repeat_scores():
    task = make_task("composition", entities=40, relations=6, out_degree=3, phi=2.0)
    model = build_model(ModelConfig(n_layers=1, d_model=16, n_heads=2).for_task(task))
    m = heads.repeat_scores(model, 1, seed=0)
    assert np.isnan(m["induction"]).all() and np.isnan(m["duplicate"]).all()
