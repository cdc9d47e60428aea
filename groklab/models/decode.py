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
from groklab.models.hooks import watched
from groklab.models.transformer import HookedTransformer


def supported(model) -> bool:
    return (isinstance(model, HookedTransformer) and not model.training
            and not any(watched(hp) for hp in model.hook_dict.values()))


def _embedded(model: HookedTransformer, tokens: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Token + positional embedding of columns lo..hi-1 (eval mode: no dropout, no offset)."""
    e = F.embedding(tokens[:, lo:hi], model.W_E)
    if model.cfg.positional == "learned":
        e = e + model.W_pos[lo:hi]
    elif model.cfg.positional == "abacus":
        idx = positions.abacus_positions(tokens[:, :hi], model.is_digit)[:, lo:hi]
        e = e + F.embedding(idx, model.W_abacus)
    return e


def _columns(model: HookedTransformer, e: torch.Tensor, lo: int, cache: list,
             last: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [n, m, vocab] of columns lo..lo+m-1 whose embeddings are ``e``; their keys and
    values join ``cache`` (one (K, V) pair [n, n_heads, n_ctx, d_head] per effective layer).
    With ``last`` [n] (a column offset per row) only that column's logits, [n, 1, vocab]: the
    final layer then attends from and runs its MLP on that one column (a prompt's other
    columns need nothing of it but keys and values)."""
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
        if last is not None and layer == len(blocks) - 1:
            rows = torch.arange(len(last), device=last.device)
            q, resid = q[rows, last][:, None], resid[rows, last][:, None]
            upto = torch.arange(lo + m, device=last.device) <= (lo + last)[:, None]
            z = _attend(q.transpose(1, 2), keys, values, False, upto[:, None, None])
        else:  # the prefill (from column 0) is causal; one new column sees every cached one
            z = _attend(q.transpose(1, 2), keys, values, m > 1)
        resid = resid + kernels.out_proj(attn, z.transpose(1, 2)).view_as(resid)
        resid = resid + kernels.mlp(block.mlp, kernels.layer_norm(block.ln2, resid))
    return model.unembed(kernels.layer_norm(model.ln_final, resid))


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, causal: bool,
            mask: torch.Tensor | None = None):
    if causal:
        return F.scaled_dot_product_attention(q, keys, values, is_causal=True)
    # One query per row: two batched matmuls. The CPU's fused attention kernel is tuned for
    # many queries and costs several times more here (bench/decode_batched.py).
    scores = (q @ keys.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ values


@torch.no_grad()
def cached_greedy(model: HookedTransformer, inputs: torch.Tensor, start: torch.Tensor,
                  length: torch.Tensor, stop: int | None = None) -> torch.Tensor:
    n = len(inputs)
    if not n or int(length.max()) <= 0:
        return inputs.clone()
    # Rows sorted by where their answers start: the rows writing at column t are then one
    # contiguous slice of the batch (those that have started, less a prefix that has finished),
    # so each step runs only them, on views of the cache.
    order = torch.argsort(start, stable=True)
    tokens, start, length = inputs[order], start[order], length[order]
    end = start + length  # a row writes columns start .. end - 1
    cfg = model.cfg
    shape = (n, cfg.n_heads, tokens.shape[1], cfg.d_head)
    dtype = model.W_E.dtype
    cache = [(torch.empty(shape, dtype=dtype, device=tokens.device),
              torch.empty(shape, dtype=dtype, device=tokens.device))
             for _ in range(cfg.depth(False))]
    # The prefill runs every prompt whole, as causal forwards over a few slices of rows, each
    # to its longest prompt; the columns filled past a row's prompt (from the input's own
    # answer tokens) are overwritten by that row's steps before anything reads them.
    rows = torch.arange(n, device=tokens.device)
    done = length <= 0
    for a, b in _slices(start, PREFILL_SLICES):
        part = [(K[a:b], V[a:b]) for K, V in cache]
        width = int(start[b - 1])
        logits = _columns(model, _embedded(model, tokens[a:b], 0, width), 0, part,
                          last=start[a:b] - 1)[:, 0]
        _write(tokens, rows[a:b], start[a:b] - 1, logits.argmax(-1), end, done, stop)
    for t in range(int(start.min()), int(end.max()) - 1):
        hi = int(torch.searchsorted(start, t, right=True))  # rows whose answers have begun
        todo = (~done[:hi]).nonzero()
        if not len(todo):
            if hi == n:
                break
            continue
        lo = int(todo[0])
        part = [(K[lo:hi], V[lo:hi]) for K, V in cache]
        logits = _columns(model, _embedded(model, tokens[lo:hi], t, t + 1), t, part)[:, -1]
        _write(tokens, rows[lo:hi], t, logits.argmax(-1), end, done, stop)
    out = torch.empty_like(tokens)
    out[order] = tokens
    return out


PREFILL_SLICES = 8  # fewer wasted prompt columns against more, smaller forwards


def _slices(start: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """Up to k (a, b) row ranges of sorted ``start``, cut where the prompt length changes."""
    n = len(start)
    cuts = sorted({0, n} | {int(torch.searchsorted(start, start[n * i // k])) for i in range(1, k)})
    return list(zip(cuts[:-1], cuts[1:]))


def _write(tokens, rows, t, nxt, end, done, stop) -> None:
    """Rows ``rows`` predicted ``nxt`` at column(s) ``t``: write it at t + 1 where that lies in
    the row's answer and the row has not stopped; mark rows done."""
    t = torch.as_tensor(t, device=tokens.device).expand_as(rows)
    write = (t + 1 < end[rows]) & ~done[rows]
    tokens[rows[write], t[write] + 1] = nxt[write]
    if stop is not None:
        done[rows] |= write & (nxt == stop)
    done[rows] |= t + 2 >= end[rows]
