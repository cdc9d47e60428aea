"""The speed paths of the hooked models, kept out of their readable forwards.

``forward(model, tokens, answer_pos=None)`` is what training and evaluation call. For a
:class:`HookedTransformer` that no hook watches it computes exactly the model's own forward
(tests/test_model.py checks logits and every gradient against it) with:

- the fused block kernels of ``kernels.py`` (``F.layer_norm``, one q/k/v matmul,
  ``scaled_dot_product_attention``), which the hooked forward also uses for unwatched blocks;
- the answer-only last block: only the answer positions reach an ``answer`` loss, so the last
  block's query, attention output and MLP run at those positions alone (about 1.7x faster for
  the one-layer modular model);
- the one-layer token table: a first block fed straight from the embeddings sees inputs that
  depend only on (token, position), so its LayerNorm and q/k/v projections run once per
  vocabulary entry and position and are gathered per example (for the one-layer modular model,
  114 tokens, full batch of 3,830, this removes most of the step's matmul work).

Any attached hook, or another model class, sends the call to the model's own forward, so a
hook is never skipped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from groklab.models import kernels
from groklab.models.hooks import watched
from groklab.models.kernels import math_attention  # noqa: F401  (the batched trainer's)
from groklab.models.transformer import HookedTransformer


def hooked(model) -> bool:
    """Whether any hook point of ``model`` has a hook, forward or backward (its hook_dict, not a
    module walk: this runs every training step)."""
    return any(watched(hp) for hp in model.hook_dict.values())


def forward(model, tokens: torch.Tensor, answer_pos: torch.Tensor | None = None) -> torch.Tensor:
    """Logits as ``model(tokens, answer_pos)`` returns them, through the fastest equal path."""
    if not isinstance(model, HookedTransformer) or hooked(model):
        return model(tokens) if answer_pos is None else model(tokens, answer_pos)
    return transformer_forward(model, tokens, answer_pos)


def transformer_forward(model: HookedTransformer, tokens, answer_pos=None):
    cfg = model.cfg
    blocks = list(model.blocks)[: cfg.depth(model.training)]
    if (answer_pos is not None and len(blocks) == 1 and tokens.shape[-2] > cfg.d_vocab
            and cfg.positional == "learned" and not (model.training and cfg.dropout > 0)):
        out = _first_block_at(blocks[0], model.W_E, model.W_pos, tokens, answer_pos)
        return model.unembed(kernels.layer_norm(model.ln_final, out))
    pos = model.position_embedding(tokens)
    embed = F.embedding(tokens, model.W_E)
    resid = embedded = model.embed_drop(embed if pos is None else embed + pos)
    inject = model.loop_starts(0, len(blocks) - 1)
    for l, block in enumerate(blocks[:-1] if answer_pos is not None else blocks):
        resid = kernels.block(block, resid + embedded if l in inject else resid)
    if answer_pos is not None:
        if len(blocks) - 1 in inject:
            resid = resid + embedded
        out = _block_at(blocks[-1], resid, answer_pos)
        return model.unembed(kernels.layer_norm(model.ln_final, out))
    return model.unembed(kernels.layer_norm(model.ln_final, resid))


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
    return kernels.out_proj(attn, z)


def _block_at(block, resid, answer_pos):
    """[batch, d_model]: resid_post at the answer positions only (keys from all before)."""
    rows = torch.arange(resid.shape[0], device=resid.device)
    q, k, v = kernels.qkv(block.attn, kernels.layer_norm(block.ln1, resid))
    q, k = block.attn.rotate(q, k)
    attn_out = _attend_at(block.attn, q[rows, answer_pos], k, v, answer_pos)
    resid = resid[rows, answer_pos] + block.drop(attn_out)
    return resid + block.drop(kernels.mlp(block.mlp, kernels.layer_norm(block.ln2, resid)))


def _first_block_at(block, W_E, W_pos, tokens, answer_pos):
    """:func:`_block_at` for a first block fed straight from the embeddings (the token table)."""
    V, d = W_E.shape
    B, P = tokens.shape
    table = (W_E[:, None, :] + W_pos[None, :P, :]).reshape(V * P, d)
    # [V * P, n_heads, d_head] each
    q, k, v = kernels.qkv(block.attn, kernels.layer_norm(block.ln1, table))
    flat = tokens * P + torch.arange(P, device=tokens.device)  # row of (token, pos)
    at = flat[torch.arange(B, device=tokens.device), answer_pos]
    attn_out = _attend_at(block.attn, _rows(q, at), _rows(k, flat), _rows(v, flat), answer_pos)
    resid = _rows(table, at) + block.drop(attn_out)
    return resid + block.drop(kernels.mlp(block.mlp, kernels.layer_norm(block.ln2, resid)))


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` through index_select: its backward (index_add) is ~9x faster on a CPU than
    indexing's (index_put with accumulation)."""
    return t.index_select(0, idx.reshape(-1)).view(*idx.shape, *t.shape[1:])
