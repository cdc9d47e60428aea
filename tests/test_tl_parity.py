"""The same checks run against TransformerLens itself (transformer-lens < 4, which still has
HookedTransformer), on the same weights: logits, every shared hook point, in-place and ablation
hooks, backward hooks, every patching function, the cache helpers and the stacked weights.

Skipped when transformer-lens < 4 is not installed (it is in the ``dev`` extra)."""

from __future__ import annotations

import pytest
import torch

from groklab.analysis import patching
from groklab.models import (
    HookedTransformer,
    ModelConfig,
    from_transformer_lens,
    to_transformer_lens,
)

pytest.importorskip("transformer_lens", reason="needs transformer-lens<4: pip install -e '.[dev]'")
try:  # 4.x removed HookedTransformer (and the patching functions' model)
    from transformer_lens import HookedTransformer as _TLModel  # noqa: F401
    from transformer_lens import patching as tl_patching
except ImportError:
    pytest.skip("transformer-lens 4 removed HookedTransformer; install transformer-lens<4",
                allow_module_level=True)

# TL 3.x deprecates HookedTransformer in favour of its bridge; the parity is with the former.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ATOL = 1e-5


def pair(**kw):
    """A groklab model with weights large enough that patches move the logits, and its
    TransformerLens copy."""
    base = dict(n_layers=2, d_model=16, n_heads=2, d_mlp=24, act_fn="gelu_new")
    base.update(kw)
    torch.manual_seed(0)
    ours = HookedTransformer(ModelConfig(**base).resolved(d_vocab=12, n_ctx=4)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return ours, to_transformer_lens(ours)


def toks(b=3, seed=1):
    return torch.randint(0, 12, (b, 4), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", [{}, {"normalization_type": None, "act_fn": "relu"},
                                {"tie_word_embeddings": False, "act_fn": "gelu"},
                                {"n_loops": 2}])
def test_logits_match_transformerlens_given_same_weights(kw):
    ours, theirs = pair(**kw)
    x = toks()
    torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=1e-5)
    back = from_transformer_lens(theirs)  # and back: weights in, logits equal
    torch.testing.assert_close(back(x), theirs(x), atol=ATOL, rtol=1e-5)
    for rt in ("loss", "both"):
        a, b = ours(x, return_type=rt), theirs(x, return_type=rt)
        torch.testing.assert_close(tuple(a) if rt == "both" else a,
                                   tuple(b) if rt == "both" else b, atol=ATOL, rtol=1e-5)
    assert ours(x, return_type=None) is None and theirs(x, return_type=None) is None


def test_every_shared_hook_point_matches_in_shape_and_value():
    ours, theirs = pair()
    x = toks()
    _, a = ours.run_with_cache(x)
    _, b = theirs.run_with_cache(x)
    assert set(ours.hook_dict) <= set(b.keys())  # every groklab name is a TL name
    for name in ours.hook_dict:
        torch.testing.assert_close(a[name], b[name], atol=ATOL, rtol=1e-5, msg=name)


def _in_place(act, hook):
    act[0, 1] += 0.5  # row 0 only; returns None like a TL in-place hook


def _ablate(act, hook):
    return torch.zeros_like(act)  # a zero LayerNorm scale gives inf / nan, in both


def _mean_ablate(act, hook):
    return act.mean(0, keepdim=True).expand_as(act).clone()  # TL cannot take a broadcast view


def _grad_w_q(model, out):
    return torch.autograd.grad(out.square().sum(), model.blocks[0].attn.W_Q, allow_unused=True)[0]


@pytest.mark.parametrize("grad", [False, True])
def test_in_place_and_ablation_hooks_at_every_hook_point(grad):
    ours, theirs = pair()
    x = toks()
    w_pos = ours.W_pos.detach().clone()
    clean = ours(x).detach()
    tl_refuses = set()
    with torch.set_grad_enabled(grad):
        for name in ours.hook_dict:
            for fn in (_in_place, _ablate, _mean_ablate):
                a = ours.run_with_hooks(x, fwd_hooks=[(name, fn)])
                ga = _grad_w_q(ours, a) if grad else None
                try:
                    b = theirs.run_with_hooks(x, fwd_hooks=[(name, fn)])
                    gb = _grad_w_q(theirs, b) if grad else None
                except RuntimeError:  # TL's hook_scale is sqrt's saved output
                    tl_refuses.add(name)
                    continue
                torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5, equal_nan=True,
                                           msg=f"{name} {fn.__name__}")
                assert (ga is None) == (gb is None), name
                if ga is not None:
                    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-4, equal_nan=True,
                                               msg=f"{name} {fn.__name__}")
    # groklab took every edit; TL refuses some in-place edits of LayerNorm scales under autograd
    assert all(n.endswith("hook_scale") for n in tl_refuses) and (grad or not tl_refuses)
    assert torch.equal(ours.W_pos.detach(), w_pos)  # an in-place hook_pos_embed edit stays put
    torch.testing.assert_close(ours(x), clean)


