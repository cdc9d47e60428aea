"""The TransformerLens hook surface without TransformerLens: what hooks may do, how they are
attached and removed, backward hooks, cache keys and helpers, return types, stacked weights."""

import pytest
import torch

from groklab.models import HookedTransformer, ModelConfig, build_model, fast


def make(**kw) -> HookedTransformer:
    base = dict(n_layers=2, d_model=16, n_heads=2, d_mlp=24)
    base.update(kw)
    torch.manual_seed(0)
    model = HookedTransformer(ModelConfig(**base).resolved(d_vocab=12, n_ctx=4)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def toks(b=3):
    return torch.randint(0, 12, (b, 4), generator=torch.Generator().manual_seed(1))


def test_in_place_pos_embed_edit_touches_one_row_and_never_w_pos():
    model, x = make(), toks()
    w_pos, clean = model.W_pos.detach().clone(), model(x)

    def edit(act, hook):
        act[0, 1] += 3.0

    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter="hook_pos_embed")
        edited = model.run_with_hooks(x, fwd_hooks=[("hook_pos_embed", edit)])
    assert torch.equal(model.W_pos, w_pos) and torch.equal(model(x), clean)
    assert not torch.allclose(edited[0], clean[0]) and torch.equal(edited[1:], clean[1:])
    cached = cache["pos_embed"]
    assert cached.untyped_storage().data_ptr() != model.W_pos.untyped_storage().data_ptr()


def test_in_place_hooks_under_autograd_equal_a_replacing_hook_everywhere():
    model, x = make(), toks()

    def in_place(act, hook):
        act.mul_(1.5)

    def replace(act, hook):
        return act * 1.5

    for name in model.hook_dict:
        grads = []
        for fn in (in_place, replace):
            out = model.run_with_hooks(x, fwd_hooks=[(name, fn)])
            grads.append(torch.autograd.grad(out.square().sum(), model.W_pos)[0])
        torch.testing.assert_close(grads[0], grads[1], msg=name)


def test_hooks_are_called_with_hook_as_a_keyword():
    model, x = make(), toks()
    seen = []

    def f(act, *, hook):
        seen.append(hook.name)

    model.run_with_hooks(x, fwd_hooks=[("blocks.1.attn.hook_z", f)])
    assert seen == ["blocks.1.attn.hook_z"]


def test_add_hook_reset_hooks_and_permanent_hooks():
    model, x = make(), toks()
    clean = model(x)
    model.add_hook("blocks.0.hook_mlp_out", lambda a, hook: a * 0)
    model.add_hook(lambda n: n.endswith("hook_resid_post"), lambda a, hook: None, is_permanent=True)
    assert fast.hooked(model) and not torch.allclose(model(x), clean)
    with model.hooks([("blocks.1.hook_attn_out", lambda a, hook: a * 0)]):
        pass  # leaving a context removes only its own hooks
    assert model.hook_dict["blocks.0.hook_mlp_out"].has_hooks()
    model.reset_hooks()
    torch.testing.assert_close(model(x), clean)
    assert model.hook_dict["blocks.1.hook_resid_post"].has_hooks()  # permanent
    model.reset_hooks(including_permanent=True)
    assert not fast.hooked(model)


def test_backward_hooks_see_the_gradient_autograd_computes():
    model, x = make(), toks()
    name = "blocks.0.attn.hook_pattern"
    got, kept = [], {}

    def keep(act, hook):
        act.retain_grad()
        kept["act"] = act

    loss = model.run_with_hooks(x, return_type="loss", fwd_hooks=[(name, keep)],
                                bwd_hooks=[(name, lambda g, hook: got.append(g))],
                                reset_hooks_end=False)
    loss.backward()
    model.reset_hooks()
    assert len(got) == 1
    torch.testing.assert_close(got[0], kept["act"].grad)
    _, cache = model.run_with_cache(x, return_type="loss", incl_bwd=True, names_filter=name)
    torch.testing.assert_close(cache[name + "_grad"], got[0])
    # a backward hook removed before backward() does not fire (as TL's reset_hooks_end)
    loss = model.run_with_hooks(x, return_type="loss", bwd_hooks=[(name, lambda g, hook: 1 / 0)])
    loss.backward()


