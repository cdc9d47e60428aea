"""Two small MLPs with the transformer's interface: ``model(tokens, answer_pos)`` -> answer logits.

Both read the rows a task produces and return logits [batch, d_vocab_out] for the answer, so the
trainer, the run directory and ``load_run`` treat them exactly like :class:`HookedTransformer`.
Unlike the transformer they have a single output, so ``answer_pos`` only says where the answer
is; without it the last position is assumed.

``PairMLP`` (``architecture: pair_mlp``) is the one-layer MLP of the PAIR explorable "Do Machine
Learning Models Memorize or Generalize?" (PAIR-code/ai-explorables
``server-side/grokking/MLP_Modular_Addition.ipynb``): the operands a and b, one-hot, go through a
shared factored embedding W_E [d_vocab, d_embed] and a shared hidden projection W_in
[d_embed, d_mlp]; the two projections are summed, ReLU applied, projected back by W_out
[d_mlp, d_embed] and unembedded by the transposed embedding (W_U = W_E[:d_vocab_out]^T). No
biases. The operands are the first token and the token just before the answer position, which
covers both ``a b =`` and ``a op b =``. The un-factored ReLU(a W + b W) W_out does not generalize
even with weight decay (the explorable), hence the factored embedding. Hooks::

    hook_embed        [batch, 2, d_embed]   embeddings of a and b
    mlp.hook_pre      [batch, d_mlp]        W_E[a] W_in + W_E[b] W_in
    mlp.hook_post     [batch, d_mlp]        ReLU of it (the neurons of a Fourier analysis)
    hook_out          [batch, d_embed]      post W_out, before the unembedding

``MLP`` (``architecture: mlp``) is a plain one-hidden-layer MLP on the concatenation of the
one-hot tokens of every position (sparse parity: n bits and the "=", whose constant one-hot is
the explorable's input column fixed to 1). Concatenated one-hot times a matrix is a sum of
per-position rows, so the first layer is stored as W_pos_in [n_ctx, d_vocab, d_mlp] and applied
by gathering. Hooks::

    hook_embed        [batch, pos, d_mlp]   each position's row of the first layer
    mlp.hook_pre      [batch, d_mlp]        their sum + b_in
    mlp.hook_post     [batch, d_mlp]        ReLU
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groklab.models.config import ModelConfig
from groklab.models.hooks import HookedRootModule, HookPoint


class _Hidden(nn.Module):
    """Holds the hidden layer's hook points so their names read ``mlp.hook_pre/_post``."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_pre = HookPoint()  # [batch, d_mlp]
        self.hook_post = HookPoint()  # [batch, d_mlp]


def _trunc_normal_(p: torch.Tensor, std: float) -> None:
    # haiku's TruncatedNormal(std): N(0, std) cut at 2 std, so its actual std is 0.88 std.
    nn.init.trunc_normal_(p, 0.0, std, -2 * std, 2 * std)


TRUNC_STD = 0.87962566  # std of N(0, 1) truncated to [-2, 2]; VarianceScaling divides by it


