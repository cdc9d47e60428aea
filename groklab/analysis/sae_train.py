"""Sparse autoencoders, several trained at once: one bank of SAEs with stacked weights
(``W_enc`` [H, d_in, d_sae], ...) that encodes and decodes every member with one batched
matmul, so the SAEs of several same-width hook points (or several seeds) cost one training loop
(docs/methods.md section "Sparse autoencoders").

Each member follows SAELens' training SAEs (v6) term for term, so that an SAE trained here
means what SAELens users expect, and bench/sae_throughput.py compares the two side by side:

* encode: pre = (x - b_dec) W_enc + b_enc; decode: f W_dec + b_dec;
* ``standard``: f = ReLU(pre); loss = sum_d (x - x_hat)^2 (mean over the batch)
  + l1 * sum_i f_i ||W_dec,i|| (the L1 weighted by decoder row norms, trap: comparing
  coefficients across libraries without it is wrong);
* ``topk``: keep the k largest pre-activations per input, ReLU them; pre-activations are scaled
  by the decoder row norms and activations divided by them before decoding
  (``rescale_acts_by_decoder_norm``, SAELens' training default), so the decoder's norm cannot
  game the selection; plus the auxiliary loss of Gao et al. 2024: the top d_in / 2 dead latents
  reconstruct the residual x - x_hat, scaled by min(dead / (d_in / 2), 1);
* ``batchtopk``: as topk, but the k * batch largest ReLU'd pre-activations over the whole batch
  (Bussmann et al. 2024); a global threshold tracks the smallest kept activation
  (theta <- 0.99 theta + 0.01 min) and replaces the batch selection at inference, where the SAE
  is a JumpReLU;
* ``jumprelu``: f = pre * 1[pre > theta] with a learnt per-feature theta (>= 0, initial 0.01),
  trained with the straight-through estimator of Rajamanoharan et al. 2024: a rectangle kernel
  of bandwidth 0.05 gives theta its gradient, through f (-theta / bw) and through the L0
  penalty l0 * sum_i 1[pre_i > theta_i] (-1 / bw);
* init: W_dec Kaiming-uniform, rows scaled to norm 0.1, W_enc = W_dec^T, biases 0; Adam
  (lr 3e-4, betas 0.9 / 0.999); gradients clipped to norm 1 per member; a feature is dead after
  ``dead_window`` steps without firing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

KINDS = ("standard", "topk", "batchtopk", "jumprelu")


@dataclass
class SAEConfig:
    kind: str = "topk"
    d_in: int = 0
    d_sae: int = 0
    k: float = 16  # topk: features per input; batchtopk: mean features per input
    l1: float = 1.0  # standard: L1 coefficient (decoder-norm weighted)
    l0: float = 1.0  # jumprelu: L0 coefficient
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    seed: int = 0
    bandwidth: float = 0.05
    init_threshold: float = 0.01
    threshold_lr: float = 0.01
    aux_coefficient: float = 1.0
    dead_window: int = 1000
    decoder_init_norm: float = 0.1

    def check(self) -> "SAEConfig":
        if self.kind not in KINDS:
            raise ValueError(f"unknown SAE kind '{self.kind}'; kinds: {', '.join(KINDS)}")
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"SAE sizes must be positive (d_in {self.d_in}, d_sae {self.d_sae})")
        if self.kind in ("topk", "batchtopk") and not 0 < self.k <= self.d_sae:
            raise ValueError(f"SAE k={self.k:g} must be in 1..d_sae={self.d_sae}")
        if self.kind == "topk" and self.k != int(self.k):
            raise ValueError(f"topk needs a whole k, not {self.k:g}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("SAE steps and batch size must be positive")
        for name in ("l1", "l0", "lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"SAE {name} must be >= 0")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _rectangle(x: torch.Tensor) -> torch.Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x)


class _JumpReLU(torch.autograd.Function):
    """pre * 1[pre > theta]; theta's gradient from the rectangle-kernel estimator."""

    @staticmethod
    def forward(ctx, x, theta, bw):
        ctx.save_for_backward(x, theta)
        ctx.bw = bw
        return x * (x > theta)

    @staticmethod
    def backward(ctx, g):
        x, theta = ctx.saved_tensors
        ste = (theta / ctx.bw) * _rectangle((x - theta) / ctx.bw) * g
        return (x > theta) * g, -ste.sum(-2, keepdim=True), None


