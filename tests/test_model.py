import pytest
import torch

from groklab.models import HookedTransformer, ModelConfig, fast, reads_only

TL_SHAPES = {
    "hook_embed": ("batch", "pos", "d_model"),
    "hook_pos_embed": ("batch", "pos", "d_model"),
    "blocks.{l}.hook_resid_pre": ("batch", "pos", "d_model"),
    "blocks.{l}.ln1.hook_scale": ("batch", "pos", 1),
    "blocks.{l}.ln1.hook_normalized": ("batch", "pos", "d_model"),
    "blocks.{l}.attn.hook_q": ("batch", "pos", "n_heads", "d_head"),
    "blocks.{l}.attn.hook_k": ("batch", "pos", "n_heads", "d_head"),
    "blocks.{l}.attn.hook_v": ("batch", "pos", "n_heads", "d_head"),
    "blocks.{l}.attn.hook_attn_scores": ("batch", "n_heads", "pos", "pos"),
    "blocks.{l}.attn.hook_pattern": ("batch", "n_heads", "pos", "pos"),
    "blocks.{l}.attn.hook_z": ("batch", "pos", "n_heads", "d_head"),
    "blocks.{l}.hook_attn_out": ("batch", "pos", "d_model"),
    "blocks.{l}.hook_resid_mid": ("batch", "pos", "d_model"),
    "blocks.{l}.ln2.hook_scale": ("batch", "pos", 1),
    "blocks.{l}.ln2.hook_normalized": ("batch", "pos", "d_model"),
    "blocks.{l}.mlp.hook_pre": ("batch", "pos", "d_mlp"),
    "blocks.{l}.mlp.hook_post": ("batch", "pos", "d_mlp"),
    "blocks.{l}.hook_mlp_out": ("batch", "pos", "d_model"),
    "blocks.{l}.hook_resid_post": ("batch", "pos", "d_model"),
    "ln_final.hook_scale": ("batch", "pos", 1),
    "ln_final.hook_normalized": ("batch", "pos", "d_model"),
}


def make(**kw) -> HookedTransformer:
    base = dict(n_layers=2, d_model=32, n_heads=4, d_mlp=48)
    base.update(kw)
    return HookedTransformer(ModelConfig(**base).resolved(d_vocab=20, n_ctx=5)).eval()


def tokens(b=6, p=5):
    return torch.randint(0, 20, (b, p), generator=torch.Generator().manual_seed(1))


def test_cache_keys_match_transformerlens_names_and_shapes():
    model = make()
    cfg = model.cfg
    dims = {"batch": 6, "pos": 5, "d_model": 32, "n_heads": 4, "d_head": 8, "d_mlp": 48}
    _, cache = model.run_with_cache(tokens())
    expected = set()
    for pattern, shape in TL_SHAPES.items():
        for l in range(cfg.n_layers):
            name = pattern.format(l=l)
            expected.add(name)
            want = tuple(dims[s] if isinstance(s, str) else s for s in shape)
            assert tuple(cache[name].shape) == want, name
    assert set(cache) == expected


def test_shorthand_keys():
    model = make()
    _, cache = model.run_with_cache(tokens())
    assert cache["pattern", 1] is cache["blocks.1.attn.hook_pattern"]
    assert cache["resid_pre", 0] is cache["blocks.0.hook_resid_pre"]


def test_names_filter_limits_the_cache():
    model = make()
    _, cache = model.run_with_cache(tokens(), names_filter=lambda n: n.endswith("hook_resid_post"))
    assert sorted(cache) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    _, cache = model.run_with_cache(tokens(), names_filter="hook_embed")
    assert list(cache) == ["hook_embed"]


def test_hooks_removed_after_run_with_cache_and_after_an_exception():
    model = make()
    model.run_with_cache(tokens())
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())

    def boom(act, hook):
        raise RuntimeError("inside a hook")

    with pytest.raises(RuntimeError):
        model.run_with_hooks(tokens(), fwd_hooks=[("blocks.0.hook_resid_mid", boom)])
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())


def test_run_with_hooks_can_replace_an_activation():
    model = make()
    x = tokens()
    clean = model(x)

    def zero_mlp(act, hook):
        return torch.zeros_like(act)

    patched = model.run_with_hooks(x, fwd_hooks=[("blocks.1.hook_mlp_out", zero_mlp)])
    assert not torch.allclose(clean, patched)
    assert torch.allclose(model(x), clean)  # the hook is gone again


def _loss_and_grads(model, run, y):
    model.zero_grad()
    logits = run()
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kw", [{}, {"n_loops": 2}, {"normalization_type": None},
                                {"tie_word_embeddings": False}, {"n_layers": 1},
                                {"positional": "rotary"}])
@pytest.mark.parametrize("answer", [True, False])
def test_speed_paths_equal_the_readable_forward(kw, answer):
    """groklab.models.fast (fused LayerNorm and attention, the answer-only last block) gives the
    readable forward's logits and every gradient."""
    model = make(**kw)
    x = tokens()
    ap = torch.tensor([4, 3, 2, 4, 1, 0]) if answer else None
    y = torch.randint(0, model.cfg.d_vocab_out, (6,) if answer else (6, 5),
                      generator=torch.Generator().manual_seed(4))
    quick, g_quick = _loss_and_grads(model, lambda: fast.forward(model, x, ap), y)
    # a hook at every hook point keeps every block on the readable modules
    every = [(lambda name: True, reads_only(lambda act, hook: None))]
    plain, g_plain = _loss_and_grads(model, lambda: model.run_with_hooks(x, ap, fwd_hooks=every),
                                     y)
    torch.testing.assert_close(quick, plain, atol=1e-5, rtol=1e-5)
    for name in g_plain:
        torch.testing.assert_close(g_quick[name], g_plain[name], atol=1e-5, rtol=1e-4)


