"""An MLP on continuous inputs (``architecture: dense``), for the ``classify`` objective.

A row's input ([features] or [channels, length]) is flattened and passed through ``n_layers``
hidden layers of width ``d_mlp`` (``act_fn``), then a linear read-out to the classes;
``n_layers: 0`` is multinomial logistic regression. Initialization is PyTorch's Linear default
(uniform with bound 1/sqrt(fan_in)) times ``init_scale`` (Omnigrok's alpha). Hooks, named as
the transformer's are::

    hook_embed                 [batch, d_input]   the flattened input
    blocks.{l}.mlp.hook_pre    [batch, d_mlp]     pre-activation of hidden layer l
    blocks.{l}.mlp.hook_post   [batch, d_mlp]     its activation
    hook_out                   [batch, width]     the state the read-out sees
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groklab.models.config import ModelConfig
from groklab.models.hooks import HookPoint
from groklab.models.mlp import _Hidden, _SmallModel


class _Layer(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(d_in, d_out))
        self.b_in = nn.Parameter(torch.empty(d_out))
        self.mlp = _Hidden()


class DenseMLP(_SmallModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_input > 0, "resolve the config for a continuous task first"
        self.cfg = cfg
        widths = [cfg.d_input] + [cfg.d_mlp] * cfg.n_layers
        self.blocks = nn.ModuleList(_Layer(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.W_U = nn.Parameter(torch.empty(widths[-1], cfg.d_vocab_out))
        self.b_U = nn.Parameter(torch.empty(cfg.d_vocab_out))
        self.hook_embed = HookPoint()
        self.hook_out = HookPoint()
        self.init_weights()
        self.setup()

    @torch.no_grad()
    def init_weights(self) -> None:
        pairs = [(b.W_in, b.b_in) for b in self.blocks] + [(self.W_U, self.b_U)]
        for W, b in pairs:
            bound = 1.0 / math.sqrt(W.shape[0])
            W.uniform_(-bound, bound)
            b.uniform_(-bound, bound)
        if self.cfg.init_scale != 1.0:
            for p in self.parameters():
                p.mul_(self.cfg.init_scale)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.act_fn == "relu":
            return F.relu(x)
        return F.gelu(x, approximate="tanh" if self.cfg.act_fn == "gelu_new" else "none")

    def forward(self, inputs: torch.Tensor, answer_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, classes]; ``answer_pos`` is accepted for the common interface only."""
        x = self.hook_embed(inputs.flatten(1).to(self.W_U.dtype))
        for block in self.blocks:
            pre = block.mlp.hook_pre(x @ block.W_in + block.b_in)
            x = block.mlp.hook_post(self.act(pre))
        return self.hook_out(x) @ self.W_U + self.b_U
