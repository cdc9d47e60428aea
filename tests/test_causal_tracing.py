"""Causal tracing: finds exactly a hand-built circuit, counterfactuals change the answer, the
batched grid equals the per-cell loop, and ``groklab analyze`` writes arrays and figures."""

import json

import numpy as np
import pytest
import torch
from circuit_models import hand_built_model, inputs
from typer.testing import CliRunner

from groklab.analysis import causal_tracing as ct
from groklab.analysis.sources import sample_examples
from groklab.cli import app
from groklab.models import HookedTransformer, ModelConfig
from groklab.tasks import make_task
from groklab.tasks.base import Split


def test_noising_finds_exactly_the_hand_built_circuit():
    model = hand_built_model()
    clean, corrupt = inputs(n=24)
    grid = ct.noising_grid(model, clean, corrupt)
    # x lives in its embedding S[0, 0] and in the copy S[1, 1]; nowhere else matters.
    np.testing.assert_array_equal(grid, [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(ct.noising_grid(model, clean, corrupt, looped=True), grid)


def test_rome_restoration_finds_the_same_circuit():
    model = hand_built_model()
    clean, _ = inputs(n=24)
    ex = Split(clean, torch.full((24,), 2), clean[:, 0])
    restored, low, high = ct.trace_noise(model, ex, (0,), samples=4, noise_scale=20.0)
    nie = (restored.mean(-1) - low.mean()) / (high.mean() - low.mean())
    assert high.mean() > 0.99 and low.mean() < 0.6
    # Restoring the embedding of x restores everything; states off the circuit restore
    # nothing. S[1, 1] restores most but not all: noise on x's embedding also hits the
    # positional dims that route layer 1's attention (noise corrupts more than the token).
    assert nie[0, 0] == pytest.approx(1.0, abs=1e-3)
    off = np.array([[0, 1, 1], [1, 0, 1]], dtype=bool)
    np.testing.assert_allclose(nie[off], 0.0, atol=1e-3)
    assert nie[1, 1] > 0.5


def _tiny(name):
    if name == "composition":
        return make_task("composition", entities=40, relations=6, out_degree=3, phi=2.0)
    return make_task("comparison", entities=40, attributes=4, values=6, phi=2.0, format="paper")


def test_composition_counterfactuals_change_the_answer_and_keep_the_type():
    task = _tiny("composition")
    ex, _ = sample_examples(task.probes["train_inferred"], 60)
    tails = task.arrays["tails"]
    ent, rel = task.vocab.ids_of_type("entity"), task.vocab.ids_of_type("relation")
    cfs = {c.name: c for c in ct.counterfactuals(task, ex, seed=0)}
    t = ex.targets.numpy()
    for name, c in cfs.items():
        assert c.valid.mean() > 0.8, name
        tok = c.tokens.numpy()
        pos = c.positions[0]
        changed = tok[:, pos] != ex.inputs.numpy()[:, pos]
        assert changed[c.valid].all()
        kind = ent if name == "h" else rel
        assert np.isin(tok[c.valid, pos], kind).all()
        other = np.delete(np.arange(3), pos)
        assert (tok[:, other] == ex.inputs.numpy()[:, other]).all()
        h, r1, r2 = tok[:, 0], tok[:, 1] - rel[0], tok[:, 2] - rel[0]
        b = tails[h, r1]
        new_t = np.where(b >= 0, tails[np.clip(b, 0, None), r2], -1)
        assert (new_t[c.valid] != t[c.valid]).all(), name


def test_comparison_counterfactuals_change_the_label():
    task = _tiny("comparison")
    ex, _ = sample_examples(task.probes["train_inferred"], 60)
    values = task.arrays["values"]
    attr0 = task.vocab.ids_of_type("attribute")[0]
    label = np.sign(ex.meta["v1"] - ex.meta["v2"])
    for c in ct.counterfactuals(task, ex, seed=0):
        tok = c.tokens.numpy()
        a, e1, e2 = tok[:, 0] - attr0, tok[:, 2], tok[:, 4]
        new = np.sign(values[e1, a] - values[e2, a])
        assert c.valid.mean() > 0.5, c.name
        assert (new[c.valid] != label[c.valid]).all(), c.name
    assert [c.positions for c in ct.counterfactuals(task, ex)] == [(0, 1), (2, 3), (4,)]


@pytest.mark.parametrize("name", ["composition", "comparison"])
def test_batched_tracing_equals_the_per_cell_loop(name):
    task = _tiny(name)
    model = HookedTransformer(ModelConfig(n_layers=2, d_model=32, n_heads=2)
                              .resolved(d_vocab=len(task.vocab), n_ctx=task.seq_len)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    ex, _ = sample_examples(task.probes["train_inferred"], 40)
    cfs = ct.counterfactuals(task, ex)
    batched = ct.trace_counterfactual(model, ex, cfs)
    looped = ct.trace_counterfactual(model, ex, cfs, looped=True)
    for a, b in zip(batched, looped):
        np.testing.assert_array_equal(a, b)
    top1_after, _, clean_top1, _ = batched
    assert top1_after.shape == (2, 3, 40)
    assert (top1_after != clean_top1).any()  # patches do change predictions


def test_unsupported_task_is_a_clear_error():
    import dataclasses

    task = dataclasses.replace(_tiny("composition"), name="other")
    with pytest.raises(ValueError, match="causal tracing builds answer-changing"):
        ct.counterfactuals(task, task.train)


def test_analyze_cli_writes_arrays_figures_and_summary(tmp_path, tiny_cfg):
    from groklab.train import Run

    run_dir = tmp_path / "run"
    Run.start(tiny_cfg(steps=2), run_dir).train()
    res = CliRunner().invoke(app, ["analyze", str(run_dir), "--logit-lens", "--causal-tracing",
                                   "--checkpoints", "0,2", "--examples", "40"])
    assert res.exit_code == 0, res.output
    for f in ("logit_lens.npz", "causal_tracing.npz", "circuit_summary.json"):
        assert (run_dir / "analysis" / f).exists(), f
    figs = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {"causal_tracing.png", "causal_tracing_over_training.png", "causal_tracing_rome.png",
            "logit_lens.png", "logit_lens_over_training.png",
            "circuit_over_training.png"} <= figs
    z = np.load(run_dir / "analysis" / "causal_tracing.npz")
    assert z["train_inferred.strength"].shape == (2, 2, 3)  # [checkpoint, layer, slot]
    summary = json.loads((run_dir / "analysis" / "circuit_summary.json").read_text())
    assert summary["summary"] and summary["final_step"] == 2

    bad = CliRunner().invoke(app, ["analyze", str(run_dir), "--logit-lens",
                                   "--checkpoints", "7"])
    assert bad.exit_code == 2 and "no checkpoint at step" in bad.output
    missing = CliRunner().invoke(app, ["analyze", str(tmp_path / "nope"), "--logit-lens"])
    assert missing.exit_code == 2
