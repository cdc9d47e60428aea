"""Accelerators against hand computations (docs/methods.md sections 5-6, traps 13-14), their config
validation, and exact resume with their state in the checkpoint."""

import math

import pytest
import torch

from groklab.config import ConfigError, load_config
from groklab.train.accelerators import (
    GrokfastEMA,
    GrokfastMA,
    log_stablemax,
    orthogonalize_gradients_,
    stablemax,
    stablemax_cross_entropy,
    stablemax_s,
    weight_decay_at,
)
from groklab.train.loop import Run
from tests.conftest import train_until_killed
from tests.test_train import strip_time


def _params_with_grads(grads):
    """One parameter of shape [3] and one of shape [2, 1]; ``grads`` is a list of two tensors."""
    ps = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 1))]
    for p, g in zip(ps, grads):
        p.grad = g.clone().reshape(p.shape)
    return ps


G = [  # three steps of gradients for the two parameters
    [torch.tensor([1.0, -2.0, 0.5]), torch.tensor([4.0, 0.0])],
    [torch.tensor([3.0, 0.0, -1.5]), torch.tensor([-2.0, 1.0])],
    [torch.tensor([-1.0, 1.0, 2.5]), torch.tensor([0.0, 6.0])],
    [torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1.0, 1.0])],
]


def test_grokfast_ema_matches_hand_computation_with_first_gradient_init():
    alpha, lamb = 0.5, 2.0
    params = _params_with_grads(G[0])
    f = GrokfastEMA(params, alpha=alpha, lamb=lamb)
    mu = [g.clone() for g in G[0]]  # mu starts at the first gradient (trap 13), not at zero
    for t, gs in enumerate(G):
        for p, g in zip(params, gs):
            p.grad = g.clone().reshape(p.shape)
        f()
        mu = [alpha * m + (1 - alpha) * g for m, g in zip(mu, gs)]
        for p, g, m in zip(params, gs, mu):
            assert torch.allclose(p.grad.reshape(-1), g + lamb * m), t
    # First step: g + lambda * g1 exactly (a zero-initialised EMA would give g + lambda(1-a)g).
    params = _params_with_grads(G[0])
    GrokfastEMA(params, alpha=0.98, lamb=2.0)()
    assert torch.allclose(params[0].grad, 3.0 * G[0][0])


def test_grokfast_ma_is_a_no_op_until_the_window_fills_then_adds_the_window_mean():
    w, lamb = 3, 5.0
    params = _params_with_grads(G[0])
    f = GrokfastMA(params, window=w, lamb=lamb)
    seq = G * 3  # 12 steps: the ring wraps (and resynchronises its sum) several times
    for t, gs in enumerate(seq):
        for p, g in zip(params, gs):
            p.grad = g.clone().reshape(p.shape)
        f()
        for j, (p, g) in enumerate(zip(params, gs)):
            if t < w - 1:
                expected = g  # warm-up: the window is not yet full
            else:
                window = [seq[s][j] for s in range(t - w + 1, t + 1)]  # current one included
                expected = g + lamb * torch.stack(window).mean(0)
            assert torch.allclose(p.grad.reshape(-1), expected, atol=1e-6), (t, j)


def test_orthogonal_gradient_is_orthogonal_to_the_weights_and_keeps_the_norm():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 5))
    g = torch.randn(4, 5) + 0.7 * w.detach()  # a large component along w
    w.grad = g.clone()
    zero = torch.nn.Parameter(torch.zeros(3))  # w = 0: nothing to project out
    zero.grad = torch.tensor([1.0, 2.0, 3.0])
    orthogonalize_gradients_([w, zero])
    wf, gf = w.detach().reshape(-1), g.reshape(-1)
    perp = gf - (wf @ gf) / (wf @ wf) * wf  # hand computation, docs/methods.md section 6
    expected = perp * gf.norm() / perp.norm()  # rescaled back to ||g|| (trap 14)
    assert torch.allclose(w.grad.reshape(-1), expected, atol=1e-6)
    assert abs(float(w.grad.reshape(-1) @ wf)) < 1e-4 * float(gf.norm() * wf.norm())
    assert float(w.grad.norm()) == pytest.approx(float(g.norm()), rel=1e-6)
    assert torch.equal(zero.grad, torch.tensor([1.0, 2.0, 3.0]))


def test_stablemax_equals_its_definition_and_is_a_distribution():
    xs = [-1e6, -7.5, -1.0, -0.25, 0.0, 0.5, 3.0, 1e6]
    for x in xs:
        expected = x + 1 if x >= 0 else 1 / (1 - x)
        assert float(stablemax_s(torch.tensor(x, dtype=torch.float64))) == pytest.approx(expected)
    logits = torch.tensor([[2.0, -1.0, 0.0, 5.0], [-3.0, -3.0, 1e4, 0.5]], dtype=torch.float64)
    p = stablemax(logits)
    assert torch.all(p > 0)
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64))
    s = torch.tensor([3.0, 0.5, 1.0, 6.0], dtype=torch.float64)
    assert torch.allclose(p[0], s / s.sum())
    assert torch.allclose(log_stablemax(logits).exp(), p)


