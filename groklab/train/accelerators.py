"""Accelerators of grokking, switchable from ``train.*`` and combinable.

Question: how do we get from memorization to generalization in fewer steps? Each piece below is
a published method, implemented as its reference code does it (docs/methods.md sections 5-7):

- Grokfast (Lee et al. 2024, arXiv 2405.20233; ``ironjr/grokfast: grokfast.py``): amplify the
  slow component of the gradient. Applied between ``backward()`` and ``optimizer.step()``:

  * EMA: mu_t = alpha mu_{t-1} + (1 - alpha) g_t with mu initialised to the *first* gradient,
    then g <- g + lambda mu_t (defaults alpha 0.98, lambda 2.0).
  * MA: the last ``w`` gradients (the current one included); once the window is full,
    g <- g + lambda mean(window); before that the gradient is left alone (defaults w 100,
    lambda 5.0).

- StableMax cross-entropy (Prieto et al. 2025, arXiv 2501.04697; ``utils.py``):
  s(x) = x + 1 for x >= 0 and 1 / (1 - x) otherwise, StableMax(x)_i = s(x_i) / sum_j s(x_j),
  loss -log StableMax(logits)[y], computed in float64 as the reference does. It grows only
  linearly in the logits, so the loss cannot round to exactly zero (Softmax Collapse).

- Orthogonal gradient, ⊥Grad (same paper; ``orthograd.py``): per parameter tensor, remove the
  component of the gradient along the weights, g_perp = g - (w.g / (w.w + 1e-30)) w, then
  rescale it back to the norm of g (a plain projection is a different update; trap 14). With
  AdamW on top this is the paper's ⊥AdamW.

- A weight-decay warmup (:func:`weight_decay_at`): decoupled decay ramped in over the first
  steps. (A cosine decay of weight decay was tried and left out: nothing showed it helps.)

Everything here runs on the parameters' device with tensor ops only: no host synchronisation
is added to a training step. Filters keep their state in tensors that :meth:`state_dict` hands
to the resume checkpoint, so a resumed run continues bit-for-bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

GROKFAST_DEFAULTS = {"ema": {"lamb": 2.0}, "ma": {"lamb": 5.0}}  # grokfast.py function defaults


# ----------------------------------------------------------------------------- Grokfast


class GrokfastEMA:
    """g <- g + lambda mu, mu an exponential moving average of the gradients (first = g_1)."""

    kind = "ema"

    def __init__(self, params: Iterable[torch.nn.Parameter], alpha: float = 0.98,
                 lamb: float = 2.0):
        self.params = list(params)
        self.alpha, self.lamb = float(alpha), float(lamb)
        self.mu: list[torch.Tensor] | None = None

    @torch.no_grad()
    def __call__(self) -> None:
        idx, grads = _present_grads(self.params)
        if not grads:
            return
        if self.mu is None:
            # The reference starts mu at the first gradient (then its update leaves it there).
            self.mu = [torch.zeros_like(p) for p in self.params]
            torch._foreach_copy_([self.mu[i] for i in idx], grads)
        mu = [self.mu[i] for i in idx]
        torch._foreach_mul_(mu, self.alpha)
        torch._foreach_add_(mu, grads, alpha=1.0 - self.alpha)
        torch._foreach_add_(grads, mu, alpha=self.lamb)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "mu": self.mu}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, self.kind)
        mu = state["mu"]
        self.mu = None if mu is None else [
            t.to(p.device, p.dtype).clone() for t, p in zip(mu, self.params)
        ]


class GrokfastMA:
    """g <- g + lambda mean(last w gradients), a no-op until the window holds w gradients.

    The window is a ring buffer per parameter; its sum is kept up to date by adding the new
    gradient and subtracting the one it replaces, and recomputed from the buffer every time the
    ring wraps so that float32 rounding cannot drift over a long run.
    """

    kind = "ma"

    def __init__(self, params: Iterable[torch.nn.Parameter], window: int = 100,
                 lamb: float = 5.0):
        self.params = list(params)
        self.window, self.lamb = int(window), float(lamb)
        self.buf: list[torch.Tensor] | None = None  # [window, *shape] per parameter
        self.total: list[torch.Tensor] | None = None  # sum over the buffer
        self.count = 0  # gradients seen (host int: no sync)

    @torch.no_grad()
    def __call__(self) -> None:
        idx, grads = _present_grads(self.params)
        if not grads:
            return
        if self.buf is None:
            self.buf = [torch.zeros((self.window, *p.shape), device=p.device, dtype=p.dtype)
                        for p in self.params]
            self.total = [torch.zeros_like(p) for p in self.params]
        slot = self.count % self.window
        for i, g in zip(idx, grads):
            old = self.buf[i][slot]
            self.total[i].sub_(old).add_(g)
            old.copy_(g)
        self.count += 1
        if slot == self.window - 1:  # ring wrapped: resynchronise the running sums exactly
            for i in idx:
                torch.sum(self.buf[i], dim=0, out=self.total[i])
        if self.count >= self.window:
            torch._foreach_add_(grads, [self.total[i] for i in idx],
                                alpha=self.lamb / self.window)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "buf": self.buf, "total": self.total, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, self.kind)
        self.count = int(state["count"])
        if state["buf"] is None:
            self.buf = self.total = None
            return
        self.buf = [t.to(p.device, p.dtype).clone() for t, p in zip(state["buf"], self.params)]
        self.total = [t.to(p.device, p.dtype).clone() for t, p in zip(state["total"], self.params)]


def _present_grads(params: list[torch.nn.Parameter]) -> tuple[list[int], list[torch.Tensor]]:
    """Indices and gradients of the parameters that received one this step."""
    idx = [i for i, p in enumerate(params) if p.grad is not None]
    return idx, [params[i].grad for i in idx]


def _check_kind(state: dict, kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"grokfast state is for '{state.get('kind')}', this run uses '{kind}'")


def make_grad_filter(kind: str, params, *, alpha: float, lamb: float | None, window: int):
    """The Grokfast filter named by ``train.grokfast`` (None for "none")."""
    if kind == "none":
        return None
    lamb = GROKFAST_DEFAULTS[kind]["lamb"] if lamb is None else lamb
    if kind == "ema":
        return GrokfastEMA(params, alpha=alpha, lamb=lamb)
    return GrokfastMA(params, window=window, lamb=lamb)


# ----------------------------------------------------------------------------- ⊥Grad


@torch.no_grad()
def orthogonalize_gradients_(params: Iterable[torch.nn.Parameter]) -> None:
    """⊥Grad in place: g <- (g - proj_w g) * ||g|| / ||g - proj_w g||, per parameter tensor."""
    for p in params:
        if p.grad is None:
            continue
        w, g = p.detach().reshape(-1), p.grad.reshape(-1)
        proj = torch.dot(w, g) / (torch.dot(w, w) + 1e-30)
        g_perp = g - proj * w
        scale = torch.linalg.vector_norm(g) / (torch.linalg.vector_norm(g_perp) + 1e-30)
        p.grad.copy_((g_perp * scale).view_as(p.grad))


# ----------------------------------------------------------------------------- StableMax


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0 (both branches finite everywhere)."""
    return torch.where(x >= 0, x + 1, 1.0 / (1.0 - torch.clamp(x, max=0.0)))


def stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = stablemax_s(x)
    return s / s.sum(dim=dim, keepdim=True)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = stablemax_s(x)
    return torch.log(s) - torch.log(s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                            reduction: str = "mean") -> torch.Tensor:
    """-log StableMax(logits)[y] in float64 (the reference casts the logits to float64)."""
    logp = log_stablemax(logits.to(torch.float64), dim=-1)
    nll = -logp.gather(-1, targets[:, None].long()).squeeze(-1)
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    return nll


def softmax_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                          reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


LOSSES: dict[str, Callable] = {
    "cross_entropy": softmax_cross_entropy,
    "stablemax": stablemax_cross_entropy,
}


# ----------------------------------------------------------------------------- weight decay


def weight_decay_at(step: int, *, weight_decay: float, warmup_steps: int) -> float:
    """Decoupled weight decay at ``step``: a linear ramp from 0 over ``warmup_steps``, then
    constant. Fitting first and decaying hard afterwards lets a large weight decay (fast
    grokking) coexist with a fast start (bench/time_to_grok.py, ``modular-fast``)."""
    if warmup_steps > 0 and step < warmup_steps:
        return weight_decay * (step + 1) / warmup_steps
    return weight_decay


# ----------------------------------------------------------------------------- the loop's view


class Accelerators:
    """What the training loop calls: the loss, the gradient filters and the decay schedule.

    With the default ``train.*`` values every hook is a no-op and the loop's own softmax
    cross-entropy is used, so a run without accelerators is unchanged bit-for-bit.
    """

    def __init__(self, tc, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.tc = tc
        self.params = list(model.parameters())
        self.optimizer = optimizer
        self.loss = stablemax_cross_entropy if tc.loss == "stablemax" else None
        self.grad_filter = make_grad_filter(tc.grokfast, self.params, alpha=tc.grokfast_alpha,
                                            lamb=tc.grokfast_lamb, window=tc.grokfast_window)
        self.ortho = tc.optimizer == "ortho_adamw"
        # Decay groups are those built with weight decay; biases and norms stay undecayed. By
        # index: loading an optimizer state replaces the group dicts.
        self.decay_groups = [i for i, g in enumerate(optimizer.param_groups)
                             if g["weight_decay"] > 0]
        self.wd_scheduled = tc.weight_decay_warmup_steps > 0

    def set_weight_decay(self, step: int) -> None:
        if not self.wd_scheduled:
            return
        tc = self.tc
        wd = weight_decay_at(step, weight_decay=tc.weight_decay,
                             warmup_steps=tc.weight_decay_warmup_steps)
        for i in self.decay_groups:
            self.optimizer.param_groups[i]["weight_decay"] = wd

    def filter_gradients(self) -> None:
        """Between backward and the optimizer step: Grokfast first (it sees the raw gradient,
        as in the reference), then ⊥Grad on the filtered gradient."""
        if self.grad_filter is not None:
            self.grad_filter()
        if self.ortho:
            orthogonalize_gradients_(self.params)

    def state_dict(self) -> dict:
        return {"grokfast": self.grad_filter.state_dict() if self.grad_filter else None}

    def load_state_dict(self, state: dict | None) -> None:
        saved = (state or {}).get("grokfast")
        if (saved is None) != (self.grad_filter is None):
            raise ValueError("the checkpoint's grokfast setting differs from the run's config")
        if saved is not None:
            self.grad_filter.load_state_dict(saved)
