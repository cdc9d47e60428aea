"""Aaren (Feng et al. 2024, "Attention as an RNN", arXiv 2405.13956): ``architecture: aaren``.

An Aaren layer is attention whose query is a learned vector per head (it does not depend on the
input), so the output after token k is a function of the prefix alone::

    s_i = q . k_i / sqrt(d_head)        o_k = sum_{i<=k} exp(s_i) v_i / sum_{i<=k} exp(s_i)

Every prefix's output is a fold of the triples (m, u, w) = (running max of s, sum of
exp(s_i - m), sum of exp(s_i - m) v_i) under the associative, numerically stable combine

    m = max(m_a, m_b)   u = u_a e^(m_a - m) + u_b e^(m_b - m)   w = w_a e^(m_a - m) + w_b e^(m_b - m)

with o_k = w_k / u_k. Training computes all prefixes at once with a log-depth (Hillis-Steele)
scan of that combine; inference (:meth:`AarenLM.step`) folds one token at a time into a state of
``n_layers`` triples whose size does not grow with the sequence (bench/aaren_memory.py). Both
give the same logits (tests/test_aaren.py).

Blocks are pre-LN like the transformer's (LayerNorm, Aaren, LayerNorm, MLP, learned absolute
positions, tied unembedding by default), with TransformerLens-style hook names::

    hook_embed, hook_pos_embed                          [batch, pos, d_model]
    blocks.{l}.hook_resid_pre / _mid / _post            [batch, pos, d_model]
    blocks.{l}.hook_attn_out / hook_mlp_out             [batch, pos, d_model]
    blocks.{l}.attn.hook_k / hook_v / hook_z            [batch, pos, n_heads, d_head]
    blocks.{l}.attn.hook_scores                         [batch, pos, n_heads]   s_i
    blocks.{l}.attn.hook_m / hook_u                     [batch, pos, n_heads]   scan state
    blocks.{l}.attn.hook_w                              [batch, pos, n_heads, d_head]
    blocks.{l}.ln1 / ln2 / mlp hooks, ln_final          as in transformer.py

(hook_z = w / u is what the output projection reads.) The recurrent path runs no hooks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groklab.models.config import ModelConfig
from groklab.models.hooks import HookPoint
from groklab.models.mlp import _SmallModel
from groklab.models.transformer import MLP, HookedTransformer, LayerNorm

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # m, u [..., h]; w [..., h, d_head]


def leaf(s: torch.Tensor, v: torch.Tensor) -> State:
    """The triple of one token. The max is detached: o = w / u does not depend on it, and a
    detached shift keeps every exp(s - m) differentiable in s."""
    m = s.detach()
    u = torch.exp(s - m)
    return m, u, v * u[..., None]


def combine(a: State, b: State) -> State:
    """``a`` folded with the later ``b`` (associative; exact for any scores, no overflow)."""
    m = torch.maximum(a[0], b[0])
    ea, eb = torch.exp(a[0] - m), torch.exp(b[0] - m)
    return m, a[1] * ea + b[1] * eb, a[2] * ea[..., None] + b[2] * eb[..., None]


def prefix_scan(s: torch.Tensor, v: torch.Tensor) -> State:
    """Inclusive scan over dim 1 of s [batch, pos, h] and v [batch, pos, h, d_head]: the state
    of every prefix, in ceil(log2(pos)) combine steps (Hillis-Steele)."""
    m, u, w = leaf(s, v)
    n, d = s.shape[1], 1
    while d < n:
        m2, u2, w2 = combine((m[:, :-d], u[:, :-d], w[:, :-d]), (m[:, d:], u[:, d:], w[:, d:]))
        m = torch.cat([m[:, :d], m2], 1)
        u = torch.cat([u[:, :d], u2], 1)
        w = torch.cat([w[:, :d], w2], 1)
        d *= 2
    return m, u, w


class AarenAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.empty(h, dh))  # the learned query of each head
        self.W_K = nn.Parameter(torch.empty(h, d, dh))
        self.W_V = nn.Parameter(torch.empty(h, d, dh))
        self.W_O = nn.Parameter(torch.empty(h, dh, d))
        self.b_K = nn.Parameter(torch.zeros(h, dh))
        self.b_V = nn.Parameter(torch.zeros(h, dh))
        self.b_O = nn.Parameter(torch.zeros(d))
        for name in ("hook_k", "hook_v", "hook_scores", "hook_m", "hook_u", "hook_w", "hook_z"):
            setattr(self, name, HookPoint())

    def scores_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s [..., h] and v [..., h, d_head] of x [..., d_model]."""
        h, dh = self.W_Q.shape
        W = torch.cat([self.W_K, self.W_V], 2).transpose(0, 1).reshape(x.shape[-1], h * 2 * dh)
        kv = (x @ W + torch.cat([self.b_K, self.b_V], 1).reshape(-1)).view(*x.shape[:-1], h, 2 * dh)
        k, v = kv.split(dh, -1)
        k, v = self.hook_k(k), self.hook_v(v)
        return self.hook_scores((k * self.W_Q).sum(-1) / math.sqrt(dh)), v

    def out(self, z: torch.Tensor) -> torch.Tensor:
        h, dh, d = self.W_O.shape
        return z.reshape(*z.shape[:-2], h * dh) @ self.W_O.reshape(h * dh, d) + self.b_O

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, v = self.scores_values(x)
        m, u, w = prefix_scan(s, v)
        m, u, w = self.hook_m(m), self.hook_u(u), self.hook_w(w)
        return self.out(self.hook_z(w / u[..., None]))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token x [batch, d_model] folded into the layer's state."""
        state = combine(state, leaf(*self.scores_values(x)))
        return self.out(state[2] / state[1][..., None]), state


class AarenBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.attn = LayerNorm(cfg), AarenAttention(cfg)
        self.ln2, self.mlp = LayerNorm(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        for name in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out",
                     "hook_resid_post"):
            setattr(self, name, HookPoint())

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.drop(self.hook_attn_out(self.attn(self.ln1(resid)))))
        return self.hook_resid_post(resid + self.drop(self.hook_mlp_out(self.mlp(self.ln2(resid)))))

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        a, state = self.attn.step(self.ln1(x), state)
        x = x + a
        return x + self.mlp(self.ln2(x)), state


class AarenLM(_SmallModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_vocab > 0 and cfg.n_ctx > 0, "resolve the config first: cfg.resolved(...)"
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.embed_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(AarenBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg)
        if not cfg.tie_word_embeddings:
            self.W_U_param = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
            self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))
        # the transformer's initialisation (GPT-2 or Nanda's), by parameter name and shape
        HookedTransformer.init_weights(self)
        self.setup()

    W_U = HookedTransformer.W_U
    unembed = HookedTransformer.unembed

    def forward(self, tokens: torch.Tensor, answer_pos: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits [batch, pos, d_vocab_out] through the parallel scan, or [batch, d_vocab_out]
        at ``answer_pos``."""
        embed = self.hook_embed(F.embedding(tokens, self.W_E))
        pos = self.hook_pos_embed(self.W_pos[: tokens.shape[1]].expand_as(embed))
        resid = self.embed_drop(embed + pos)
        for block in self.blocks:
            resid = block(resid)
        resid = self.ln_final(resid)
        if answer_pos is not None:
            resid = resid[torch.arange(len(resid), device=resid.device), answer_pos]
        return self.unembed(resid)

    # ------------------------------------------------------------------ recurrent inference

    def init_state(self, batch: int) -> list[State]:
        """The empty prefix of every layer: m = -inf, u = 0, w = 0 (combine's identity)."""
        h, dh = self.cfg.n_heads, self.cfg.d_head
        like = self.W_E
        return [(like.new_full((batch, h), float("-inf")), like.new_zeros(batch, h),
                 like.new_zeros(batch, h, dh)) for _ in self.blocks]

    @torch.no_grad()
    def step(self, token: torch.Tensor, pos: int, state: list[State]
             ) -> tuple[torch.Tensor, list[State]]:
        """Logits [batch, d_vocab_out] after ``token`` [batch] at position ``pos``, and the new
        state: constant memory in the sequence length."""
        x = F.embedding(token, self.W_E) + self.W_pos[pos]
        new = []
        for block, st in zip(self.blocks, state):
            x, st = block.step(x, st)
            new.append(st)
        return self.unembed(self.ln_final(x)), new

    @torch.no_grad()
    def recurrent_forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """The logits of :meth:`forward`, one token at a time through :meth:`step`."""
        state = self.init_state(tokens.shape[0])
        out = []
        for t in range(tokens.shape[1]):
            logits, state = self.step(tokens[:, t], t, state)
            out.append(logits)
        return torch.stack(out, 1)

    @staticmethod
    def state_bytes(state: list[State]) -> int:
        return sum(t.numel() * t.element_size() for st in state for t in st)
