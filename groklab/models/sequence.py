"""Models with a spatial or temporal bias for continuous sequences (MNIST-1D's baselines).

Both read a row as ``[length]`` (one channel) or ``[channels, length]`` and return class logits,
like :class:`groklab.models.dense.DenseMLP`; initialization is PyTorch's default for each layer
times ``init_scale`` (Omnigrok's alpha).

``Conv1dNet`` (``architecture: cnn``): ``n_layers`` Conv1d layers of ``d_model`` channels,
stride 2, padding 1, kernel 5 for the first and 3 after (the MNIST-1D paper's ConvBase: 25
channels, 40 -> 19 -> 10 -> 5 positions, a linear 125 -> 10), ``act_fn`` after each, flattened
into a linear read-out. Hooks::

    hook_embed                  [batch, channels, length]   the input
    blocks.{l}.conv.hook_pre    [batch, d_model, length_l]  convolution output of layer l
    blocks.{l}.conv.hook_post   [batch, d_model, length_l]  its activation
    hook_out                    [batch, d_model * length_L] what the read-out sees

``GRUNet`` (``architecture: gru``): ``n_layers`` bidirectional GRU layers of hidden size
``d_model`` (the paper's GRUBase: one layer, hidden 6), every time step's state flattened into
a linear read-out (2 * 6 * 40 = 480 -> 10). Hooks::

    hook_embed                  [batch, length, channels]   the input, time-major rows
    blocks.{l}.hook_hidden      [batch, length, 2 d_model]  both directions' states of layer l
    hook_out                    [batch, length * 2 d_model]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groklab.models.config import ModelConfig
from groklab.models.hooks import HookPoint
from groklab.models.mlp import _Hidden, _SmallModel


def _channels_length(cfg: ModelConfig) -> tuple[int, int]:
    assert cfg.d_input > 0 and cfg.n_ctx > 0, "resolve the config for a continuous task first"
    return cfg.d_input // cfg.n_ctx, cfg.n_ctx


def _as_sequence(inputs: torch.Tensor) -> torch.Tensor:
    """[batch, length] -> [batch, 1, length]; [batch, channels, length] unchanged."""
    return inputs.unsqueeze(1) if inputs.dim() == 2 else inputs


def _scale_init(model: nn.Module, alpha: float) -> None:
    if alpha != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(alpha)


def _act(cfg: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    if cfg.act_fn == "relu":
        return F.relu(x)
    return F.gelu(x, approximate="tanh" if cfg.act_fn == "gelu_new" else "none")


def _readout(model: nn.Module, d_in: int) -> None:
    """The linear readout (nn.Linear's init, stored as W_U / b_U), the outer hooks, alpha, and
    the hook registry: the end of every sequence model's constructor."""
    readout = nn.Linear(d_in, model.cfg.d_vocab_out)
    model.W_U = nn.Parameter(readout.weight.detach().T.contiguous())
    model.b_U = nn.Parameter(readout.bias.detach().clone())
    model.hook_embed = HookPoint()
    model.hook_out = HookPoint()
    _scale_init(model, model.cfg.init_scale)
    model.setup()


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        conv = nn.Conv1d(c_in, c_out, kernel)  # PyTorch's default initialization
        self.W_conv = nn.Parameter(conv.weight.detach().clone())  # [c_out, c_in, kernel]
        self.b_conv = nn.Parameter(conv.bias.detach().clone())
        self.conv = _Hidden()


class Conv1dNet(_SmallModel):
    STRIDE, PADDING = 2, 1

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        channels, length = _channels_length(cfg)
        kernels = [5] + [3] * (cfg.n_layers - 1)
        widths = [channels] + [cfg.d_model] * cfg.n_layers
        self.blocks = nn.ModuleList(_ConvBlock(a, b, k)
                                    for a, b, k in zip(widths[:-1], widths[1:], kernels))
        for k in kernels:
            length = (length + 2 * self.PADDING - k) // self.STRIDE + 1
            if length < 1:
                raise ValueError(f"model.n_layers {cfg.n_layers} convolutions of stride 2 leave "
                                 f"no positions of the task's {cfg.n_ctx}; use fewer layers")
        _readout(self, cfg.d_model * length)

    def forward(self, inputs: torch.Tensor, answer_pos: torch.Tensor | None = None) -> torch.Tensor:
        x = self.hook_embed(_as_sequence(inputs).to(self.W_U.dtype))
        for block in self.blocks:
            pre = block.conv.hook_pre(F.conv1d(x, block.W_conv, block.b_conv,
                                               stride=self.STRIDE, padding=self.PADDING))
            x = block.conv.hook_post(_act(self.cfg, pre))
        return self.hook_out(x.flatten(1)) @ self.W_U + self.b_U


class _GRUBlock(nn.Module):
    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(d_in, hidden, batch_first=True, bidirectional=True)
        self.hook_hidden = HookPoint()


class GRUNet(_SmallModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        channels, length = _channels_length(cfg)
        widths = [channels] + [2 * cfg.d_model] * cfg.n_layers
        self.blocks = nn.ModuleList(_GRUBlock(a, cfg.d_model) for a in widths[:-1])
        _readout(self, 2 * cfg.d_model * length)

    def forward(self, inputs: torch.Tensor, answer_pos: torch.Tensor | None = None) -> torch.Tensor:
        x = self.hook_embed(_as_sequence(inputs).to(self.W_U.dtype).transpose(1, 2))
        for block in self.blocks:
            x = block.hook_hidden(block.gru(x)[0])  # h0 = 0, as in the paper
        return self.hook_out(x.flatten(1)) @ self.W_U + self.b_U

