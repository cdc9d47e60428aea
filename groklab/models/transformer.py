"""A GPT-2-style decoder whose hook points carry the TransformerLens names and shapes.

Components mirror TransformerLens (``embed``, ``pos_embed``, ``blocks[l].{ln1, attn, ln2, mlp}``,
``ln_final``, ``unembed``) so the hook names fall out of the module tree:

    hook_embed, hook_pos_embed                          [batch, pos, d_model]
    blocks.{l}.hook_resid_pre / _mid / _post            [batch, pos, d_model]
    blocks.{l}.ln1.hook_scale / ln2 / ln_final          [batch, pos, 1]
    blocks.{l}.ln1.hook_normalized                      [batch, pos, d_model]  (before w, b)
    blocks.{l}.attn.hook_q / _k / _v / _z               [batch, pos, n_heads, d_head]
    blocks.{l}.attn.hook_attn_scores / hook_pattern     [batch, n_heads, query_pos, key_pos]
    blocks.{l}.hook_attn_out / hook_mlp_out             [batch, pos, d_model]
    blocks.{l}.mlp.hook_pre / hook_post                 [batch, pos, d_mlp]

Cross-layer parameter sharing (``n_loops`` > 1) builds ``n_layers * n_loops`` blocks whose
parameters are the same tensors as those of the first ``n_layers``: every effective layer keeps
its own hook points, so analyses see 8 layers for a 4-block stack looped twice. Positions are
added once before the first pass and ``ln_final`` is applied once after the last, as in the
reference implementation (tasks.md, trap 7).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groklab.models.config import ModelConfig
from groklab.models.hooks import HookedRootModule, HookPoint


class LayerNorm(nn.Module):
    def __init__(self, cfg: ModelConfig, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.enabled = cfg.normalization_type == "LN"
        if self.enabled:
            self.w = nn.Parameter(torch.ones(cfg.d_model))
            self.b = nn.Parameter(torch.zeros(cfg.d_model))
            self.hook_scale = HookPoint()  # [batch, pos, 1]
            self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not (self.hook_scale._forward_hooks or self.hook_normalized._forward_hooks):
            # The fused kernel computes the same (x - mean) / sqrt(var + eps) * w + b.
            return F.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.empty(h, d, dh))
        self.W_K = nn.Parameter(torch.empty(h, d, dh))
        self.W_V = nn.Parameter(torch.empty(h, d, dh))
        self.W_O = nn.Parameter(torch.empty(h, dh, d))
        self.b_Q = nn.Parameter(torch.zeros(h, dh))
        self.b_K = nn.Parameter(torch.zeros(h, dh))
        self.b_V = nn.Parameter(torch.zeros(h, dh))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.hook_q = HookPoint()  # [batch, pos, n_heads, d_head]
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_z = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch, n_heads, query_pos, key_pos]
        self.hook_pattern = HookPoint()
        n_ctx = cfg.n_ctx
        self.register_buffer(
            "mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False
        )

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # One fused [d_model, 3 * n_heads * d_head] matmul instead of three per-head einsums.
        h, d, dh = self.W_Q.shape
        W = torch.cat([self.W_Q, self.W_K, self.W_V]).permute(1, 0, 2).reshape(d, 3 * h * dh)
        b = torch.cat([self.b_Q, self.b_K, self.b_V]).reshape(3 * h * dh)
        qkv = torch.addmm(b, x.reshape(-1, d), W).view(*x.shape[:-1], 3, h, dh)
        q, k, v = qkv.unbind(-3)
        return self.hook_q(q), self.hook_k(k), self.hook_v(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        p_drop = self.cfg.dropout if self.training else 0.0
        watched = self.hook_attn_scores._forward_hooks or self.hook_pattern._forward_hooks
        if watched:
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.cfg.d_head)
            pos = x.shape[-2]
            scores = scores.masked_fill(~self.mask[:pos, :pos], float("-inf"))
            scores = self.hook_attn_scores(scores)
            pattern = self.hook_pattern(scores.softmax(-1))
            pattern = F.dropout(pattern, p_drop, self.training)
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        else:
            # Fused kernel when nobody reads the pattern: same math, fewer launches.
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                dropout_p=p_drop, is_causal=True,
            ).transpose(1, 2)
        z = self.hook_z(z)
        h, dh, d = self.W_O.shape
        out = torch.addmm(self.b_O, z.reshape(-1, h * dh), self.W_O.reshape(h * dh, d))
        return out.view(*z.shape[:-2], d)

    def forward_at(self, x: torch.Tensor, answer_pos: torch.Tensor) -> torch.Tensor:
        """[batch, d_model]: the output at the answer positions only (keys from all before)."""
        q, k, v = self._qkv(x)
        q = q[torch.arange(x.shape[0], device=x.device), answer_pos]  # [batch, n_heads, d_head]
        return self.attend_at(q, k, v, answer_pos)

    def attend_at(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  answer_pos: torch.Tensor) -> torch.Tensor:
        """Attention output [batch, d_model] of answer queries q [batch, n_heads, d_head] over
        keys and values [batch, pos, n_heads, d_head], causal up to ``answer_pos``.

        Broadcast products rather than einsum: with a handful of keys, einsum's batched matmul
        of [n_heads, d_head] x [d_head, pos] per example is several times slower on a CPU."""
        scores = (q[:, None] * k).sum(-1) / math.sqrt(self.cfg.d_head)  # [batch, pos, n_heads]
        keys = torch.arange(k.shape[1], device=k.device)
        scores = scores.masked_fill((keys[None, :] > answer_pos[:, None])[..., None],
                                    float("-inf"))
        pattern = F.dropout(scores.softmax(1), self.cfg.dropout if self.training else 0.0,
                            self.training)
        z = (pattern[..., None] * v).sum(1)  # [batch, n_heads, d_head]
        h, dh, d = self.W_O.shape
        return torch.addmm(self.b_O, z.reshape(-1, h * dh), self.W_O.reshape(h * dh, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()
        self.act_fn = cfg.act_fn

    def act(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_fn == "relu":
            return F.relu(x)
        return F.gelu(x, approximate="tanh" if self.act_fn == "gelu_new" else "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        pre = self.hook_pre(torch.addmm(self.b_in, x.reshape(-1, d), self.W_in).view(
            *x.shape[:-1], -1))
        post = self.hook_post(self.act(pre))
        return torch.addmm(self.b_out, post.reshape(-1, post.shape[-1]), self.W_out).view_as(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = LayerNorm(cfg)
        self.attn = Attention(cfg)
        self.ln2 = LayerNorm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid)))
        resid = self.hook_resid_mid(resid + self.drop(attn_out))
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid + self.drop(mlp_out))

    def forward_at(self, resid: torch.Tensor, answer_pos: torch.Tensor) -> torch.Tensor:
        """[batch, d_model]: resid_post at the answer positions only, with no hooks called."""
        attn_out = self.attn.forward_at(self.ln1(resid), answer_pos)
        resid = resid[torch.arange(resid.shape[0], device=resid.device), answer_pos]
        resid = resid + self.drop(attn_out)
        return resid + self.drop(self.mlp(self.ln2(resid)))

    def forward_at_tokens(self, W_E: torch.Tensor, W_pos: torch.Tensor, tokens: torch.Tensor,
                          answer_pos: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_at` for a first block fed straight from the embeddings, without
        dropout: its input depends only on (token, position), so LayerNorm and the q/k/v
        projections run once per vocabulary entry and position ([d_vocab * pos] rows) and are
        gathered per example, instead of once per example and position. The same math; for
        the one-layer modular model (114 tokens, full batch of 3,830) it removes most of the
        step's matmul work."""
        V, d = W_E.shape
        B, P = tokens.shape
        table = (W_E[:, None, :] + W_pos[None, :P, :]).reshape(V * P, d)
        q, k, v = self.attn._qkv(self.ln1(table))  # [V * P, n_heads, d_head] each
        flat = tokens * P + torch.arange(P, device=tokens.device)  # row of (token, pos)
        at = flat[torch.arange(B, device=tokens.device), answer_pos]
        attn_out = self.attn.attend_at(_rows(q, at), _rows(k, flat), _rows(v, flat), answer_pos)
        resid = _rows(table, at) + self.drop(attn_out)
        return resid + self.drop(self.mlp(self.ln2(resid)))


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` through index_select: its backward (index_add) is ~9x faster on a CPU than
    indexing's (index_put with accumulation)."""
    return t.index_select(0, idx.reshape(-1)).view(*idx.shape, *t.shape[1:])


def _share_parameters(dst: nn.Module, src: nn.Module) -> None:
    """Make every parameter of ``dst`` the very tensor of the same name in ``src``."""
    for (_, d_mod), (_, s_mod) in zip(dst.named_modules(), src.named_modules()):
        for pname in list(d_mod._parameters):
            d_mod._parameters[pname] = s_mod._parameters[pname]


class HookedTransformer(HookedRootModule):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_vocab > 0 and cfg.n_ctx > 0, "resolve the config first: cfg.resolved(...)"
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.hook_pos_embed = HookPoint()
        self.embed_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_effective_layers))
        for i in range(cfg.n_layers, cfg.n_effective_layers):
            _share_parameters(self.blocks[i], self.blocks[i % cfg.n_layers])
        self.ln_final = LayerNorm(cfg)
        if not cfg.tie_word_embeddings:
            self.W_U_param = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
            self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))
        self.init_weights()
        self.setup()

    @property
    def W_U(self) -> torch.Tensor:
        """[d_model, d_vocab_out]; the transposed embedding when tied (GPT-2: no bias)."""
        return self.W_E.T if self.cfg.tie_word_embeddings else self.W_U_param

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.W_U
        return logits if self.cfg.tie_word_embeddings else logits + self.b_U

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg = self.cfg
        if cfg.init_mode == "nanda":
            # Nanda et al.: every matrix N(0, 1/d_model), the unembedding N(0, 1/d_vocab).
            for p in self.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 1.0 / math.sqrt(cfg.d_model))
            if not cfg.tie_word_embeddings:
                self.W_U_param.normal_(0.0, 1.0 / math.sqrt(cfg.d_vocab))
        else:
            # GPT-2: N(0, 0.02); output projections scaled by 1/sqrt(2 * depth).
            std = cfg.initializer_range
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    scale = 1.0
                    if name.endswith(("W_O", "W_out")):
                        scale = 1.0 / math.sqrt(2 * cfg.n_effective_layers)
                    p.normal_(0.0, std * scale)
        if cfg.init_scale != 1.0:
            for p in self.parameters():
                p.mul_(cfg.init_scale)

    def residual_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        embed = self.hook_embed(self.W_E[tokens])
        pos = self.hook_pos_embed(self.W_pos[: tokens.shape[-1]].expand_as(embed))
        return self.embed_drop(embed + pos)

    def forward(
        self,
        tokens: torch.Tensor,
        answer_pos: torch.Tensor | None = None,
        *,
        start_at_layer: int = 0,
        stop_at_layer: int | None = None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [batch, pos, d_vocab_out], or [batch, d_vocab_out] at ``answer_pos``.

        Passing ``answer_pos`` unembeds only the answer positions, which is all the loss needs.
        ``stop_at_layer`` (exclusive) returns the residual stream entering that layer;
        ``start_at_layer`` with ``residual`` resumes from it (``tokens`` then only give shapes).
        """
        blocks = list(self.blocks[start_at_layer:stop_at_layer])
        # Only the answer positions reach the loss, so the last block's query, attention output
        # and MLP are needed there alone (about 1.7x faster for the one-layer modular model).
        # Taken only when no hook watches the last block or ln_final, whose shapes it changes.
        answer_only = (answer_pos is not None and stop_at_layer is None and bool(blocks)
                       and not self._watched(blocks[-1], self.ln_final))
        if (answer_only and len(blocks) == 1 and residual is None and start_at_layer == 0
                and tokens.shape[0] > self.cfg.d_vocab
                and not (self.training and self.cfg.dropout > 0)
                and not self._watched(self.hook_embed, self.hook_pos_embed)):
            out = blocks[0].forward_at_tokens(self.W_E, self.W_pos, tokens, answer_pos)
            return self.unembed(self.ln_final(out))
        if residual is None:
            resid = self.residual_from_tokens(tokens)
        else:
            resid = residual
        for block in blocks[:-1] if answer_only else blocks:
            resid = block(resid)
        if stop_at_layer is not None:
            return resid
        if answer_only:
            return self.unembed(self.ln_final(blocks[-1].forward_at(resid, answer_pos)))
        resid = self.ln_final(resid)
        if answer_pos is not None:
            resid = resid[torch.arange(resid.shape[0], device=resid.device), answer_pos]
        return self.unembed(resid)

    @staticmethod
    def _watched(*modules: nn.Module) -> bool:
        return any(isinstance(m, HookPoint) and m._forward_hooks
                   for mod in modules for m in mod.modules())

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Weight decay on weight matrices and embeddings (dim >= 2), not on biases or LN."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def unique_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters by first name only: shared (looped) weights are stored once."""
        return {name: p.detach() for name, p in self.named_parameters()}

    def load_unique_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        missing = set(params) - set(sd)
        unexpected = set(sd) - set(params)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint does not match the model: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(sd[name])