def test_keyword_only_hooks_and_backward_hooks_match():
    ours, theirs = pair()
    x = toks()
    grads = {}

    def fwd(act, *, hook):  # TL calls fn(activation, hook=hook_point)
        return act * 0.5

    def bwd(grad, *, hook):
        grads.setdefault(id(hook), []).append(grad.clone())

    name = "blocks.0.hook_resid_mid"
    for m in (ours, theirs):
        loss = m.run_with_hooks(x, return_type="loss", fwd_hooks=[(name, fwd)],
                                bwd_hooks=[(name, bwd)], reset_hooks_end=False)
        loss.backward()
        m.reset_hooks()
    a, b = (grads[id(m.hook_dict[name])] for m in (ours, theirs))
    assert len(a) == len(b) == 1
    torch.testing.assert_close(a[0], b[0], atol=ATOL, rtol=1e-5)
    # run_with_cache(incl_bwd=True): gradients of every hook point under NAME_grad
    _, ca = ours.run_with_cache(x, return_type="loss", incl_bwd=True)
    _, cb = theirs.run_with_cache(x, return_type="loss", incl_bwd=True)
    for name in ours.hook_dict:
        if ".ln1." in name:  # TL runs ln1 three times (q, k, v inputs) and keeps one third's grad
            continue
        torch.testing.assert_close(ca[name + "_grad"], cb[name + "_grad"], atol=1e-5, rtol=1e-4)


def _metric(logits):
    return logits[:, -1, 3].mean() - logits[:, -1, 5].mean()


PATCHING = [n for n in dir(tl_patching) if n.startswith("get_act_patch_")]


def test_groklab_has_every_transformerlens_patching_function():
    assert PATCHING and all(hasattr(patching, n) for n in PATCHING)


@pytest.mark.parametrize("name", PATCHING)
def test_patching_function_matches_transformerlens(name):
    ours, theirs = pair()
    clean, corrupt = toks(seed=1), toks(seed=2)
    _, ca = ours.run_with_cache(clean)
    _, cb = theirs.run_with_cache(clean)
    a = getattr(patching, name)(ours, corrupt, ca, _metric)
    b = getattr(tl_patching, name)(theirs, corrupt, cb, _metric)
    assert a.shape == b.shape and a.dtype == b.dtype
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert a.std() > 1e-3  # the patches move the metric


def test_a_metric_with_one_value_per_row_raises_in_both():
    ours, theirs = pair()
    clean, corrupt = toks(seed=1), toks(seed=2)
    per_row = lambda logits: logits[:, -1, 3]  # noqa: E731
    for m, fn in ((ours, patching.get_act_patch_resid_pre),
                  (theirs, tl_patching.get_act_patch_resid_pre)):
        _, cache = m.run_with_cache(clean)
        with pytest.raises(RuntimeError):
            fn(m, corrupt, cache, per_row)


def test_cache_helpers_match():
    ours, theirs = pair()
    x = toks()
    _, a = ours.run_with_cache(x)
    _, b = theirs.run_with_cache(x)
    calls = [
        ("accumulated_resid", {}), ("accumulated_resid", {"apply_ln": True}),
        ("accumulated_resid", {"layer": 1, "incl_mid": True, "apply_ln": True}),
        ("accumulated_resid", {"layer": 1, "mlp_input": True, "return_labels": True}),
        ("accumulated_resid", {"apply_ln": True, "pos_slice": -1}),
        ("decompose_resid", {"return_labels": True}), ("decompose_resid", {"apply_ln": True}),
        ("decompose_resid", {"layer": 1, "mlp_input": True, "mode": "attn", "apply_ln": True}),
        ("stack_activation", {"activation_name": "pattern"}),
        ("stack_activation", {"activation_name": "scale", "sublayer_type": "ln2"}),
    ]
    for method, kw in calls:
        ra, rb = getattr(a, method)(**kw), getattr(b, method)(**kw)
        if kw.get("return_labels"):
            assert ra[1] == rb[1]
            ra, rb = ra[0], rb[0]
        torch.testing.assert_close(ra, rb, atol=ATOL, rtol=1e-5, msg=f"{method} {kw}")
    stack = a.decompose_resid(layer=1)
    torch.testing.assert_close(a.apply_ln_to_stack(stack, 1), b.apply_ln_to_stack(stack, 1))
    for key in [("resid_post", -1), ("scale", 1, "ln1"), ("attn", 0), ("embed",), "embed",
                "k1", "scale", ("normalized", 0, "ln2")]:
        torch.testing.assert_close(a[key], b[key], msg=str(key))
    one_a = ours.run_with_cache(x[:1], remove_batch_dim=True)[1]
    one_b = theirs.run_with_cache(x[:1], remove_batch_dim=True)[1]
    torch.testing.assert_close(one_a["pattern", 1], one_b["pattern", 1])


def test_start_stop_at_layer_and_stacked_weights_match():
    ours, theirs = pair()
    x = toks()
    ra, rb = ours(x, stop_at_layer=1), theirs(x, stop_at_layer=1)
    torch.testing.assert_close(ra, rb, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(ours(ra, start_at_layer=1), theirs(rb, start_at_layer=1),
                               atol=ATOL, rtol=1e-5)
    for w in ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "b_Q", "b_K", "b_V", "b_O", "b_in",
              "b_out", "W_E", "W_pos", "W_U"):
        torch.testing.assert_close(getattr(ours, w), getattr(theirs, w), msg=w)
    for f in ("OV", "QK"):
        torch.testing.assert_close(getattr(ours, f).AB, getattr(theirs, f).AB, msg=f)
