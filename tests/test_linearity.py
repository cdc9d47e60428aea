"""Layer linearity (Razzhigaev et al. 2024): 1 for an identity block and for any linear map,
lower for a nonlinear one, the numpy formula of the paper, batched over layers."""

import numpy as np
import pytest
import torch

from groklab.analysis import linearity
from groklab.analysis.sources import AnalysisError
from groklab.models import HookedTransformer, ModelConfig, build_model
from groklab.tasks import make_task


def numpy_score(X, Y):
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    X, Y = X / np.linalg.norm(X), Y / np.linalg.norm(Y)
    A = np.linalg.pinv(X) @ Y
    return 1 - np.linalg.norm(X @ A - Y) ** 2


def test_score_matches_numpy_and_is_one_for_linear_maps_only():
    g = np.random.default_rng(0)
    X = g.normal(size=(400, 16))
    M = g.normal(size=(16, 16))
    nonlinear = np.sin(3 * X @ M)
    for Y in (X @ M + 2.0, nonlinear, g.normal(size=(400, 16))):
        got = float(linearity.linearity_score(torch.tensor(X), torch.tensor(Y)))
        assert got == pytest.approx(numpy_score(X, Y), abs=1e-10)
    assert float(linearity.linearity_score(torch.tensor(X), torch.tensor(X @ M))) == \
        pytest.approx(1.0, abs=1e-10)
    assert numpy_score(X, nonlinear) < 0.5
    # batched over a leading axis of layer pairs: each entry is its own score
    batch = linearity.linearity_score(torch.tensor(np.stack([X, X])),
                                      torch.tensor(np.stack([X @ M, nonlinear])))
    np.testing.assert_allclose(batch.numpy(), [1.0, numpy_score(X, nonlinear)], atol=1e-10)


def _model(task, **kw):
    cfg = ModelConfig(n_layers=2, d_model=16, n_heads=2, **kw)
    return HookedTransformer(cfg.resolved(d_vocab=len(task.vocab), n_ctx=task.seq_len)).eval()


def test_identity_blocks_have_linearity_one():
    task = make_task("composition", entities=40, relations=6, out_degree=3, phi=2.0)
    model = _model(task, normalization_type=None)
    with torch.no_grad():
        for p in model.blocks.parameters():
            p.zero_()  # every block adds nothing: hidden state L + 1 == hidden state L
    res = linearity.run(model, task=task, n_examples=80, splits=["train_inferred"])
    np.testing.assert_allclose(res.get("train_inferred", "linearity"), 1.0, atol=1e-9)
    np.testing.assert_allclose(res.get("train_inferred", "linearity", "tokens").shape, (1, 2))


def test_run_matches_a_direct_computation_and_saves(tmp_path):
    task = make_task("composition", entities=40, relations=6, out_degree=3, phi=2.0)
    model = _model(task)
    res = linearity.run(model, task=task, n_examples=60, splits=["train_inferred", "test_ood"])
    ex = task.probes["train_inferred"]
    from groklab.analysis.sources import sample_examples

    ex, _ = sample_examples(ex, 60, 0)
    names = linearity.state_names(2)
    _, cache = model.run_with_cache(ex.inputs, names_filter=lambda n: n in names)
    S = [cache[n].numpy().astype(np.float64) for n in names]
    pos = ex.answer_pos.numpy()
    for l in range(2):
        X, Y = S[l].reshape(-1, 16), S[l + 1].reshape(-1, 16)  # all 3 positions, answer last
        assert res.get("train_inferred")[0, l] == pytest.approx(numpy_score(X, Y), abs=1e-6)
        rr = res.get("train_inferred", "residual_removed")[0, l]
        assert rr == pytest.approx(numpy_score(X, Y - X), abs=1e-6)
        Xa, Ya = S[l][np.arange(60), pos], S[l + 1][np.arange(60), pos]
        assert res.get("train_inferred", where="answer")[0, l] == \
            pytest.approx(numpy_score(Xa, Ya), abs=1e-6)
    assert res.n_rows["train_inferred.tokens"] == 180 and res.n_rows["test_ood.answer"] < 16
    assert np.isnan(res.get("test_ood")).all()  # this tiny task has fewer OOD rows than d_model
    paths = res.save(tmp_path)
    assert {p.name for p in paths} >= {"linearity.npz", "linearity.json", "linearity.png",
                                       "linearity_by_layer.png"}
    back = linearity.LinearityResult.load(tmp_path)
    np.testing.assert_array_equal(back.get("test_ood", "residual_removed"),
                                  res.get("test_ood", "residual_removed"))
    assert "linearity" in res.text() and "residual_removed" in res.text()


def test_too_few_rows_is_nan_and_a_model_without_a_residual_stream_is_refused():
    task = make_task("composition", entities=40, relations=6, out_degree=3, phi=2.0)
    res = linearity.run(_model(task), task=task, n_examples=10, splits=["train_inferred"])
    assert np.isnan(res.get("train_inferred", where="answer")).all()  # 10 rows, d_model 16
    assert np.isfinite(res.get("train_inferred")).all()  # 30 token rows
    parity = make_task("parity", n_bits=6, n_train=20)
    mlp = build_model(ModelConfig(architecture="mlp", d_mlp=8).for_task(parity))
    with pytest.raises(AnalysisError, match="needs a transformer") as e:
        linearity.run(mlp, task=parity)
    assert "\n" not in str(e.value)
