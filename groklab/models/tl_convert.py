"""Weights in and out of TransformerLens's ``HookedTransformer`` (transformer-lens < 4, where it
still exists; TransformerLens 4 removed it).

Both models name their parameters alike (``blocks.{l}.attn.W_Q`` [n_heads, d_model, d_head],
``mlp.W_in`` [d_model, d_mlp], ...), so conversion is a copy by name plus the three places where
they differ: TransformerLens keeps the embeddings under ``embed.W_E`` and ``pos_embed.W_pos``,
always has an unembedding ``W_U`` and bias ``b_U`` (groklab ties ``W_U = W_E^T`` without a bias
by default), and has no looped layers (a looped groklab model is written out unrolled).
Only what both can express converts: standard positions, causal attention scaled by
1/sqrt(d_head), LayerNorm (eps 1e-5) or none, act_fn gelu_new / gelu / relu; anything else is
one clear error.
"""

from __future__ import annotations

import warnings

import torch

from groklab.models.config import ModelConfig
from groklab.models.transformer import HookedTransformer

_CHECKS = {  # TransformerLens config field -> the value groklab computes with
    "positional_embedding_type": "standard", "attn_only": False, "parallel_attn_mlp": False,
    "gated_mlp": False, "attention_dir": "causal", "use_attn_scale": True, "final_rms": False,
    "output_logits_soft_cap": -1.0, "attn_scores_soft_cap": -1.0, "n_key_value_heads": None,
    "use_local_attn": False, "use_qk_norm": False,
}


def from_transformer_lens(tl_model) -> HookedTransformer:
    """A groklab :class:`HookedTransformer` with the weights of a TransformerLens one (equal
    logits, same hook names and shapes)."""
    c = tl_model.cfg
    bad = [f"{k}={getattr(c, k)!r}" for k, v in _CHECKS.items()
           if hasattr(c, k) and getattr(c, k) != v]
    if c.normalization_type not in ("LN", None):
        bad.append(f"normalization_type={c.normalization_type!r}")
    if c.act_fn not in ("gelu_new", "gelu", "relu"):
        bad.append(f"act_fn={c.act_fn!r}")
    if abs(c.attn_scale - c.d_head ** 0.5) > 1e-6 or (c.normalization_type and c.eps != 1e-5):
        bad.append(f"attn_scale={c.attn_scale} / eps={c.eps}")
    if bad:
        raise ValueError("groklab cannot express this TransformerLens model: " + ", ".join(bad)
                         + " (supported: standard positions, causal attention scaled by "
                         "1/sqrt(d_head), LN eps 1e-5 or no LN, act_fn gelu_new/gelu/relu)")
    cfg = ModelConfig(
        n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads, d_head=c.d_head,
        d_mlp=c.d_mlp, d_vocab=c.d_vocab, d_vocab_out=c.d_vocab_out, n_ctx=c.n_ctx,
        act_fn=c.act_fn, normalization_type=c.normalization_type, tie_word_embeddings=False,
    )
    model = HookedTransformer(cfg)
    src = dict(tl_model.named_parameters())
    sd = {_from_tl_name(k): v for k, v in src.items()}
    model.load_unique_state_dict(sd)
    return model.to(tl_model.W_E.device).eval()


def to_transformer_lens(model: HookedTransformer):
    """A TransformerLens ``HookedTransformer`` with this model's weights (looped layers
    unrolled; a tied unembedding written as W_E^T with a zero b_U)."""
    try:
        from transformer_lens import HookedTransformer as TLHooked
        from transformer_lens import HookedTransformerConfig
    except ImportError as e:  # TransformerLens 4 removed HookedTransformer
        raise ImportError("to_transformer_lens needs transformer-lens<4 "
                          "(pip install 'transformer-lens<4')") from e
    c = model.cfg
    if c.positional not in ("learned", "rotary") or c.loop_injection != "none":
        raise ValueError(f"to_transformer_lens: TransformerLens has no model.positional="
                         f"{c.positional} nor input injection; learned or rotary, no injection")
    if c.eval_loops not in (-1, c.n_loops):
        raise ValueError("to_transformer_lens unrolls n_loops passes; model.eval_loops differs")
    tl_cfg = HookedTransformerConfig(
        n_layers=c.n_effective_layers, d_model=c.d_model, n_heads=c.n_heads, d_head=c.d_head,
        d_mlp=c.d_mlp, d_vocab=c.d_vocab, d_vocab_out=c.d_vocab_out, n_ctx=c.n_ctx,
        act_fn=c.act_fn, normalization_type=c.normalization_type, default_prepend_bos=False,
        device=str(model.W_E.device), dtype=model.W_E.dtype,
        **({"positional_embedding_type": "rotary", "rotary_dim": c.d_head,
            "rotary_base": int(c.rotary_base)} if c.positional == "rotary" else {}),
    )
    with warnings.catch_warnings():  # 3.x deprecates HookedTransformer in favour of its bridge
        warnings.simplefilter("ignore", DeprecationWarning)
        tl_model = TLHooked(tl_cfg)
    ours = {}
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            ours[f"{name}.{pname}" if name else pname] = p  # looped blocks: each copy by name
    ours["W_U_param"] = model.W_U
    ours["b_U"] = model.b_U if not c.tie_word_embeddings else torch.zeros(
        c.d_vocab_out, dtype=model.W_E.dtype, device=model.W_E.device)
    with torch.no_grad():
        for name, p in tl_model.named_parameters():
            p.copy_(ours[_from_tl_name(name)])
    return tl_model.eval()


def _from_tl_name(name: str) -> str:
    return {"embed.W_E": "W_E", "pos_embed.W_pos": "W_pos", "unembed.W_U": "W_U_param",
            "unembed.b_U": "b_U"}.get(name, name)
