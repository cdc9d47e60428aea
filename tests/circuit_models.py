"""A two-layer transformer with hand-set weights whose circuit is known exactly.

Input [x, f, f'] with x in 0..7 and fillers f, f' in 8..10; the answer at position 2 is x.
The only path from x to the answer:

    layer 0, head 0: position 1 attends to position 0, copies x's one-hot (content dims 0-7)
                     into "slot A" (dims 8-15) of position 1;
    layer 1, head 0: position 2 attends to position 1, copies slot A into "slot B" (dims 16-23);
    unembedding:     reads slot B.

Every other head, every MLP and every other attention edge is zero (or masked off by scores
100 below), and there is no LayerNorm, so with x replaced the hidden states that carry x are
exactly S[0, 0] (its embedding) and S[1, 1] (the copy), and the heads that matter are (0, 0)
and (1, 0).
"""

from __future__ import annotations

import torch

from groklab.models import HookedTransformer, ModelConfig

N_VALUES, D_VOCAB, BIG = 8, 11, 400.0
CONTENT, SLOT_A, SLOT_B, POS = 0, 8, 16, 24


def hand_built_model() -> HookedTransformer:
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=8, act_fn="relu",
                      normalization_type=None, tie_word_embeddings=False)
    model = HookedTransformer(cfg.resolved(d_vocab=D_VOCAB, n_ctx=3))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for x in range(N_VALUES):
            model.W_E[x, CONTENT + x] = 1.0
        for p in range(3):
            model.W_pos[p, POS + p] = 1.0
        # allowed[layer] = (query, key) edges of head 0
        allowed = {0: [(0, 0), (1, 0), (2, 2)], 1: [(0, 0), (1, 1), (2, 1)]}
        src = {0: CONTENT, 1: SLOT_A}
        dst = {0: SLOT_A, 1: SLOT_B}
        for layer, edges in allowed.items():
            attn = model.blocks[layer].attn
            for q in range(3):
                attn.W_Q[0, POS + q, 8 + q] = 1.0
            for q, k in edges:
                attn.W_K[0, POS + k, 8 + q] = BIG
            for i in range(N_VALUES):
                attn.W_V[0, src[layer] + i, i] = 1.0
                attn.W_O[0, i, dst[layer] + i] = 1.0
        for i in range(N_VALUES):
            model.W_U_param[SLOT_B + i, i] = 10.0
    return model.eval()


def inputs(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean rows [x, f, f'] and the same rows with x replaced by another value."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, N_VALUES, (n,), generator=g)
    fill = torch.randint(N_VALUES, D_VOCAB, (n, 2), generator=g)
    clean = torch.cat([x[:, None], fill], 1)
    corrupt = clean.clone()
    corrupt[:, 0] = (x + 1 + torch.randint(0, N_VALUES - 1, (n,), generator=g)) % N_VALUES
    return clean, corrupt
