"""Greedy decoding with a key/value cache: one new position per forward, for every row at once.

``greedy_decode(model, inputs, start, length, stop)`` (``groklab.tasks.objectives``) hands an
unhooked :class:`HookedTransformer` in eval mode here. All rows advance one column per step:
the prompt columns before the earliest answer are run once (the prefill, a causal forward that
fills each effective layer's keys and values), then each step embeds the one column ``t`` of
every row (a prompt token where a row's answer has not begun, the token just generated where
it has), attends from it to the cached keys and values, and writes the argmax as the row's token
at ``t + 1`` when that lies inside its answer. A row stops after writing ``stop``; decoding
ends when every row has. This computes what the full forward computes (tests/test_addition.py
compares the tokens with full-forward decoding for every positional scheme and a looped stack
with input injection): Abacus indices come from the tokens before each position, rotary angles
from the column, and the embedded column is re-added before each later pass of a looped stack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from groklab.models import kernels, positions
from groklab.models.transformer import HookedTransformer


def supported(model) -> bool:
    return (isinstance(model, HookedTransformer) and not model.training
            and not any(hp._forward_hooks for hp in model.hook_dict.values()))


def _embedded(model: HookedTransformer, tokens: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Token + positional embedding of columns lo..hi-1 (eval mode: no dropout, no offset)."""
    e = F.embedding(tokens[:, lo:hi], model.W_E)
    if model.cfg.positional == "learned":
        e = e + model.W_pos[lo:hi]
    elif model.cfg.positional == "abacus":
        idx = positions.abacus_positions(tokens[:, :hi], model.is_digit)[:, lo:hi]
        e = e + F.embedding(idx, model.W_abacus)
    return e


def _columns(model: HookedTransformer, e: torch.Tensor, lo: int, cache: list) -> torch.Tensor:
    """Logits [n, m, vocab] of columns lo..lo+m-1 whose embeddings are ``e``; their keys and
    values join ``cache`` (one (K, V) pair [n, n_heads, n_ctx, d_head] per effective layer)."""
    m = e.shape[1]
    blocks = list(model.blocks)[: model.cfg.depth(False)]
    inject = model.loop_starts(0, len(blocks) - 1)
    resid = e
    for layer, block in enumerate(blocks):
        if layer in inject:
            resid = resid + e
        attn = block.attn
        q, k, v = kernels.qkv(attn, kernels.layer_norm(block.ln1, resid))
        if attn.rotary:
            q = positions.rotate(q, attn.rotary_cos, attn.rotary_sin, start=lo)
            k = positions.rotate(k, attn.rotary_cos, attn.rotary_sin, start=lo)
        K, V = cache[layer]
        K[:, :, lo : lo + m], V[:, :, lo : lo + m] = k.transpose(1, 2), v.transpose(1, 2)
        keys, values = K[:, :, : lo + m], V[:, :, : lo + m]
        # the prefill (from column 0) is causal; one new column sees every cached one
        z = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, is_causal=m > 1)
        resid = resid + kernels.out_proj(attn, z.transpose(1, 2)).view_as(resid)
        resid = resid + kernels.mlp(block.mlp, kernels.layer_norm(block.ln2, resid))
    return model.unembed(kernels.layer_norm(model.ln_final, resid))


@torch.no_grad()
def cached_greedy(model: HookedTransformer, inputs: torch.Tensor, start: torch.Tensor,
                  length: torch.Tensor, stop: int | None = None) -> torch.Tensor:
    tokens = inputs.clone()
    n = len(tokens)
    if not n or int(length.max()) <= 0:
        return tokens
    cfg = model.cfg
    shape = (n, cfg.n_heads, tokens.shape[1], cfg.d_head)
    dtype = model.W_E.dtype
    cache = [(torch.empty(shape, dtype=dtype, device=tokens.device),
              torch.empty(shape, dtype=dtype, device=tokens.device))
             for _ in range(cfg.depth(False))]
    end = start + length  # a row writes columns start .. end - 1
    t = int(start.min()) - 1  # the first column whose logits a row needs
    last = int(end.max()) - 1
    done = length <= 0
    logits = _columns(model, _embedded(model, tokens, 0, t + 1), 0, cache)[:, -1]
    while True:
        nxt = logits.argmax(-1)
        write = (t + 1 >= start) & (t + 1 < end) & ~done
        tokens[write, t + 1] = nxt[write]
        if stop is not None:
            done |= write & (nxt == stop)
        done |= t + 2 >= end
        t += 1
        if t >= last or bool(done.all()):
            return tokens
        logits = _columns(model, _embedded(model, tokens, t, t + 1), t, cache)[:, -1]
