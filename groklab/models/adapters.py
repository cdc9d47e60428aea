"""Adapters on a model's linear maps: LoRA and MoRA as weight deltas, and the fine-tuning
baselines (all weights, or the last blocks only), behind one interface.

A target is named like the parameter it changes, with globs: ``blocks.3.attn.W_Q``,
``blocks.*.mlp.W_in``, ``blocks.*.attn.W_[QKVO]``. Each target is read as one linear map
[d_in, d_out] in the ``x @ W`` orientation; per-head weights are whole maps, not one map per
head: W_Q / W_K / W_V [n_heads, d_model, d_head] as d_model -> n_heads * d_head (the order the
fused q/k/v matmul uses), W_O [n_heads, d_head, d_model] as n_heads * d_head -> d_model; a
``torch.nn.Linear`` weight [out, in] is transposed.

The update is a ``torch.nn.utils.parametrize`` parametrization: reading ``attn.W_Q`` returns
``W0 + dW``, so every code path (the hooked forward, the fused kernels, the training fast path,
analyses, merging) sees the adapted weight, and W0 stays a frozen tensor underneath. Each
adapter also computes ``x @ dW`` on activations (``apply_to``, as LoRA and MoRA are usually
run); the fused kernels take that path for an adapter whose ``on_activations`` is set.
``attach(path="auto")`` sets it from the model's width: the weight read costs an extra
d_in x d_out gradient per map and step, the activation path a few skinny matmuls per map, and
``bench/adapter_step.py`` puts the crossover between d_model 128 (weight read faster: LoRA
1.31x vs 1.47x of the frozen step) and 256 (activation path faster: 1.28x vs 1.50x; at 768
1.05-1.10x vs 1.99x). Both paths give the same logits and gradients to float error. LoRA's dropout
on the weight path drops input features of dW (rows of A) once per forward; on the activation
path it drops input elements, as in PEFT; merges and analyses read dW without dropout.

- LoRA (Hu et al. 2021): ``dW = (alpha / r) A B``, A [d_in, r] Kaiming-uniform(a=sqrt 5) as
  PEFT initialises it, B [r, d_out] zero; alpha defaults to r (scale 1, as MoRA's).
- MoRA (Jiang et al. 2024): ``dW = C M D`` with one square M [r_hat, r_hat], zero, at LoRA rank
  r's parameter count (``groklab/models/mora.py``).

``merge()`` writes ``W0 + dW`` into plain parameters and keeps W0 aside; ``unmerge()`` puts the
very W0 tensors back (bit-exact, where subtracting dW again would not be) and re-attaches the
updates. Looped models (``n_loops`` > 1) share block tensors across loops and are refused.
"""

from __future__ import annotations

import fnmatch
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from groklab.models.mora import mora_rank, shared_maps

KINDS = ("lora", "mora", "full", "last")
PATHS = ("auto", "weight", "activation")
# attach(path="auto"): adapters run on activations from this d_model up (bench/adapter_step.py)
ACTIVATION_FROM = 256
DEFAULT_TARGETS = ("blocks.*.attn.W_[QKVO]", "blocks.*.mlp.W_in", "blocks.*.mlp.W_out")
_SKIP = ("W_E", "W_pos", "W_U_param")  # embeddings: grown or left alone, never adapted


class AdapterError(ValueError):
    """Bad adapter input: an unknown target, a rank larger than the layer, a looped model."""


# ----------------------------------------------------------------------------- linear maps


def _layout(module: nn.Module, attr: str, p: torch.Tensor) -> str | None:
    if p.dim() == 3 and attr in ("W_Q", "W_K", "W_V"):
        return "heads_in"
    if p.dim() == 3 and attr == "W_O":
        return "heads_out"
    if p.dim() == 2 and isinstance(module, nn.Linear) and attr == "weight":
        return "linear"
    if p.dim() == 2 and attr.startswith("W_") and attr not in _SKIP:
        return "xw"
    return None


