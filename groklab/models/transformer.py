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
reference implementation (docs/tasks.md, trap 7).
With ``loop_injection: add`` the embedded input (tokens + positions) is re-added before every
later pass (McLeish et al.'s input injection); ``eval_loops`` passes run in eval mode. The
positional scheme (``positional``: learned, none, rotary, abacus) is models/positions.py's;
rotary adds ``attn.hook_rot_q`` / ``hook_rot_k`` after ``hook_q`` / ``hook_k``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groklab.models import kernels, positions
from groklab.models.config import ModelConfig
from groklab.models.hooks import HookedRootModule, HookPoint, watched
from groklab.models.lens import StackedWeights, finish


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
        if not self.hook_scale._copy:
            # Nothing may change the scale or take its gradient (no hook there, or hooks that
            # only read it): one fused kernel gives the normalized state and 1 / scale.
            normalized, _, rstd = torch.native_layer_norm(x, x.shape[-1:], None, None, self.eps)
            self.hook_scale(rstd.reciprocal())
            return torch.addcmul(self.b, self.hook_normalized(normalized), self.w)
        x = x - x.mean(-1, keepdim=True)
        # sqrt(mean(x^2) + eps) through vector_norm and "* w + b" through addcmul: no full-size
        # temporaries (about 2x faster on a CPU); TransformerLens's numbers to float rounding
        ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() / x.shape[-1]
        scale = self.hook_scale((ms + self.eps).sqrt())
        return torch.addcmul(self.b, self.hook_normalized(x / scale), self.w)


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
        self.rotary = cfg.positional == "rotary"
        if self.rotary:  # q and k rotated after hook_q / hook_k, as TransformerLens does
            cos, sin = positions.rotary_tables(n_ctx, dh, cfg.rotary_base)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
            self.hook_rot_q = HookPoint()  # [batch, pos, n_heads, d_head]
            self.hook_rot_k = HookPoint()

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.rotary:
            return q, k
        return (positions.rotate(q, self.rotary_cos, self.rotary_sin),
                positions.rotate(k, self.rotary_cos, self.rotary_sin))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, p, d = x.shape
        h, dh = self.cfg.n_heads, self.cfg.d_head
        # Heads are computed head-major, [h, b, p, dh]: the layout the attention's batched
        # matmuls read without a copy. Hooks see TransformerLens's [b, p, h, dh] (and
        # [b, h, q, k]) as views of it, so an in-place edit reaches the computation.
        x3 = x.reshape(1, b * p, d).expand(h, b * p, d)

        def project(W: torch.Tensor, bias: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            return hook(torch.baddbmm(bias[:, None], x3, W).view(h, b, p, dh).permute(1, 2, 0, 3))

        def heads(t: torch.Tensor) -> torch.Tensor:  # [b, p, h, dh] -> [h b, p, dh]
            return t.permute(2, 0, 1, 3).reshape(h * b, p, dh)

        q = project(self.W_Q, self.b_Q, self.hook_q)
        k = project(self.W_K, self.b_K, self.hook_k)
        v = project(self.W_V, self.b_V, self.hook_v)
        if self.rotary:
            q, k = self.rotate(q, k)
            q, k = self.hook_rot_q(q), self.hook_rot_k(k)
        scores = torch.bmm(heads(q), heads(k).transpose(1, 2)).view(h, b, p, p)
        scores = scores.permute(1, 0, 2, 3) / math.sqrt(dh)  # [b, h, q, k]
        scores = self.hook_attn_scores(scores.masked_fill(~self.mask[:p, :p], float("-inf")))
        pattern = self.hook_pattern(scores.softmax(-1))
        pattern = F.dropout(pattern, self.cfg.dropout if self.training else 0.0, self.training)
        z = kernels.mix_values(pattern.permute(1, 0, 2, 3).reshape(h * b, p, p), heads(v))
        z = self.hook_z(z.view(h, b, p, dh).permute(1, 2, 0, 3))  # [b, q, h, dh]
        out = torch.addmm(self.b_O, z.reshape(b * p, h * dh), self.W_O.reshape(h * dh, d))
        return out.view(b, p, d)


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
        x2 = x.reshape(-1, x.shape[-1])
        pre = self.hook_pre(torch.addmm(self.b_in, x2, self.W_in).view(*x.shape[:-1], -1))
        post = self.hook_post(self.act(pre))
        out = torch.addmm(self.b_out, post.reshape(x2.shape[0], -1), self.W_out)
        return out.view_as(x)


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
        self._hook_points = [m for m in self.modules() if isinstance(m, HookPoint)]

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        if not any(watched(hp) for hp in self._hook_points):
            # Nothing to call: the same block through fused kernels. A patched layer's
            # successors, or every block of a model hooked elsewhere, run at full speed.
            return kernels.block(self, resid)
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid)))
        resid = self.hook_resid_mid(resid + self.drop(attn_out))
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid + self.drop(mlp_out))


