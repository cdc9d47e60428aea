"""Growing a transformer's vocabulary for new tokens (fact injection's new entities).

New rows are appended to the embedding (and, untied, to the unembedding and its bias), drawn
N(0, std of the existing rows). They must train under every adapter: no low-rank update of the
blocks can give a token that has no embedding a meaning. Under an adapter the old rows stay
frozen: :func:`train_new_rows_only` masks their gradient (Adam then leaves them exactly as they
were, as long as the group has no weight decay).
"""

from __future__ import annotations

import torch
from torch import nn


def grow_vocab(model, n_new: int, seed: int = 0) -> int:
    """Append ``n_new`` token rows; returns the first new token id."""
    old = model.W_E.shape[0]
    if n_new <= 0:
        return old
    g = torch.Generator().manual_seed(seed)
    W_E = model.W_E.detach()
    rows = torch.randn(n_new, W_E.shape[1], generator=g).to(W_E) * W_E.std()
    model.W_E = nn.Parameter(torch.cat([W_E, rows]))
    update = {"d_vocab": old + n_new}
    if not model.cfg.tie_word_embeddings:
        W_U = model.W_U_param.detach()
        cols = torch.randn(W_U.shape[0], n_new, generator=g).to(W_U) * W_U.std()
        model.W_U_param = nn.Parameter(torch.cat([W_U, cols], dim=1))
        model.b_U = nn.Parameter(torch.cat([model.b_U.detach(), model.b_U.new_zeros(n_new)]))
        update["d_vocab_out"] = model.cfg.d_vocab_out + n_new
    else:
        update["d_vocab_out"] = old + n_new
    model.cfg = model.cfg.model_copy(update=update)
    return old


def new_token_params(model) -> list[nn.Parameter]:
    out = [model.W_E]
    if not model.cfg.tie_word_embeddings:
        out += [model.W_U_param, model.b_U]
    return out


def train_new_rows_only(model, first_new: int) -> list[nn.Parameter]:
    """Make the token tables trainable with gradients only on tokens >= ``first_new``."""
    params = new_token_params(model)
    for p in params:
        p.requires_grad_(True)
        # token index is dim 0 of W_E and b_U, dim 1 of W_U_param
        dim = 1 if p is getattr(model, "W_U_param", None) else 0
        shape = [1] * p.dim()
        shape[dim] = p.shape[dim]
        mask = (torch.arange(p.shape[dim], device=p.device) >= first_new).to(p.dtype).view(shape)
        p.register_hook(lambda g, m=mask: g * m)
    return params