def _dims(layout: str, shape) -> tuple[int, int]:
    if layout == "heads_in":
        return shape[1], shape[0] * shape[2]
    if layout == "heads_out":
        return shape[0] * shape[1], shape[2]
    if layout == "linear":
        return shape[1], shape[0]
    return shape[0], shape[1]


def to_weight(layout: str, shape, d2: torch.Tensor) -> torch.Tensor:
    """A [d_in, d_out] map back in the parameter's own layout."""
    if layout == "heads_in":
        h, d, dh = shape
        return d2.view(d, h, dh).transpose(0, 1)
    if layout == "linear":
        return d2.T
    return d2.reshape(shape)


def to_map(layout: str, W: torch.Tensor) -> torch.Tensor:
    """A parameter in its layout as the [d_in, d_out] map."""
    if layout == "heads_in":
        h, d, dh = W.shape
        return W.transpose(0, 1).reshape(d, h * dh)
    if layout == "linear":
        return W.T
    return W.reshape(_dims(layout, W.shape))


def linear_maps(model: nn.Module) -> dict[str, tuple[nn.Module, str, str]]:
    """name -> (module, attribute, layout) of every adaptable linear map."""
    if getattr(getattr(model, "cfg", None), "n_loops", 1) > 1:
        raise AdapterError("adapters on looped models (model.n_loops > 1) are not supported: "
                           "their blocks share one tensor across loops")
    out = {}
    for mname, module in model.named_modules():
        if parametrize.is_parametrized(module):
            raise AdapterError(f"'{mname}' already carries an adapter; unmerge or start afresh")
        for attr, p in module.named_parameters(recurse=False):
            layout = _layout(module, attr, p)
            if layout is not None:
                out[f"{mname}.{attr}" if mname else attr] = (module, attr, layout)
    return out