class _SmallModel(HookedRootModule):
    """Shared plumbing: checkpoints, weight-decay groups, default answer position."""

    def _answer_pos(self, tokens: torch.Tensor, answer_pos: torch.Tensor | None) -> torch.Tensor:
        if answer_pos is None:
            return torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device)
        return answer_pos

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Weight decay on matrices (dim >= 2), not on biases, as for the transformer."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def unique_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters()}

    def load_unique_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        if set(params) != set(sd):
            raise ValueError(
                f"checkpoint does not match the model: missing {sorted(set(params) - set(sd))[:3]}, "
                f"unexpected {sorted(set(sd) - set(params))[:3]}"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(sd[name])


class PairMLP(_SmallModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_vocab > 0 and cfg.n_ctx > 0, "resolve the config first: cfg.resolved(...)"
        if cfg.d_vocab_out > cfg.d_vocab:
            raise ValueError("pair_mlp unembeds with W_E, so model.d_vocab_out must be <= d_vocab")
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_embed))
        self.W_in = nn.Parameter(torch.empty(cfg.d_embed, cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_embed))
        self.hook_embed = HookPoint()  # [batch, 2, d_embed]
        self.mlp = _Hidden()
        self.hook_out = HookPoint()  # [batch, d_embed]
        self.init_weights()
        self.setup()

    @property
    def W_U(self) -> torch.Tensor:
        """[d_embed, d_vocab_out]: the transposed embedding (the explorable's tied unembedding)."""
        return self.W_E[: self.cfg.d_vocab_out].T

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg = self.cfg
        # The explorable: embedding VarianceScaling(2) over the one-hot fan-in (the operand
        # vocabulary), whose actual std is sqrt(2 / fan_in); hk.Linear's default
        # TruncatedNormal(1 / sqrt(fan_in)) for the two projections. Initial weight norm at the
        # modular-mlp preset: 37.5 (the notebook logs 37.39).
        _trunc_normal_(self.W_E, math.sqrt(2.0 / cfg.d_vocab_out) / TRUNC_STD)
        _trunc_normal_(self.W_in, 1.0 / math.sqrt(cfg.d_embed))
        _trunc_normal_(self.W_out, 1.0 / math.sqrt(cfg.d_mlp))
        if cfg.init_scale != 1.0:
            for p in self.parameters():
                p.mul_(cfg.init_scale)

    def forward(self, tokens: torch.Tensor, answer_pos: torch.Tensor | None = None) -> torch.Tensor:
        pos = self._answer_pos(tokens, answer_pos)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        ab = torch.stack([tokens[:, 0], tokens[rows, pos - 1]], dim=1)
        embed = self.hook_embed(F.embedding(ab, self.W_E))  # [batch, 2, d_embed]; deterministic
        pre = self.mlp.hook_pre((embed @ self.W_in).sum(1))
        post = self.mlp.hook_post(F.relu(pre))
        out = self.hook_out(post @ self.W_out)
        return out @ self.W_U


class MLP(_SmallModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_vocab > 0 and cfg.n_ctx > 0, "resolve the config first: cfg.resolved(...)"
        self.cfg = cfg
        self.W_pos_in = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_vocab, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_vocab_out))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_vocab_out))
        self.hook_embed = HookPoint()  # [batch, pos, d_mlp]
        self.mlp = _Hidden()
        self.init_weights()
        self.setup()

    @property
    def W_U(self) -> torch.Tensor:
        """[d_mlp, d_vocab_out]: the output layer."""
        return self.W_out

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg = self.cfg
        # A one-hot row has n_ctx ones, so fan-in scaling is 1/sqrt(n_ctx) (as a Linear on n_ctx
        # inputs of magnitude 1); the output layer 1/sqrt(d_mlp).
        nn.init.normal_(self.W_pos_in, 0.0, 1.0 / math.sqrt(cfg.n_ctx))
        nn.init.normal_(self.W_out, 0.0, 1.0 / math.sqrt(cfg.d_mlp))
        if cfg.init_scale != 1.0:
            for p in self.parameters():
                p.mul_(cfg.init_scale)

    def forward(self, tokens: torch.Tensor, answer_pos: torch.Tensor | None = None) -> torch.Tensor:
        # One output for the whole row: answer_pos is accepted for the common interface only.
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        # One embedding table over (position, token) rows: a deterministic backward on a CPU.
        flat = self.W_pos_in.view(-1, self.W_pos_in.shape[-1])
        embed = self.hook_embed(F.embedding(positions * self.cfg.d_vocab + tokens, flat))
        pre = self.mlp.hook_pre(embed.sum(1) + self.b_in)
        post = self.mlp.hook_post(F.relu(pre))
        return post @ self.W_out + self.b_out