def _share_parameters(dst: nn.Module, src: nn.Module) -> None:
    """Make every parameter of ``dst`` the very tensor of the same name in ``src``."""
    for (_, d_mod), (_, s_mod) in zip(dst.named_modules(), src.named_modules()):
        for pname in list(d_mod._parameters):
            d_mod._parameters[pname] = s_mod._parameters[pname]


def add_stack(model: nn.Module, cfg: ModelConfig) -> None:
    """Everything after the embeddings, in this registration order (the initialisation draws
    parameters in it): embedding dropout, the blocks (looped layers share the first n_layers'
    tensors), the final LayerNorm and, untied, the unembedding."""
    model.embed_drop = nn.Dropout(cfg.dropout)
    model.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_effective_layers))
    for i in range(cfg.n_layers, cfg.n_effective_layers):
        _share_parameters(model.blocks[i], model.blocks[i % cfg.n_layers])
    model.ln_final = LayerNorm(cfg)
    if not cfg.tie_word_embeddings:
        model.W_U_param = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
        model.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out))


class HookedTransformer(StackedWeights, HookedRootModule):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_vocab > 0 and cfg.n_ctx > 0, "resolve the config first: cfg.resolved(...)"
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        if cfg.positional == "learned":
            self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        elif cfg.positional == "abacus":
            if not cfg.abacus_digits:
                raise ValueError("model.positional=abacus needs the digit token ids "
                                 "(model.abacus_digits; for_task takes the task's numbers)")
            self.W_abacus = nn.Parameter(torch.empty(cfg.abacus_table, cfg.d_model),
                                         requires_grad=cfg.abacus_learned)
            is_digit = torch.zeros(cfg.d_vocab, dtype=torch.bool)
            is_digit[cfg.abacus_digits] = True
            self.register_buffer("is_digit", is_digit, persistent=False)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.hook_pos_embed = HookPoint()
        add_stack(self, cfg)
        self.injects = cfg.loop_injection == "add" and cfg.n_effective_layers > cfg.n_layers
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
                    if name.endswith(("W_O", "W_out")):  # the trained depth, not eval_loops'
                        scale = 1.0 / math.sqrt(2 * cfg.n_layers * cfg.n_loops)
                    p.normal_(0.0, std * scale)
        if cfg.positional == "abacus" and cfg.abacus_init == "sinusoidal":
            if cfg.abacus_learned:
                std = cfg.initializer_range if cfg.init_mode == "gpt2" else cfg.d_model ** -0.5
                span = None
            else:  # rows of norm 1, the size a learned table grows to (~1 from 0.16 at d 64)
                std, span = cfg.d_model ** -0.5, positions.FROZEN_SPAN
            self.W_abacus.copy_(positions.sinusoidal_rows(cfg.abacus_table, cfg.d_model, std,
                                                          span))
            # Non-digits start with no position: a row 0 that looked like index 0 of the sines
            # (or a random one) reads as the neighbour of index 1, and with offsets the first
            # digit sits at index 1 only when k = 0, too rarely to unlearn it (measured: the
            # first two answer digits stayed at chance after 6,000 steps).
            self.W_abacus[0] = 0.0
        if cfg.init_scale != 1.0:
            for p in self.parameters():
                p.mul_(cfg.init_scale)

    def residual_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        # F.embedding, not W_E[tokens]: indexing's backward (index_put with accumulation) adds
        # repeated tokens' gradients in a thread-dependent order on a CPU; embedding's does not.
        embed = self.hook_embed(F.embedding(tokens, self.W_E))
        pos = self.position_embedding(tokens)
        if pos is None:  # none, rotary: nothing is added to the residual stream
            return self.embed_drop(embed)
        pos = pos.expand_as(embed)
        if self.hook_pos_embed.has_hooks():
            pos = pos.contiguous()  # a watched activation never aliases W_pos (nor row 0 row 1)
        return self.embed_drop(embed + self.hook_pos_embed(pos))

    def position_embedding(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """What the positional scheme adds to the embedding ([pos, d_model] or [batch, pos,
        d_model]); None where positions act inside attention or not at all."""
        if self.cfg.positional == "learned":
            return self.W_pos[: tokens.shape[-1]]
        if self.cfg.positional == "abacus":
            idx = positions.abacus_positions(tokens, self.is_digit)
            idx = positions.abacus_offset(idx, self.cfg.abacus_max_offset, self.training,
                                          self.cfg.abacus_offset, self.cfg.abacus_zero_fraction)
            return F.embedding(idx, self.W_abacus)
        return None

    def loop_starts(self, first: int, last: int) -> list[int]:
        """Layers in ``first < l <= last`` before which the embedded input is re-added."""
        if not self.injects:
            return []
        n = self.cfg.n_layers
        return [l for l in range(first + 1, last + 1) if l % n == 0]

    def forward(
        self,
        input: torch.Tensor,
        answer_pos: torch.Tensor | str | None = None,
        *,
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
        tokens: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
    ):
        """Logits [batch, pos, d_vocab_out], or [batch, d_vocab_out] at ``answer_pos``.

        TransformerLens's conventions: ``input`` is tokens [batch, pos], or with
        ``start_at_layer`` the residual stream [batch, pos, d_model] entering that layer
        (``residual=`` says the same by keyword); ``stop_at_layer`` (exclusive) returns the
        residual stream entering that layer. ``return_type``: "logits", "loss" (next-token
        cross-entropy over ``tokens``, or at ``answer_pos`` against ``targets``; per position or
        row with ``loss_per_token``), "both" (``Output(logits, loss)``) or None. A string in
        the second place is taken as ``return_type`` (``model(tokens, "loss")``).

        Every hook that is attached is called; a block none watches runs as fused kernels
        (``kernels.py``, the same numbers). Training and evaluation go through the equal,
        faster ``groklab.models.fast.forward``.
        """
        if isinstance(answer_pos, str):
            return_type, answer_pos = answer_pos, None
        if residual is None and start_at_layer is not None and input.is_floating_point():
            residual = input
        elif tokens is None and not input.is_floating_point():
            tokens = input
        resid = self.residual_from_tokens(input) if residual is None else residual
        first, depth = start_at_layer or 0, self.cfg.depth(self.training)
        layers = range(depth)[first:stop_at_layer]
        last = max(layers.stop, first)
        # a pass starting at ``last`` begins with the injection: part of the state entering it
        inject = self.loop_starts(first, last if stop_at_layer is not None and last < depth
                                  else last - 1)
        if inject:  # the state entering a later pass is the last one's output + the input
            if residual is None and first == 0:
                embedded = resid
            elif tokens is not None:
                embedded = self.residual_from_tokens(tokens)
            else:
                raise ValueError("model.loop_injection=add re-adds the embedded input: pass "
                                 "tokens= with a residual that starts past layer 0")
        for l in layers:
            if l in inject:
                resid = resid + embedded
            resid = self.blocks[l](resid)
        if stop_at_layer is not None:
            return resid + embedded if last in inject else resid
        resid = self.ln_final(resid)
        if answer_pos is not None:
            resid = resid[torch.arange(resid.shape[0], device=resid.device), answer_pos]
        if return_type is None:
            return None
        return finish(self.unembed(resid), return_type, tokens, answer_pos is not None, targets,
                      loss_per_token)

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