def test_stablemax_cross_entropy_is_minus_log_in_float64_and_never_collapses():
    logits = torch.tensor([[2.0, -1.0, 0.0, 5.0], [-3.0, -3.0, 40.0, 0.5]], requires_grad=True)
    y = torch.tensor([3, 2])
    loss = stablemax_cross_entropy(logits, y)
    assert loss.dtype == torch.float64
    p = stablemax(logits.detach().double())
    assert float(loss.detach()) == pytest.approx(float(-(p[0, 3].log() + p[1, 2].log()) / 2))
    per = stablemax_cross_entropy(logits, y, reduction="none")
    assert torch.allclose(per, -torch.log(p[[0, 1], [3, 2]]))
    # Softmax Collapse: at a margin of 40 the float32 softmax loss of row 1 is exactly 0, the
    # StableMax loss is not, and its gradient still points at the right logit.
    sm = torch.nn.functional.cross_entropy(logits[1:].float(), y[1:])
    assert float(sm.detach()) == 0.0 and float(per[1].detach()) > 0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1, 2] < 0


def test_weight_decay_warmup_ramps_linearly_then_holds():
    kw = dict(weight_decay=2.0, warmup_steps=10)
    assert weight_decay_at(0, **kw) == pytest.approx(0.2)
    assert weight_decay_at(4, **kw) == pytest.approx(1.0)
    assert weight_decay_at(9, **kw) == pytest.approx(2.0)
    assert weight_decay_at(500, **kw) == 2.0
    assert weight_decay_at(0, weight_decay=2.0, warmup_steps=0) == 2.0


@pytest.mark.parametrize("bad, words", [
    ("train.grokfast=sgd", "grokfast"),
    ("train.grokfast_alpha=1.0", "grokfast_alpha"),
    ("train.grokfast_window=0", "grokfast_window"),
    ("train.grokfast_lamb=-1", "grokfast_lamb"),
    ("train.optimizer=sgd", "optimizer"),
    ("train.loss=mse", "loss"),
    ("train.weight_decay_warmup_steps=-5", "weight_decay_warmup_steps"),
])
def test_bad_accelerator_settings_get_one_line_errors(bad, words):
    with pytest.raises(ConfigError) as e:
        load_config("composition", None, [bad])
    msg = str(e.value)
    assert words in msg and "\n" not in msg


def test_zero_amplification_leaves_training_unchanged(tiny_cfg, tmp_path):
    """grokfast with lambda 0 adds 0 * mu to every gradient: bit-for-bit the plain run."""
    a = Run.start(tiny_cfg(steps=30), tmp_path / "a")
    a.train()
    b = Run.start(tiny_cfg("train.grokfast=ema", "train.grokfast_lamb=0", steps=30), tmp_path / "b")
    b.train()
    assert strip_time(a.dir.read_metrics()) == strip_time(b.dir.read_metrics())


@pytest.mark.parametrize("extra", [
    ["train.grokfast=ema"],
    ["train.grokfast=ma", "train.grokfast_window=30", "train.optimizer=ortho_adamw",
     "train.loss=stablemax", "train.weight_decay_warmup_steps=100"],
])
def test_resume_with_accelerators_equals_uninterrupted(tiny_cfg, tmp_path, extra):
    full = Run.start(tiny_cfg(*extra, steps=120), tmp_path / "full")
    full.train()
    part = Run.start(tiny_cfg(*extra, steps=120), tmp_path / "part")
    train_until_killed(part, 95)
    resumed = Run.resume(tmp_path / "part")
    assert resumed.step == 80
    # The filter state came back from the checkpoint (not a fresh, empty filter).
    f = resumed.accel.grad_filter
    assert (f.mu if extra[0].endswith("ema") else f.buf) is not None
    resumed.train()
    assert strip_time(full.dir.read_metrics()) == strip_time(resumed.dir.read_metrics())
    wa, wb = full.dir.load_weights(120), resumed.dir.load_weights(120)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(math.isfinite(r["loss/train"]) for r in full.dir.read_metrics())


def test_answer_only_last_block_equals_the_full_forward():
    """The speed path (last block at the answer position only) changes nothing but the cost:
    same logits and gradients as the full forward, which any hook on the last block forces."""
    from groklab.models import ModelConfig, build_model

    for kw in (dict(n_layers=1, normalization_type=None, act_fn="relu", init_mode="nanda",
                    tie_word_embeddings=False),
               dict(n_layers=2, n_loops=2)):
        torch.manual_seed(0)
        model = build_model(ModelConfig(d_model=32, n_heads=4, **kw).resolved(20, 4))
        x, ap = torch.randint(0, 20, (64, 4)), torch.randint(1, 4, (64,))
        fast = model(x, ap)
        g_fast = torch.autograd.grad(fast.pow(2).sum(), list(model.parameters()),
                                     allow_unused=True)
        last = f"blocks.{model.cfg.n_effective_layers - 1}.hook_resid_post"
        with model.hooks([(last, lambda t, hook: None)]):
            full = model(x, ap)
            g_full = torch.autograd.grad(full.pow(2).sum(), list(model.parameters()),
                                         allow_unused=True)
        assert torch.allclose(fast, full, atol=1e-5)
        scale = max(float(b.abs().max()) for b in g_full if b is not None)
        for a, b in zip(g_fast, g_full):
            if a is None or b is None:  # positions after every answer get no gradient either way
                assert (a is None or not a.any()) and (b is None or not b.any())
            else:
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * scale)  # b_K's is ~0
