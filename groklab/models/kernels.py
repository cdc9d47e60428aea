"""The fused kernels of a transformer block, shared by the speed paths (``fast.py``) and by the
hooked forward for blocks that no hook watches (``transformer.py``).

Each function computes exactly what the readable modules of ``transformer.py`` compute, with:
``F.layer_norm`` for LayerNorm (the readable one computes the scale and the normalized state
separately so both can be hooked), one fused [d_model, 3 * n_heads * d_head] matmul for q, k and
v, and ``scaled_dot_product_attention`` (the readable attention materializes scores and pattern
for their hooks). Inside :func:`math_attention` (the batched trainer's ``vmap``, which has no
batching rule for the fused CPU attention kernel) attention is computed with plain matmuls.
A weight that carries an adapter (``adapters.py``) is read as W0 + dW, or, where the adapter
is set to run on activations, as ``x @ W0 + adapter.apply_to(x)``.
"""

from __future__ import annotations

import math
import weakref
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


def split_weight(module, name: str):
    """(W0, adapter) of a weight whose adapter runs on activations (the map then computes
    ``x @ W0 + adapter.apply_to(x)``), else (the weight as read, None)."""
    plist = getattr(module, "parametrizations", None)
    if plist is not None and name in plist and getattr(plist[name][0], "on_activations", False):
        return plist[name].original, plist[name][0]
    return getattr(module, name), None


def _adapted(out, x2, adapters, widths):
    """out + the adapters' outputs, side by side in ``widths`` columns (zeros where none)."""
    if all(a is None for a in adapters):
        return out
    factors = [getattr(a, "factors", lambda: None)() for a in adapters if a is not None]
    if len(factors) == len(adapters) and all(f is not None for f in factors):
        As, Bs = [f[0] for f in factors], [f[1] for f in factors]
        if all(isinstance(A, torch.Tensor) for A in As):
            # Low-rank adapters on every column block (LoRA's A, B): one skinny matmul for all
            # the A's, then the B's as one block-diagonal map added by the same addmm, rather
            # than a pair of skinny matmuls per block, a concatenation and an add
            # (bench/adapter_step.py)
            A = As[0] if len(As) == 1 else torch.cat(As, 1)
            B = Bs[0] if len(Bs) == 1 else torch.block_diag(*Bs)
            return torch.addmm(out, x2 @ A, B)
        if all(A is As[0] for A in As):
            # One set of fixed maps shared by every block (MoRA on q, k and v, which read the
            # same input): compress once, every block's M in one matmul, the decompression
            # added into out in place
            y = As[0].inner(x2, Bs[0] if len(Bs) == 1 else torch.cat(Bs, 1))
            return As[0].add_decompressed(out, y, len(Bs))
    parts = [a.apply_to(x2) if a is not None else x2.new_zeros(x2.shape[0], w)
             for a, w in zip(adapters, widths)]
    return out + (parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))


def _fused_qkv(attn, Wq, Wk, Wv):
    """[d_model, 3 * n_heads * d_head]: the per-head weights side by side, as one matmul reads
    them. The permuted copy costs as much as a few matmuls at d_model 768 (7 ms a layer on one
    CPU thread), so for frozen weights (a base under adapters) it is kept between calls until a
    weight changes (its version counter moves) or is replaced. Only frozen ones: a trainable
    weight may be changed where no version counter sees it (a replayed CUDA graph step,
    ``p.data`` writes)."""
    h, d, dh = Wq.shape

    def fuse():
        return torch.cat([Wq, Wk, Wv]).permute(1, 0, 2).reshape(d, 3 * h * dh)

    ws = (Wq, Wk, Wv)
    if any(w.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(w) for w in ws):
        return fuse()
    versions = tuple((w._version, w.data_ptr(), w.dtype, w.device) for w in ws)
    cached = getattr(attn, "_qkv_fused", None)
    if cached is not None and cached[1] == versions and all(
            r() is w for r, w in zip(cached[0], ws)):
        return cached[2]
    W = fuse()
    attn._qkv_fused = (tuple(weakref.ref(w) for w in ws), versions, W)
    return W


def mix_values(pattern: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """pattern [B, q, k] @ v [B, k, d] for a batch of attention heads. PyTorch's CPU bmm runs
    products under 400 multiply-adds a matrix through a scalar loop (3.6x slower here than one
    multiply-add per key at 3 positions, d_head 32), so those take the multiply-adds."""
    B, q, k = pattern.shape
    if v.device.type != "cpu" or q * k * v.shape[-1] >= 400 or k > 8:
        return torch.bmm(pattern, v)
    z = pattern[:, :, :1] * v[:, None, 0]
    for j in range(1, k):
        z = z.addcmul(pattern[:, :, j, None], v[:, None, j])
    return z


def qkv(attn, x):
    # One fused [d_model, 3 * n_heads * d_head] matmul instead of three per-head einsums.
    (Wq, aq), (Wk, ak), (Wv, av) = (split_weight(attn, n) for n in ("W_Q", "W_K", "W_V"))
    h, d, dh = Wq.shape
    W = _fused_qkv(attn, Wq, Wk, Wv)
    b = torch.cat([attn.b_Q, attn.b_K, attn.b_V]).reshape(3 * h * dh)
    x2 = x.reshape(-1, d)
    out = _adapted(torch.addmm(b, x2, W), x2, (aq, ak, av), (h * dh,) * 3)
    return out.view(*x.shape[:-1], 3, h, dh).unbind(-3)


def out_proj(attn, z):
    W_O, adapter = split_weight(attn, "W_O")
    h, dh, d = W_O.shape
    z2 = z.reshape(-1, h * dh)
    return _adapted(torch.addmm(attn.b_O, z2, W_O.reshape(h * dh, d)), z2, (adapter,), (d,))


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
    (W_in, a_in), (W_out, a_out) = split_weight(m, "W_in"), split_weight(m, "W_out")
    x2 = x.reshape(-1, x.shape[-1])
    pre = _adapted(torch.addmm(m.b_in, x2, W_in), x2, (a_in,), (W_in.shape[1],))
    post = m.act(pre)
    out = _adapted(torch.addmm(m.b_out, post, W_out), post, (a_out,), (W_out.shape[1],))
    return out.view_as(x)


def block(blk, resid):
    resid = resid + blk.drop(attention(blk.attn, layer_norm(blk.ln1, resid)))
    return resid + blk.drop(mlp(blk.mlp, layer_norm(blk.ln2, resid)))


