"""The fused kernels of a transformer block, shared by the speed paths (``fast.py``) and by the
hooked forward for blocks that no hook watches (``transformer.py``).

Each function computes exactly what the readable modules of ``transformer.py`` compute, with:
``F.layer_norm`` for LayerNorm (the readable one computes the scale and the normalized state
separately so both can be hooked), one fused [d_model, 3 * n_heads * d_head] matmul for q, k and
v, and ``scaled_dot_product_attention`` (the readable attention materializes scores and pattern
for their hooks). Inside :func:`math_attention` (the batched trainer's ``vmap``, which has no
batching rule for the fused CPU attention kernel) attention is computed with plain matmuls.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

_MATH_ATTENTION = False


@contextmanager
def math_attention():
    """Attention through explicit matmuls (for ``torch.func.vmap``)."""
    global _MATH_ATTENTION
    old, _MATH_ATTENTION = _MATH_ATTENTION, True
    try:
        yield
    finally:
        _MATH_ATTENTION = old


def layer_norm(ln, x):
    if not ln.enabled:
        return x
    return F.layer_norm(x, x.shape[-1:], ln.w, ln.b, ln.eps)


def qkv(attn, x):
    # One fused [d_model, 3 * n_heads * d_head] matmul instead of three per-head einsums.
    h, d, dh = attn.W_Q.shape
    W = torch.cat([attn.W_Q, attn.W_K, attn.W_V]).permute(1, 0, 2).reshape(d, 3 * h * dh)
    b = torch.cat([attn.b_Q, attn.b_K, attn.b_V]).reshape(3 * h * dh)
    out = torch.addmm(b, x.reshape(-1, d), W).view(*x.shape[:-1], 3, h, dh)
    return out.unbind(-3)


def out_proj(attn, z):
    h, dh, d = attn.W_O.shape
    return torch.addmm(attn.b_O, z.reshape(-1, h * dh), attn.W_O.reshape(h * dh, d))


def attention(attn, x):
    q, k, v = qkv(attn, x)
    q, k = attn.rotate(q, k)  # rotary positions (a no-op for every other scheme)
    p_drop = attn.cfg.dropout if attn.training else 0.0
    if _MATH_ATTENTION:
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(attn.cfg.d_head)
        pos = x.shape[-2]
        scores = scores.masked_fill(~attn.mask[:pos, :pos], float("-inf"))
        pattern = F.dropout(scores.softmax(-1), p_drop, attn.training)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
    else:
        z = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            dropout_p=p_drop, is_causal=True,
        ).transpose(1, 2)
    return out_proj(attn, z).view(*z.shape[:-2], -1)


def mlp(m, x):
    d = x.shape[-1]
    pre = torch.addmm(m.b_in, x.reshape(-1, d), m.W_in)
    return torch.addmm(m.b_out, m.act(pre), m.W_out).view_as(x)


def block(blk, resid):
    resid = resid + blk.drop(attention(blk.attn, layer_norm(blk.ln1, resid)))
    return resid + blk.drop(mlp(blk.mlp, layer_norm(blk.ln2, resid)))


