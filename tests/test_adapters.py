"""Adapters: LoRA and MoRA as weight deltas on per-head and MLP maps; MoRA's maps against the
reference's activation-side definitions (written out here independently)."""

import math

import pytest
import torch

from groklab.models import HookedTransformer, ModelConfig, kernels
from groklab.models.adapters import ACTIVATION_FROM, AdapterError, attach, resolve_targets
from groklab.models.mora import MoraMaps, mora_rank


def tiny_model(**kw) -> HookedTransformer:
    cfg = ModelConfig(**{"n_layers": 2, "d_model": 24, "n_heads": 2, "d_mlp": 40, **kw})
    cfg = cfg.resolved(17, 3)
    return HookedTransformer(cfg).eval()


TOKENS = torch.randint(0, 17, (5, 3), generator=torch.Generator().manual_seed(0))


def randomize(adapters) -> None:
    with torch.no_grad():
        for p in adapters.parameters():
            p.normal_(0, 0.05)


# --- the reference's MoRA on activations: pad by wrapping the input's first features, chunk,
# then sum (type 1) or rotate each chunk (type 6), apply M (out = in @ M), tile / concatenate.
def ref_mora(x, M, d_out, mora_type):
    r = M.shape[0]
    d_in = x.shape[-1]
    n = math.ceil(d_in / r)
    pad = n * r - d_in
    xp = torch.cat([x, x[..., :pad]], -1) if pad else x
    chunks = xp.view(*x.shape[:-1], n, r)
    if mora_type == 1:
        y = chunks.sum(-2) @ M
        reps = math.ceil(d_out / r)
        return torch.cat([y] * reps, -1)[..., :d_out]
    inv = 1.0 / (10000 ** (torch.arange(0, r, 2, dtype=torch.float64) / r))
    ang = torch.outer(torch.arange(n, dtype=torch.float64), inv)
    ang = torch.cat([ang, ang], -1)
    half = torch.cat([-chunks[..., r // 2:], chunks[..., : r // 2]], -1)
    rot = chunks * ang.cos() + half * ang.sin()
    y = (rot @ M).reshape(*x.shape[:-1], n * r)[..., :d_out]
    if y.shape[-1] < d_out:
        y = torch.cat([y] * math.ceil(d_out / y.shape[-1]), -1)[..., :d_out]
    return y


@pytest.mark.parametrize("d_in,d_out,r_hat,mora_type", [
    (12, 12, 4, 1), (10, 7, 4, 1), (7, 10, 4, 1), (5, 3, 8, 1),  # divisible, padding, tiling
    (11, 13, 3, 1), (3, 9, 4, 1),  # a tail and a remainder; an input narrower than r_hat
    (12, 12, 4, 6), (10, 7, 4, 6), (7, 20, 4, 6), (6, 9, 8, 6),  # rotation, cut, tile
    (20, 6, 4, 6)])  # only 2 of 5 chunks reach the output
def test_mora_maps_equal_the_reference_on_activations(d_in, d_out, r_hat, mora_type):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, d_in, generator=g, dtype=torch.float64)
    M = torch.randn(r_hat, r_hat, generator=g, dtype=torch.float64)
    maps = MoraMaps(d_in, d_out, r_hat, mora_type)
    dW = maps.delta(M)
    assert dW.shape == (d_in, d_out)
    torch.testing.assert_close(x @ dW, ref_mora(x, M, d_out, mora_type))
    # the activation path's hand-written backwards against autograd through the
    # reference, for the input and M alike
    x.requires_grad_(True)
    M.requires_grad_(True)
    mine, ref = maps.apply(x, M), ref_mora(x, M, d_out, mora_type)
    torch.testing.assert_close(mine, ref)
    w = torch.randn(mine.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((mine * w).sum(), (x, M))
    want = torch.autograd.grad((ref * w).sum(), (x, M))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_r_hat_rule_and_equal_parameter_budgets():
    # d_in = d_out = 4096: r 8 -> 256, r 256 -> 1448 (the reference's own examples)
    assert mora_rank(4096, 4096, 8) == 256 and mora_rank(4096, 4096, 256) == 1448
    assert mora_rank(128, 128, 8) == 45 and mora_rank(128, 128, 8, mora_type=6) == 44
    for d_in, d_out, r in [(128, 128, 8), (128, 512, 32), (24, 40, 3), (7, 5, 2)]:
        r_hat = mora_rank(d_in, d_out, r)
        assert r_hat == round(math.sqrt((d_in + d_out) * r))  # nearest integer root
        assert abs(r_hat ** 2 - r * (d_in + d_out)) <= r_hat  # same budget, up to rounding
    lora, mora = tiny_model(), tiny_model()
    n_lora = attach(lora, "lora", rank=3).n_params()
    n_mora = attach(mora, "mora", rank=3).n_params()
    assert n_lora == 2 * 3 * (4 * (24 + 24) + 2 * (24 + 40))
    assert abs(n_mora - n_lora) / n_lora < 0.05


@pytest.mark.parametrize("kind,mora_type", [("lora", 1), ("mora", 1), ("mora", 6)])
def test_zero_init_is_identity_then_merge_and_unmerge_are_exact(kind, mora_type):
    model = tiny_model()
    before = model(TOKENS)
    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
    ad = attach(model, kind, rank=2, mora_type=mora_type)
    assert torch.equal(model(TOKENS), before)  # B = 0 / M = 0: the same logits
    randomize(ad)
    adapted = model(TOKENS)
    assert not torch.allclose(adapted, before)
    # the adapters run on activations (x @ W0 + adapter(x)) give the same logits and adapter
    # gradients as the weight read (W0 + dW)
    grads = []
    for path in ("activation", "weight"):
        ad.run_on(path)
        out = model(TOKENS)
        torch.testing.assert_close(out, adapted, rtol=1e-5, atol=1e-5)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in ad.parameters()])
        model.zero_grad()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    ad.merge()
    assert not any(".parametrizations." in n for n, _ in model.named_parameters())
    torch.testing.assert_close(model(TOKENS), adapted)
    ad.unmerge()
    assert torch.equal(model(TOKENS), adapted)
    for n in ad.targets:  # the very base tensors back, bit for bit
        mname, attr = n.rsplit(".", 1)
        base = getattr(model.get_submodule(mname).parametrizations, attr).original
        assert torch.equal(base, originals[n])


def test_per_head_maps_are_one_matrix_and_only_adapters_train():
    model = tiny_model()
    ad = attach(model, "lora", targets=["blocks.1.attn.W_Q", "blocks.0.attn.W_O"], rank=2)
    assert ad.targets == ["blocks.0.attn.W_O", "blocks.1.attn.W_Q"]
    randomize(ad)
    dW = ad.delta_weights()
    assert dW["blocks.1.attn.W_Q"].shape == (24, 24)  # d_model -> n_heads * d_head
    assert torch.linalg.matrix_rank(dW["blocks.1.attn.W_Q"]) == 2
    W = model.blocks[1].attn.W_Q  # [h, d, dh]: the map's columns are head-major
    W0 = model.blocks[1].attn.parametrizations.W_Q.original
    assert torch.allclose((W - W0)[1], dW["blocks.1.attn.W_Q"][:, 12:])
    model(TOKENS).sum().backward()
    assert all(p.grad is not None for p in ad.parameters())
    assert all(p.grad is None for n, p in model.named_parameters()
               if not n.endswith((".A", ".B")))


def test_baselines_and_bad_input():
    model = tiny_model()
    last = attach(model, "last", last_layers=1)
    assert all(t.startswith("blocks.1.") for t in last.targets)
    assert {n for n, p in model.named_parameters() if p.requires_grad} >= {
        "blocks.1.mlp.W_in", "ln_final.w"}
    assert not model.blocks[0].attn.W_Q.requires_grad
    assert resolve_targets(tiny_model(), ["blocks.*.mlp.W_*"]) == [
        "blocks.0.mlp.W_in", "blocks.0.mlp.W_out", "blocks.1.mlp.W_in", "blocks.1.mlp.W_out"]
    with pytest.raises(AdapterError, match="names no linear map"):
        attach(tiny_model(), "lora", targets=["blocks.7.attn.W_Q"])
    with pytest.raises(AdapterError, match="rank 25 does not fit"):
        attach(tiny_model(), "lora", rank=25)
    with pytest.raises(AdapterError, match="looped"):
        attach(tiny_model(n_loops=2), "mora")
    with pytest.raises(AdapterError, match="unknown adapter path 'fused'; paths: auto, weight"):
        attach(tiny_model(), "lora", path="fused")


def test_auto_path_runs_wide_models_on_activations():
    """``path="auto"`` picks the form by width (the crossover bench/adapter_step.py measured),
    records it, and the fused kernels then split W0 from the adapter."""
    narrow = attach(tiny_model(), "lora", rank=2)
    assert narrow.config()["path"] == "weight"
    assert kernels.split_weight(narrow.model.blocks[0].attn, "W_Q")[1] is None
    wide_model = tiny_model(n_layers=1, d_model=ACTIVATION_FROM)
    wide = attach(wide_model, "mora", rank=2)
    assert wide.config()["path"] == "activation"
    W0, adapter = kernels.split_weight(wide_model.blocks[0].attn, "W_Q")
    assert adapter is wide.deltas["blocks.0.attn.W_Q"] and W0.shape[1] == ACTIVATION_FROM
    assert "path" not in attach(tiny_model(), "full").config()
