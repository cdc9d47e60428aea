"""sigma-GPT (Pannatier et al. 2024, arXiv 2404.09562): ``architecture: sigma_gpt``.

A causal GPT-2-style transformer over the tokens of a row taken in an order ``sigma`` (a
permutation of the positions 0..L-1). Step t reads token ``x[sigma(t)]`` and predicts
``x[sigma(t+1)]``; it is told both positions by the double positional encoding of the
reference implementation (idiap/sigma-gpt, text/sigmagpt.py): one learned table ``W_pos`` of
width d_model / 2, looked up at the token's own position and at the position to predict next,
the two halves concatenated and added to the token embedding::

    resid_0[t] = W_E[x[sigma(t)]] + concat(W_pos[sigma(t)], W_pos[sigma(t+1)])

The last step's next position is L (the table has n_ctx + 1 rows), so in the identity order the
model is a plain GPT whose position embedding is ``concat(W_pos[t], W_pos[t + 1])``
(tests/test_sigma_gpt.py checks that equality).

The logits come back in the row's own coordinates, as every sequence objective reads them:
``logits[:, j - 1]`` is the prediction of token j, whichever step made it. The one position no
step predicts (``sigma(0)``: the first token read) gets zero logits at ``sigma(0) - 1``, and a
prediction of token 0 has no slot; the orders of :mod:`groklab.tasks.any_order` start with a
prompt token, which is never scored.
Hooks are those of the transformer (transformer.py), indexed by *step* in the order, not by
position in the row; ``hook_pos_embed`` holds the concatenated double encoding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groklab.models.config import ModelConfig
from groklab.models.hooks import HookPoint
from groklab.models.mlp import _SmallModel
from groklab.models.transformer import HookedTransformer, add_stack


class SigmaGPT(_SmallModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_vocab > 0 and cfg.n_ctx > 0, "resolve the config first: cfg.resolved(...)"
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx + 1, cfg.d_model // 2))
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        add_stack(self, cfg)
        HookedTransformer.init_weights(self)  # GPT-2's (or Nanda's), by name and shape
        self.setup()

    W_U = HookedTransformer.W_U
    unembed = HookedTransformer.unembed

    def forward(self, tokens: torch.Tensor, answer_pos: torch.Tensor | None = None,
                order: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, pos, d_vocab_out] (or at ``answer_pos``) of the row read in
        ``order`` [batch, pos] (a permutation of 0..pos-1 per row; None: left to right)."""
        B, L = tokens.shape
        sigma = torch.arange(L, device=tokens.device).expand(B, L) if order is None else order
        nxt = torch.cat([sigma[:, 1:], sigma.new_full((B, 1), L)], 1)
        x = tokens if order is None else tokens.gather(1, sigma)
        embed = self.hook_embed(F.embedding(x, self.W_E))
        # F.embedding, not indexing: its backward adds repeated rows in a fixed order on a CPU
        pos = torch.cat([F.embedding(sigma, self.W_pos), F.embedding(nxt, self.W_pos)], -1)
        resid = self.embed_drop(embed + self.hook_pos_embed(pos))
        for block in self.blocks:
            resid = block(resid)
        logits = self.unembed(self.ln_final(resid))
        if order is not None:  # step t predicted token nxt[t] (0..L); slot j - 1 is token j's
            full = logits.new_zeros(B, L + 1, logits.shape[-1])
            logits = full.scatter(1, nxt[..., None].expand_as(logits), logits)[:, 1:]
        if answer_pos is not None:
            logits = logits[torch.arange(B, device=logits.device), answer_pos]
        return logits