def resolve_targets(model: nn.Module, patterns) -> list[str]:
    """Every map named by ``patterns`` (globs), in the model's order; unknown names refused."""
    maps = linear_maps(model)
    chosen = []
    for pat in patterns:
        hits = [n for n in maps if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            shown = ", ".join(list(maps)[:6])
            raise AdapterError(f"target '{pat}' names no linear map of this model; maps are "
                               f"named like {shown}, ... (globs allowed)")
        chosen += [h for h in hits if h not in chosen]
    return [n for n in maps if n in chosen]


# ----------------------------------------------------------------------------- deltas


class Delta(nn.Module):
    """``W -> W + dW`` for one map; subclasses give ``delta()`` [d_in, d_out] and
    ``apply_to(x)`` = x @ dW on activations [N, d_in] (the fused kernels' path)."""

    on_activations = False  # the fused kernels compute x @ W0 + apply_to(x) when set

    def __init__(self, layout: str, shape):
        super().__init__()
        self.layout, self.shape = layout, tuple(shape)
        self.d_in, self.d_out = _dims(layout, shape)

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        return W + to_weight(self.layout, self.shape, self.delta())


class LoRA(Delta):
    def __init__(self, layout, shape, rank: int, alpha: float | None = None,
                 dropout: float = 0.0):
        super().__init__(layout, shape)
        self.rank, self.alpha, self.dropout = rank, float(alpha or rank), dropout
        self.scale = self.alpha / rank
        A = torch.empty(rank, self.d_in)
        nn.init.kaiming_uniform_(A, a=math.sqrt(5))  # PEFT's init of its [r, d_in] weight
        self.A = nn.Parameter(A.T.contiguous())
        self.B = nn.Parameter(torch.zeros(rank, self.d_out))

    def delta(self) -> torch.Tensor:
        A = self.A
        if self.training and self.dropout > 0:
            keep = torch.rand(self.d_in, 1, device=A.device) >= self.dropout
            A = A * keep / (1 - self.dropout)
        return (A @ self.B) * self.scale

    def apply_to(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x
        B = self.B if self.scale == 1.0 else self.B * self.scale  # [r, d_out], not [N, d_out]
        return (x @ self.A) @ B

    def factors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(A, scale B): x @ dW = (x @ A) @ (scale B), where no dropout applies."""
        if self.training and self.dropout > 0:
            return None
        return self.A, (self.B if self.scale == 1.0 else self.B * self.scale)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"lora_A": self.A, "lora_B": self.B}


class MoRA(Delta):
    def __init__(self, layout, shape, rank: int, mora_type: int = 1):
        super().__init__(layout, shape)
        self.rank, self.mora_type = rank, mora_type
        self.r_hat = mora_rank(self.d_in, self.d_out, rank, mora_type)
        self.maps = shared_maps(self.d_in, self.d_out, self.r_hat, mora_type)
        self.M = nn.Parameter(torch.zeros(self.r_hat, self.r_hat))

    def delta(self) -> torch.Tensor:
        return self.maps.delta(self.M)

    def apply_to(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps.apply(x, self.M)

    def factors(self):
        """(the fixed maps, M), which ``kernels._adapted`` runs as ``maps.inner`` then
        ``maps.add_decompressed`` (several q/k/v adapters sharing the maps at once)."""
        return self.maps, self.M

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mora_M": self.M}


def _check_rank(name: str, d_in: int, d_out: int, rank: int) -> None:
    if not 1 <= rank <= min(d_in, d_out):
        raise AdapterError(f"rank {rank} does not fit {name} ({d_in} -> {d_out}); the rank "
                           f"must be between 1 and {min(d_in, d_out)}")


# ----------------------------------------------------------------------------- the handle


class Adapters:
    """The trainable part of an adapted model and what can be done with it afterwards."""

    def __init__(self, model: nn.Module, kind: str, targets: list[str], deltas: dict,
                 options: dict, trainable: list[nn.Parameter], base: dict):
        self.model, self.kind, self.targets = model, kind, targets
        self.deltas, self.options = deltas, options
        self.trainable = trainable
        self._base = base  # name -> W0 (fine-tuning: the starting weights, for deltas)
        self._maps = linear_maps_all(model, targets)
        self.merged = False

    def parameters(self) -> list[nn.Parameter]:
        return list(self.trainable)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.trainable)

    def delta_weights(self) -> dict[str, torch.Tensor]:
        """name -> the learned dW as a [d_in, d_out] map (detached)."""
        with torch.no_grad():
            if self.deltas:
                return {n: _eval_delta(d) for n, d in self.deltas.items()}
            out = {}
            for n in self.targets:
                module, attr, layout = self._maps[n]
                out[n] = to_map(layout, getattr(module, attr) - self._base[n]).clone()
            return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What adapter.safetensors holds: the adapter tensors, or the fine-tuned maps' dW."""
        if self.deltas:
            return {f"{n}.{k}": t.detach() for n, d in self.deltas.items()
                    for k, t in d.tensors().items()}
        return {f"{n}.delta": t for n, t in self.delta_weights().items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, d in self.deltas.items():
                for k, t in d.tensors().items():
                    t.copy_(sd[f"{n}.{k}"])

    def merge(self) -> None:
        """Write W0 + dW into plain parameters (W0 kept for :meth:`unmerge`)."""
        if self.merged or not self.deltas:
            self.merged = True
            return
        for n in self.targets:
            module, attr, _ = self._maps[n]
            self._base[n] = getattr(module.parametrizations, attr).original
            parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
            with torch.no_grad():
                merged = self._base[n] + to_weight(*self._maps[n][2:], self._base[n].shape,
                                                   _eval_delta(self.deltas[n]))
            setattr(module, attr, nn.Parameter(merged, requires_grad=False))
        self.merged = True

    def unmerge(self) -> None:
        """The exact W0 back, and the updates on it again."""
        if not self.merged or not self.deltas:
            self.merged = False
            return
        for n in self.targets:
            module, attr, _ = self._maps[n]
            delattr(module, attr)
            module.register_parameter(attr, self._base[n])
            parametrize.register_parametrization(module, attr, self.deltas[n])
        self.merged = False

    def run_on(self, path: str) -> None:
        """Run every adapter on activations (``"activation"``) or as one weight (``"weight"``)."""
        if path not in PATHS[1:]:
            raise AdapterError(f"unknown adapter path '{path}'; paths: {', '.join(PATHS)}")
        for d in self.deltas.values():
            d.on_activations = path == "activation"
        if self.deltas:
            self.options["path"] = path

    def config(self) -> dict:
        out = {"kind": self.kind, "targets": self.targets, "n_params": self.n_params(),
               **self.options}
        if self.kind == "mora":
            out["r_hat"] = {n: d.r_hat for n, d in self.deltas.items()}
        return out


def _eval_delta(d: Delta) -> torch.Tensor:
    """dW without dropout (what a merge writes and an analysis reads)."""
    was = d.training
    d.eval()
    try:
        return d.delta().detach().clone()
    finally:
        d.train(was)


def linear_maps_all(model: nn.Module, names: list[str]) -> dict:
    """(module, attribute, layout) of named maps, parametrized or not."""
    out = {}
    for n in names:
        mname, attr = n.rsplit(".", 1) if "." in n else ("", n)
        module = model.get_submodule(mname)
        if parametrize.is_parametrized(module, attr):
            W = getattr(module.parametrizations, attr).original
        else:
            W = getattr(module, attr)
        out[n] = (module, attr, _layout(module, attr, W))
    return out


def attach(model: nn.Module, kind: str, targets=DEFAULT_TARGETS, rank: int = 8,
           alpha: float | None = None, dropout: float = 0.0, mora_type: int = 1,
           last_layers: int = 1, path: str = "auto") -> Adapters:
    """Freeze the model and attach ``kind`` to ``targets`` (``full``: every parameter trains;
    ``last``: the last ``last_layers`` blocks and the final LayerNorm train). ``path``: how
    LoRA / MoRA run, ``weight`` (W0 + dW), ``activation`` (x @ W0 + adapter(x)) or ``auto``
    (activation from d_model ``ACTIVATION_FROM`` up)."""
    if kind not in KINDS:
        raise AdapterError(f"unknown adapter '{kind}'; adapters: {', '.join(KINDS)}")
    if path not in PATHS:
        raise AdapterError(f"unknown adapter path '{path}'; paths: {', '.join(PATHS)}")
    names = resolve_targets(model, targets)
    maps = linear_maps(model)
    for p in model.parameters():
        p.requires_grad_(kind == "full")
    if kind in ("full", "last"):
        if kind == "last":
            n_blocks = len(model.blocks)
            if not 1 <= last_layers <= n_blocks:
                raise AdapterError(f"--last-layers {last_layers} is outside 1..{n_blocks}")
            keep = tuple(f"blocks.{i}." for i in range(n_blocks - last_layers, n_blocks))
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith(keep + ("ln_final.",)))
            names = [n for n in names if n.startswith(keep)]
        trainable = [p for p in model.parameters() if p.requires_grad]
        base = {n: getattr(maps[n][0], maps[n][1]).detach().clone() for n in names}
        options = {"last_layers": last_layers} if kind == "last" else {}
        return Adapters(model, kind, names, {}, options, trainable, base)
    if kind == "mora" and mora_type not in (1, 6):
        raise AdapterError(f"--mora-type {mora_type} is not built; types: 1 (sharing), 6 "
                           "(rotation)")
    deltas = {}
    for n in names:
        module, attr, layout = maps[n]
        W = getattr(module, attr)
        _check_rank(n, *_dims(layout, W.shape), rank)
        d = (LoRA(layout, W.shape, rank, alpha, dropout) if kind == "lora"
             else MoRA(layout, W.shape, rank, mora_type)).to(W.device, W.dtype)
        d.train(model.training)
        parametrize.register_parametrization(module, attr, d)
        deltas[n] = d
    trainable = [p for d in deltas.values() for p in d.parameters()]
    options = ({"rank": rank, "alpha": float(alpha or rank), "dropout": dropout}
               if kind == "lora" else {"rank": rank, "mora_type": mora_type})
    ad = Adapters(model, kind, names, deltas, options, trainable, {})
    if path == "auto":
        path = "activation" if model.cfg.d_model >= ACTIVATION_FROM else "weight"
    ad.run_on(path)
    return ad
