"""The speed paths of the hooked models, kept out of their readable forwards.

``forward(model, tokens, answer_pos=None)`` is what training and evaluation call. For a
:class:`HookedTransformer` that no hook watches it computes exactly the model's own forward
(tests/test_model.py checks logits and every gradient against it) with:

- fused kernels: ``F.layer_norm`` for LayerNorm (the readable forward computes the scale and the
  normalized state separately so both can be hooked) and ``scaled_dot_product_attention``
  (the readable forward materializes scores and pattern for their hooks);
- the answer-only last block: only the answer positions reach an ``answer`` loss, so the last
  block's query, attention output and MLP run at those positions alone (about 1.7x faster for
  the one-layer modular model);
- the one-layer token table: a first block fed straight from the embeddings sees inputs that
  depend only on (token, position), so its LayerNorm and q/k/v projections run once per
  vocabulary entry and position and are gathered per example (for the one-layer modular model,
  114 tokens, full batch of 3,830, this removes most of the step's matmul work).

Any attached hook, or another model class, sends the call to the model's readable forward, so a
hook is never skipped. Inside :func:`math_attention` (the batched trainer's ``vmap``, which has
no batching rule for the fused CPU attention kernel) attention is computed with plain matmuls.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from groklab.models.transformer import HookedTransformer

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


def hooked(model) -> bool:
    """Whether any hook point of ``model`` has a hook, forward or backward (its hook_dict, not a
    module walk: this runs every training step)."""
    return any(hp._forward_hooks for hp in model.hook_dict.values())


def forward(model, tokens: torch.Tensor, answer_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Logits as ``model(tokens, answer_pos)`` returns them, through the fastest equal path."""
    if not isinstance(model, HookedTransformer) or hooked(model):
        return model(tokens) if answer_pos is None else model(tokens, answer_pos)
    return transformer_forward(model, tokens, answer_pos)


def transformer_forward(model: HookedTransformer, tokens, answer_pos=None):
    cfg = model.cfg
    blocks = list(model.blocks)
    if (answer_pos is not None and len(blocks) == 1 and tokens.shape[-2] > cfg.d_vocab
            and not (model.training and cfg.dropout > 0)):
        out = _first_block_at(blocks[0], model.W_E, model.W_pos, tokens, answer_pos)
        return model.unembed(_ln(model.ln_final, out))
    resid = model.embed_drop(F.embedding(tokens, model.W_E) + model.W_pos[: tokens.shape[-1]])
    for block in blocks[:-1] if answer_pos is not None else blocks:
        resid = _block(block, resid)
    if answer_pos is not None:
        return model.unembed(_ln(model.ln_final, _block_at(blocks[-1], resid, answer_pos)))
    return model.unembed(_ln(model.ln_final, resid))


def _ln(ln, x):
    if not ln.enabled:
        return x
    return F.layer_norm(x, x.shape[-1:], ln.w, ln.b, ln.eps)


def _qkv(attn, x):
    # One fused [d_model, 3 * n_heads * d_head] matmul instead of three per-head einsums.
    h, d, dh = attn.W_Q.shape
    W = torch.cat([attn.W_Q, attn.W_K, attn.W_V]).permute(1, 0, 2).reshape(d, 3 * h * dh)
    b = torch.cat([attn.b_Q, attn.b_K, attn.b_V]).reshape(3 * h * dh)
    qkv = torch.addmm(b, x.reshape(-1, d), W).view(*x.shape[:-1], 3, h, dh)
    return qkv.unbind(-3)


def _out(attn, z):
    h, dh, d = attn.W_O.shape
    return torch.addmm(attn.b_O, z.reshape(-1, h * dh), attn.W_O.reshape(h * dh, d))


def _attention(attn, x):
    q, k, v = _qkv(attn, x)
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
    return _out(attn, z).view(*z.shape[:-2], -1)


def _mlp(mlp, x):
    d = x.shape[-1]
    pre = torch.addmm(mlp.b_in, x.reshape(-1, d), mlp.W_in)
    return torch.addmm(mlp.b_out, mlp.act(pre), mlp.W_out).view_as(x)


def _block(block, resid):
    resid = resid + block.drop(_attention(block.attn, _ln(block.ln1, resid)))
    return resid + block.drop(_mlp(block.mlp, _ln(block.ln2, resid)))


def _attend_at(attn, q, k, v, answer_pos):
    """Attention output [batch, d_model] of answer queries q [batch, n_heads, d_head] over keys
    and values [batch, pos, n_heads, d_head], causal up to ``answer_pos``. Broadcast products,
    not einsum: with a handful of keys, a batched matmul of [n_heads, d_head] x [d_head, pos]
    per example is several times slower on a CPU."""
    scores = (q[:, None] * k).sum(-1) / math.sqrt(attn.cfg.d_head)  # [batch, pos, n_heads]
    keys = torch.arange(k.shape[1], device=k.device)
    scores = scores.masked_fill((keys[None, :] > answer_pos[:, None])[..., None], float("-inf"))
    pattern = F.dropout(scores.softmax(1), attn.cfg.dropout if attn.training else 0.0,
                        attn.training)
    z = (pattern[..., None] * v).sum(1)  # [batch, n_heads, d_head]
    return _out(attn, z)


def _block_at(block, resid, answer_pos):
    """[batch, d_model]: resid_post at the answer positions only (keys from all before)."""
    rows = torch.arange(resid.shape[0], device=resid.device)
    q, k, v = _qkv(block.attn, _ln(block.ln1, resid))
    attn_out = _attend_at(block.attn, q[rows, answer_pos], k, v, answer_pos)
    resid = resid[rows, answer_pos] + block.drop(attn_out)
    return resid + block.drop(_mlp(block.mlp, _ln(block.ln2, resid)))


def _first_block_at(block, W_E, W_pos, tokens, answer_pos):
    """:func:`_block_at` for a first block fed straight from the embeddings (the token table)."""
    V, d = W_E.shape
    B, P = tokens.shape
    table = (W_E[:, None, :] + W_pos[None, :P, :]).reshape(V * P, d)
    q, k, v = _qkv(block.attn, _ln(block.ln1, table))  # [V * P, n_heads, d_head] each
    flat = tokens * P + torch.arange(P, device=tokens.device)  # row of (token, pos)
    at = flat[torch.arange(B, device=tokens.device), answer_pos]
    attn_out = _attend_at(block.attn, _rows(q, at), _rows(k, flat), _rows(v, flat), answer_pos)
    resid = _rows(table, at) + block.drop(attn_out)
    return resid + block.drop(_mlp(block.mlp, _ln(block.ln2, resid)))


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` through index_select: its backward (index_add) is ~9x faster on a CPU than
    indexing's (index_put with accumulation)."""
    return t.index_select(0, idx.reshape(-1)).view(*idx.shape, *t.shape[1:])