def test_reading_hooks_cost_no_copy():
    model, x = make(), toks()
    _, cache = model.run_with_cache(x)
    # resid_post of a block is the tensor entering the next one: stored once, not copied
    assert cache["resid_post", 0].data_ptr() == cache["resid_pre", 1].data_ptr()


def test_cache_shortcuts_and_helper_identities():
    model, x = make(), toks()
    _, cache = model.run_with_cache(x)
    assert cache["resid_post", -1] is cache["blocks.1.hook_resid_post"]
    assert cache["scale", 1, "ln1"] is cache["blocks.1.ln1.hook_scale"]
    assert cache["attn", 0] is cache["blocks.0.attn.hook_pattern"]
    assert cache["embed"] is cache["hook_embed"] and cache["scale"] is cache["ln_final.hook_scale"]
    parts, labels = cache.decompose_resid(layer=1, return_labels=True)
    assert labels == ["embed", "pos_embed", "0_attn_out", "0_mlp_out"]
    torch.testing.assert_close(parts.sum(0), cache["resid_pre", 1], atol=1e-5, rtol=1e-5)
    # the scaled parts add up to the final LayerNorm's normalized stream
    final = cache.apply_ln_to_stack(cache.decompose_resid(), layer=None).sum(0)
    torch.testing.assert_close(final, cache["ln_final.hook_normalized"], atol=1e-5, rtol=1e-5)
    acc, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    assert acc.shape == (5, 3, 4, 16)
    torch.testing.assert_close(model.unembed(cache.accumulated_resid(apply_ln=True)[-1]), model(x))
    assert cache.stack_activation("pattern").shape == (2, 3, 2, 4, 4)
    one = model.run_with_cache(x[:1], remove_batch_dim=True)[1]
    torch.testing.assert_close(one["z", 1], cache["z", 1][0])


def test_return_types_and_starting_from_a_residual():
    model, x = make(), toks()
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 12), x[:, 1:].reshape(-1))
    torch.testing.assert_close(model(x, return_type="loss"), loss)
    torch.testing.assert_close(model(x, "loss"), loss)
    both = model(x, return_type="both")
    torch.testing.assert_close(both.logits, logits)
    torch.testing.assert_close(both.loss, loss)
    assert model(x, return_type=None) is None
    assert model(x, return_type="loss", loss_per_token=True).shape == (3, 3)
    resid = model(x, stop_at_layer=1)
    torch.testing.assert_close(model(resid, start_at_layer=1), logits)
    ap, t = torch.tensor([3, 2, 1]), torch.tensor([0, 5, 7])
    torch.testing.assert_close(model(x, ap, return_type="loss", targets=t),
                               torch.nn.functional.cross_entropy(model(x, ap), t))
    with pytest.raises(ValueError, match="needs targets"):
        model(x, ap, return_type="loss")
    with pytest.raises(ValueError, match="return_type must be"):
        model(x, return_type="logit")


def test_stacked_weights_follow_effective_layers():
    model = make(n_loops=2)
    assert model.W_Q.shape == (4, 2, 16, 8) and model.W_out.shape == (4, 24 * 1, 16)
    assert torch.equal(model.W_Q[2], model.W_Q[0])  # looped: the same weights again
    torch.testing.assert_close(model.OV.AB, model.W_V @ model.W_O)
    torch.testing.assert_close(model.QK.AB, model.W_Q @ model.W_K.transpose(-2, -1))
    assert model.OV.shape == (4, 2, 16, 16) and model.OV[1, 0].AB.shape == (16, 16)


def test_mlp_models_have_the_hook_surface_that_applies():
    pair = build_model(ModelConfig(architecture="pair_mlp", d_mlp=8).resolved(11, 4))
    x = torch.randint(0, 11, (5, 4))
    _, cache = pair.run_with_cache(x)
    assert cache["post"] is cache["mlp.hook_post"] and cache["embed"] is cache["hook_embed"]
    got = []
    pair.add_hook("mlp.hook_pre", lambda g, hook: got.append(g), dir="bwd")
    pair(x).sum().backward()
    pair.reset_hooks()
    assert len(got) == 1 and got[0].shape == (5, 8)
    dense = build_model(ModelConfig(architecture="dense", n_layers=3, d_mlp=8, d_input=6,
                                    d_vocab=3, d_vocab_out=3, n_ctx=1))
    _, cache = dense.run_with_cache(torch.randn(4, 6))
    assert cache.stack_activation("post").shape == (3, 4, 8)