class _Step(torch.autograd.Function):
    """1[pre > theta], for the L0 penalty; gradient to theta only."""

    @staticmethod
    def forward(ctx, x, theta, bw):
        ctx.save_for_backward(x, theta)
        ctx.bw = bw
        return (x > theta).to(x)

    @staticmethod
    def backward(ctx, g):
        x, theta = ctx.saved_tensors
        ste = (1.0 / ctx.bw) * _rectangle((x - theta) / ctx.bw) * g
        return None, -ste.sum(-2, keepdim=True), None


class SAEBank(torch.nn.Module):
    """H sparse autoencoders of one kind and shape, trained and run together. Inputs and
    outputs are [H, batch, d_in]; feature activations [H, batch, d_sae]."""

    def __init__(self, cfg: SAEConfig, n: int = 1):
        super().__init__()
        self.cfg = cfg.check()
        H, d, m = n, cfg.d_in, cfg.d_sae
        g = torch.Generator().manual_seed(cfg.seed)
        W_dec = torch.empty(H, m, d)
        bound = (6.0 / d) ** 0.5  # kaiming_uniform_ on [d_sae, d_in]: fan_in = d_in
        W_dec.uniform_(-bound, bound, generator=g)
        W_dec *= cfg.decoder_init_norm / W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = torch.nn.Parameter(W_dec)
        self.W_enc = torch.nn.Parameter(W_dec.transpose(1, 2).clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(H, m))
        self.b_dec = torch.nn.Parameter(torch.zeros(H, d))
        if cfg.kind == "jumprelu":
            self.threshold = torch.nn.Parameter(torch.full((H, m), cfg.init_threshold))
        else:  # batchtopk learns it by EMA; the others keep zeros (unused)
            self.register_buffer("threshold", torch.zeros(H, m))
        # topk kinds treat the decoder as unit-norm while training; folded on export
        self.rescale = cfg.kind in ("topk", "batchtopk")
        self.training_mode = True

    @property
    def n(self) -> int:
        return self.W_enc.shape[0]

    def dec_norm(self) -> torch.Tensor:
        return self.W_dec.norm(dim=-1)  # [H, d_sae]

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.baddbmm(self.b_enc[:, None], x - self.b_dec[:, None], self.W_enc)
        return pre * self.dec_norm()[:, None] if self.rescale else pre

    def activate(self, pre: torch.Tensor, train: bool = False) -> torch.Tensor:
        kind, cfg = self.cfg.kind, self.cfg
        if kind == "standard":
            return pre.relu()
        if kind == "topk":
            v, i = pre.topk(int(cfg.k), dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter(-1, i, v.relu())
        if kind == "batchtopk" and train:
            H, B, m = pre.shape
            flat = pre.relu().reshape(H, B * m)
            v, i = flat.topk(int(cfg.k * B), dim=-1, sorted=False)
            return torch.zeros_like(flat).scatter(-1, i, v).reshape(H, B, m)
        theta = self.threshold[:, None]
        if kind == "jumprelu" and train:
            return _JumpReLU.apply(pre, theta, cfg.bandwidth)
        return pre * (pre > theta)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.pre(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        if self.rescale:
            f = f / self.dec_norm()[:, None]
        return torch.baddbmm(self.b_dec[:, None], f, self.W_dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- training ------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, dead: torch.Tensor | None):
        """Total loss (summed over members: they share no parameter), which features fired
        [H, d_sae], and the activations [H, batch, d_sae] (None on the sparse TopK path)."""
        cfg = self.cfg
        if cfg.kind == "topk":
            return self._topk_loss(x, dead)
        pre = self.pre(x)
        f = self.activate(pre, train=True)
        x_hat = self.decode(f)
        loss = (x_hat - x).pow(2).sum(-1).mean(-1)  # [H]
        if cfg.kind == "standard" and cfg.l1:
            loss = loss + cfg.l1 * (f * self.dec_norm()[:, None]).sum(-1).mean(-1)
        elif cfg.kind == "jumprelu" and cfg.l0:
            step = _Step.apply(pre, self.threshold[:, None], cfg.bandwidth)
            loss = loss + cfg.l0 * step.sum(-1).mean(-1)
        elif self.rescale and dead is not None and cfg.aux_coefficient:
            loss = loss + cfg.aux_coefficient * self._aux_loss(x - x_hat.detach(), pre, dead)
        return loss.sum(), (f > 0).any(1), f

    def _sparse_decode(self, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """sum_j w_j W_dec[idx_j] for k picks per input ([H, B, k]), as one embedding bag:
        k rows of the decoder per input instead of a dense [B, d_sae] x [d_sae, d_in]."""
        H, B, k = idx.shape
        m, d = self.W_dec.shape[1:]
        off = (torch.arange(H, device=idx.device) * m).view(H, 1, 1)
        out = torch.nn.functional.embedding_bag(
            (idx + off).reshape(H * B, k), self.W_dec.reshape(H * m, d),
            per_sample_weights=w.reshape(H * B, k), mode="sum")
        return out.view(H, B, d)

    def _topk_loss(self, x: torch.Tensor, dead: torch.Tensor | None):
        """TopK's loss with only the k picks in the graph. With decoder-norm rescaling the
        feature is ReLU(pre_i n_i) and the decoder reads it divided by n_i, so the
        reconstruction is sum_i ReLU(pre_i) W_dec,i and n only steers the selection (made
        without gradient, as a top-k's indices carry none): the same loss and gradients as the
        dense form, without its dense decode."""
        cfg = self.cfg
        raw = torch.baddbmm(self.b_enc[:, None], x - self.b_dec[:, None], self.W_enc)
        with torch.no_grad():
            sel = raw * self.dec_norm()[:, None] if self.rescale else raw
            idx = sel.topk(int(cfg.k), dim=-1, sorted=False).indices
        vals = raw.gather(-1, idx).relu()
        x_hat = self._sparse_decode(idx, vals) + self.b_dec[:, None]
        loss = (x_hat - x).pow(2).sum(-1).mean(-1)
        if dead is not None and cfg.aux_coefficient:
            k_aux = cfg.d_in // 2
            scale = (dead.sum(-1) / max(k_aux, 1)).clamp(max=1.0)
            with torch.no_grad():
                masked = torch.where(dead[:, None], sel, torch.tensor(-torch.inf,
                                                                      dtype=sel.dtype))
                v, i = masked.topk(min(k_aux, sel.shape[-1]), dim=-1, sorted=False)
            w = torch.where(torch.isfinite(v), raw.gather(-1, i), torch.zeros_like(v))
            residual = (x - x_hat).detach()
            aux = (self._sparse_decode(i, w) - residual).pow(2).sum(-1).mean(-1)
            loss = loss + cfg.aux_coefficient * scale * aux
        with torch.no_grad():
            counts = torch.zeros(raw.shape[0], raw.shape[-1], dtype=vals.dtype)
            fired = counts.scatter_add_(1, idx.flatten(1), (vals > 0).to(vals.dtype).flatten(1))
        return loss.sum(), fired > 0, None

    def _aux_loss(self, residual, pre, dead):
        """Gao et al.'s AuxK loss with SAELens' scaling, for every member at once; members
        with fewer dead latents than k_aux get zeros for the -inf picks, as SAELens' smaller
        top-k would."""
        k_aux = self.cfg.d_in // 2
        n_dead = dead.sum(-1)  # [H]
        scale = (n_dead / max(k_aux, 1)).clamp(max=1.0)
        masked = torch.where(dead[:, None], pre, torch.tensor(-torch.inf, dtype=pre.dtype))
        v, i = masked.topk(min(k_aux, pre.shape[-1]), dim=-1, sorted=False)
        v = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
        acts = torch.zeros_like(pre).scatter(-1, i, v)
        if self.rescale:
            acts = acts / self.dec_norm()[:, None]
        recon = torch.bmm(acts, self.W_dec)
        return scale * (recon - residual.detach()).pow(2).sum(-1).mean(-1)

    @torch.no_grad()
    def _clip(self, max_norm: float = 1.0) -> None:
        """Per-member ``clip_grad_norm_(1.0)`` (SAELens clips each SAE's gradient)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norm = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))


def batch_indices(N: int, cfg: SAEConfig):
    """The rows of each training batch: epochs of a permutation seeded by ``cfg.seed``
    (bench/sae_throughput.py feeds SAELens the same sequence)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    order, at = torch.randperm(N, generator=g), 0
    for _ in range(cfg.steps):
        if at + cfg.batch_size > N:
            order, at = torch.randperm(N, generator=g), 0
        yield order[at: at + cfg.batch_size]
        at += cfg.batch_size


def train_bank(acts: torch.Tensor, cfg: SAEConfig, log=None) -> tuple[SAEBank, dict]:
    """Train one SAE per leading slice of ``acts`` [H, N, d_in] (float32) for ``cfg.steps``
    batches of ``cfg.batch_size`` rows drawn by epochs of a seeded permutation."""
    H, N, d = acts.shape
    cfg.d_in = d
    bank = SAEBank(cfg, H)
    # fused: one kernel per step for all parameters (CPU too), the same update as foreach
    opt = torch.optim.Adam(bank.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)
    since_fired = torch.zeros(H, cfg.d_sae)
    t0 = time.perf_counter()
    for step, idx in enumerate(batch_indices(N, cfg)):
        x = acts[:, idx]
        if cfg.kind == "jumprelu":
            with torch.no_grad():
                bank.threshold.clamp_(min=0.0)
        dead = since_fired > cfg.dead_window if step > cfg.dead_window else None
        loss, fired, f = bank.loss(x, dead)
        with torch.no_grad():
            since_fired += 1
            since_fired[fired] = 0
            if cfg.kind == "batchtopk":
                low = torch.where(f > 0, f, torch.tensor(torch.inf)).amin((1, 2))
                ok = torch.isfinite(low)
                ema = (1 - cfg.threshold_lr) * bank.threshold[:, 0] + cfg.threshold_lr * low
                bank.threshold.copy_(torch.where(ok, ema, bank.threshold[:, 0])[:, None]
                                     .expand_as(bank.threshold))
        loss.backward()
        bank._clip(1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if log is not None and (step + 1) % max(1, cfg.steps // 4) == 0:
            log(f"sae step {step + 1}/{cfg.steps}: loss {loss.item() / H:.4g}")
    seconds = time.perf_counter() - t0
    if cfg.kind == "jumprelu":
        with torch.no_grad():
            bank.threshold.clamp_(min=0.0)
    bank.eval()
    return bank, {"seconds": seconds, "steps_per_s": cfg.steps / max(seconds, 1e-9),
                  "dead_in_training": (since_fired > cfg.dead_window).float().mean(-1).tolist()}


@torch.no_grad()
def evaluate(bank: SAEBank, acts: torch.Tensor, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Per member [H]: L0 (mean active features per input), explained variance
    1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2) over all inputs (SAELens 6), the fraction of
    features that never fire on ``acts`` (dead), and the per-feature firing frequency."""
    H, N, d = acts.shape
    err = torch.zeros(H, dtype=torch.float64)
    l0 = torch.zeros(H, dtype=torch.float64)
    freq = torch.zeros(H, bank.cfg.d_sae, dtype=torch.float64)
    for i in range(0, N, chunk):
        x = acts[:, i: i + chunk]
        f = bank.encode(x)
        err += (bank.decode(f) - x).double().pow(2).sum((1, 2))
        active = f > 0
        l0 += active.sum((1, 2)).double()
        freq += active.sum(1).double()
    x64 = acts.double()
    var = x64.pow(2).sum(-1).mean(-1) - x64.mean(1).pow(2).sum(-1)
    # inputs that barely vary (one token's embedding) have no variance to explain: NaN
    total = x64.pow(2).sum(-1).mean(-1)
    ev = torch.where(var > 1e-9 * total, 1 - (err / N) / var.clamp_min(1e-30),
                     torch.tensor(float("nan"), dtype=torch.float64))
    return {"l0": l0 / N, "explained_variance": ev,
            "mse": err / N, "dead": (freq == 0).double().mean(-1), "frequency": freq / N}
