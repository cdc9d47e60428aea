"""Aaren: the parallel prefix scan, the constant-memory recurrence and plain softmax attention
with a learned query compute the same thing; outputs are causal."""

import pytest
import torch

from groklab.models import ModelConfig, build_model
from groklab.models.aaren import AarenLM, prefix_scan


def model(**kw) -> AarenLM:
    cfg = ModelConfig(architecture="aaren", n_layers=2, d_model=32, n_heads=4, **kw)
    m = build_model(cfg.resolved(11, 24)).eval()
    with torch.no_grad():  # queries far from init: scores spread over tens of units
        for b in m.blocks:
            b.attn.W_Q.normal_(0.0, 8.0)
    return m


def test_scan_is_softmax_attention_of_every_prefix_even_for_extreme_scores():
    s = torch.randn(3, 17, 2) * 60  # exp(60 * 3) overflows float32: the max shift must hold
    v = torch.randn(3, 17, 2, 5)
    m, u, w = prefix_scan(s, v)
    for k in range(17):
        p = s[:, : k + 1].softmax(1)  # [b, k+1, h]
        want = (p[..., None] * v[:, : k + 1]).sum(1)
        torch.testing.assert_close(w[:, k] / u[:, k, ..., None], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m[:, k], s[:, : k + 1].amax(1))


def test_scan_equals_recurrence_logits():
    m = model()
    tokens = torch.randint(0, 11, (4, 24))
    parallel = m(tokens)
    recurrent = m.recurrent_forward(tokens)
    assert parallel.abs().max() > 0.1  # not a trivially zero model
    torch.testing.assert_close(recurrent, parallel, atol=1e-5, rtol=1e-5)
    # at answer positions too
    pos = torch.tensor([0, 5, 23, 11])
    torch.testing.assert_close(m(tokens, pos), parallel[torch.arange(4), pos])


def test_outputs_are_causal():
    m = model()
    a = torch.randint(0, 11, (2, 24))
    b = a.clone()
    b[:, 10:] = (b[:, 10:] + 1) % 11
    la, lb = m(a), m(b)
    torch.testing.assert_close(la[:, :10], lb[:, :10])
    assert (la[:, 10:] - lb[:, 10:]).abs().max() > 1e-3


def test_recurrent_state_does_not_grow_and_gradients_are_finite():
    m = model()
    tokens = torch.randint(0, 11, (2, 24))
    state = m.init_state(2)
    sizes = []
    for t in range(24):
        _, state = m.step(tokens[:, t], t, state)
        sizes.append(AarenLM.state_bytes(state))
    assert len(set(sizes)) == 1 and sizes[0] == 2 * 2 * 4 * (1 + 1 + 8) * 4  # layers*b*h*(m,u,w)
    m.train()
    m(tokens).logsumexp(-1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    assert m.blocks[0].attn.W_Q.grad.abs().sum() > 0


def test_hook_points_carry_the_scan_state():
    m = model()
    tokens = torch.randint(0, 11, (2, 24))
    logits, cache = m.run_with_cache(tokens)
    torch.testing.assert_close(logits, m(tokens))
    z = cache["blocks.1.attn.hook_w"] / cache["blocks.1.attn.hook_u"][..., None]
    torch.testing.assert_close(z, cache["blocks.1.attn.hook_z"])
    assert cache["blocks.0.attn.hook_scores"].shape == (2, 24, 4)
    for name in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out",
                 "hook_resid_post"):
        assert cache[f"blocks.1.{name}"].shape == (2, 24, 32)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="n_loops must be 1 for aaren"):
        ModelConfig(architecture="aaren", n_loops=2)
    with pytest.raises(ValueError, match="not divisible"):
        ModelConfig(architecture="aaren", d_model=30, n_heads=4)