def test_fused_qkv_kept_only_for_frozen_weights_that_stay_the_same():
    """The fused q/k/v weight of a frozen model is reused between forwards, rebuilt after an
    in-place edit or a new tensor; a trainable model's is never kept."""
    model = make()
    x = tokens()
    with torch.no_grad():
        fast.forward(model, x)
    assert not hasattr(model.blocks[0].attn, "_qkv_fused")  # trainable: built every call
    model.requires_grad_(False)
    before = fast.forward(model, x)
    assert hasattr(model.blocks[0].attn, "_qkv_fused")
    assert torch.equal(fast.forward(model, x), before)  # the kept weight: same logits
    model.blocks[0].attn.W_K.mul_(1.5)  # in place: the version counter moves
    edited = fast.forward(model, x)
    model.blocks[0].attn.W_K.div_(1.5)
    assert not torch.allclose(edited, before)
    fresh = make()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fast.forward(fresh, x), before)
    model.blocks[1].attn.W_V = torch.nn.Parameter(torch.zeros_like(model.blocks[1].attn.W_V),
                                                  requires_grad=False)
    assert not torch.allclose(fast.forward(model, x), before)  # a replaced tensor


def test_fast_forward_honours_hooks():
    """With any hook attached, fast.forward is the readable forward: the hook runs."""
    model = make()
    x = tokens()
    seen = []
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_mid", lambda a, hook: seen.append(1))]):
        fast.forward(model, x)
    assert seen == [1]


def test_logit_lens_of_final_layer_equals_logits():
    model = make()
    x = tokens()
    logits, cache = model.run_with_cache(x)
    lens = cache.accumulated_resid(apply_ln=True) @ model.W_U
    torch.testing.assert_close(lens[-1], logits, atol=1e-5, rtol=1e-5)
    assert lens.shape == (model.cfg.n_layers + 1, 6, 5, 20)


def test_answer_pos_gathers_full_logits():
    model = make()
    x = tokens()
    ap = torch.tensor([4, 3, 2, 4, 1, 0])
    torch.testing.assert_close(model(x, ap), model(x)[torch.arange(6), ap])


@pytest.mark.parametrize("norm", ["LN", None])
def test_one_layer_token_table_path_equals_the_per_example_path(norm):
    """A one-layer model with a batch larger than its vocabulary computes its first block once
    per (token, position) and gathers; the logits and every gradient are those of the plain
    path."""
    model = make(n_layers=1, normalization_type=norm)
    x = torch.randint(0, 20, (64, 5), generator=torch.Generator().manual_seed(2))
    ap = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 20, (64,), generator=torch.Generator().manual_seed(4))

    def loss_and_grads(plain: bool):
        model.zero_grad()
        logits = model(x, ap) if plain else fast.forward(model, x, ap)
        torch.nn.functional.cross_entropy(logits, y).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    calls = []
    table_path = fast._first_block_at
    fast._first_block_at = lambda *a: calls.append(1) or table_path(*a)
    try:
        quick, g_quick = loss_and_grads(False)
    finally:
        fast._first_block_at = table_path
    plain, g_plain = loss_and_grads(True)
    assert calls == [1]  # the table path ran
    torch.testing.assert_close(quick, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(quick, model(x)[torch.arange(64), ap], atol=1e-5, rtol=1e-5)
    for name in g_plain:
        torch.testing.assert_close(g_quick[name], g_plain[name], atol=1e-5, rtol=1e-4)


def test_stop_and_start_at_layer_compose():
    model = make()
    x = tokens()
    resid = model(x, stop_at_layer=1)
    torch.testing.assert_close(model(x, start_at_layer=1, residual=resid), model(x))


def test_causal_mask_future_tokens_do_not_change_the_past():
    model = make()
    x = tokens()
    y = x.clone()
    y[:, 4] = (y[:, 4] + 1) % 20
    torch.testing.assert_close(model(x)[:, :4], model(y)[:, :4])


def test_parameter_sharing_loops_the_stack():
    model = make(n_layers=2, n_loops=3)
    assert len(model.blocks) == 6
    assert model.blocks[4].attn.W_Q is model.blocks[0].attn.W_Q
    assert model.blocks[5].mlp.W_out is model.blocks[1].mlp.W_out
    unshared = make(n_layers=2)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(p.numel() for p in unshared.parameters())
    _, cache = model.run_with_cache(tokens(), names_filter=lambda n: "resid_post" in n)
    assert len(cache) == 6  # every effective layer keeps its own hook points
    # A shared weight's gradient collects the contributions of every loop.
    model.train()
    model(tokens()).sum().backward()
    assert model.blocks[0].attn.W_Q.grad is model.blocks[4].attn.W_Q.grad


def test_state_dict_round_trip_with_sharing():
    a, b = make(n_loops=2), make(n_loops=2)
    torch.nn.init.normal_(b.W_E)
    b.load_unique_state_dict(a.unique_state_dict())
    torch.testing.assert_close(a(tokens()), b(tokens()))
    assert len(a.unique_state_dict()) == len(list(a.parameters()))


def test_no_layernorm_model_has_no_ln_hooks():
    model = make(normalization_type=None, act_fn="relu", tie_word_embeddings=False)
    assert not any("hook_scale" in n for n in model.hook_dict)
    assert model.W_U.shape == (32, 20)


def test_weight_decay_groups():
    model = make()
    decay, no_decay = model.parameter_groups(1.0)
    assert all(p.dim() >= 2 for p in decay["params"])
    assert any(p is model.W_E for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
