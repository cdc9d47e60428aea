"""Adapter training step against the frozen model's forward-backward, side by side in one run.

Model and batch of composition-fast (4 layers, d_model 128, 4 heads, batch 512, 3 tokens), every
attention and MLP matrix adapted. Variants, timed in alternating rounds so machine load hits all
alike (median over rounds):

- ``frozen``: forward + backward of the base model with every weight frozen, the gradient
  reaching the embedding only: the activation backward any adapter needs at the least;
- ``full``: forward + backward with every weight's gradient (an ordinary training step's
  forward-backward, no optimizer);
- ``lora`` / ``mora1`` / ``mora6``: a whole adapter step (forward, backward, AdamW on the
  adapter), at LoRA rank --rank and MoRA at the same parameter count, as training runs it
  (the adapter read as one weight W0 + dW);
- ``lora-act`` / ``mora1-act`` / ``mora6-act``: the same steps with the fused kernels running
  the adapters on activations (``x @ W0 + adapter(x)``, ``attach(path="activation")``);
  ``groklab inject`` picks this path by itself from d_model 256 up (``adapters.ACTIVATION_FROM``).

Prints one JSON line per variant (ms per step, ratio to frozen and to full; the issue's target:
an adapter step <= 1.1x the frozen forward-backward).

    python bench/adapter_step.py [--rank 8] [--rounds 7] [--steps 5] [--device auto]
        [--preset composition-fast] [--batch N] [--kinds frozen,full,lora,lora-act]

Each adapter's line also gives ``flops_floor``: the step's extra multiply-adds over the frozen
forward-backward, counted (``flops_floor()``), so the ratio no implementation can beat at this
width: at d_model 128 and rank 8 LoRA's and MoRA type 1's are 1.141, above 1.1 by themselves;
at the paper's 768, 1.023 for both and 1.136 for MoRA type 6 (each chunk through its own M).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from groklab.config import load_config
from groklab.models import build_model, fast
from groklab.models.adapters import attach
from groklab.tasks import make_task


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make(kind: str, cfg, rank: int, device):
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = None
    if kind in ("frozen", "full"):
        for name, p in model.named_parameters():
            p.requires_grad_(kind == "full" or name == "W_E")
    else:
        ad = attach(model, kind.removesuffix("-act").rstrip("16"), rank=rank,
                    mora_type=6 if kind.startswith("mora6") else 1,
                    path="activation" if kind.endswith("-act") else "weight")
        with torch.no_grad():
            for p in ad.parameters():
                p.normal_(0, 1e-3)
        opt = torch.optim.AdamW(ad.parameters(), lr=1e-3, weight_decay=0.0,
                                fused=device.type in ("cpu", "cuda"))  # as groklab inject
    return model, opt


def flops_floor(cfg, kind: str, rank: int) -> float | None:
    """(frozen + the adapter's extra multiply-adds) / frozen, over every adapted map of a block
    (the rows and the layer count cancel); attention scores and the unembedding left out of
    both, which only lowers the frozen side, so this is an optimistic floor. Per map d_in x
    d_out and row, forward: LoRA r (d_in + d_out); MoRA type 1 r_hat^2 (the chunk sums and the
    tiling are adds); type 6 n r_hat^2 (each chunk through its own rotated M; n = ceil(d_in /
    r_hat) chunks, or ceil(d_out / r_hat) where the rest are cut). The backward costs twice the
    forward (input and adapter gradients)."""
    from groklab.models.mora import mora_rank, n_chunks

    d, hd, m = cfg.d_model, cfg.n_heads * cfg.d_head, cfg.d_mlp
    maps = [(d, hd)] * 3 + [(hd, d), (d, m), (m, d)]  # W_Q, W_K, W_V, W_O, W_in, W_out
    base = sum(2 * i * o for i, o in maps)  # forward + activation backward
    kind = kind.removesuffix("-act")
    if kind == "lora":
        extra = sum(rank * (i + o) for i, o in maps)
    elif kind in ("mora1", "mora6"):
        t = int(kind[-1])
        extra = 0
        for i, o in maps:
            r = mora_rank(i, o, rank, t)
            n = n_chunks(i, r)  # type 6: only the chunks whose outputs are not cut count
            extra += r * r * ((n if n * r < o else -(-o // r)) if t == 6 else 1)
    else:
        return None
    return round(1 + 3 * extra / base, 3)


def step(model, opt, batch) -> None:
    logits = fast.forward(model, batch.inputs, batch.answer_pos)
    F.cross_entropy(logits, batch.targets).backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    else:
        for p in model.parameters():
            p.grad = None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", default="composition-fast")
    ap.add_argument("--batch", type=int, default=0, help="rows a step (0: the preset's)")
    ap.add_argument("--kinds", default="frozen,full,lora,mora1,mora6,lora-act,mora1-act,mora6-act")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override on the preset, e.g. model.d_model=384 (repeatable)")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    cfg_all = load_config(args.preset, None, list(args.set))
    data = make_task(cfg_all.task)
    cfg = cfg_all.model.for_task(data)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(data.train), (args.batch or cfg_all.train.batch_size,), generator=g)
    batch = data.train.rows(idx).to(device)
    kinds = tuple(args.kinds.split(","))
    assert "frozen" in kinds and "full" in kinds, "--kinds needs frozen and full (the baselines)"
    built = {k: make(k, cfg, args.rank, device) for k in kinds}
    for k in kinds:  # warm up
        for _ in range(2):
            step(*built[k], batch)
    times = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k in kinds:
            sync(device)
            t = time.perf_counter()
            for _ in range(args.steps):
                step(*built[k], batch)
            sync(device)
            times[k].append((time.perf_counter() - t) / args.steps * 1e3)
    ms = {k: statistics.median(v) for k, v in times.items()}
    for k in kinds:
        floor = flops_floor(cfg, k, args.rank)
        print(json.dumps({"variant": k, "rank": args.rank, "ms_per_step": round(ms[k], 3),
                          "vs_frozen": round(ms[k] / ms["frozen"], 3),
                          "vs_full": round(ms[k] / ms["full"], 3), "flops_floor": floor,
                          "preset": args.preset, "set": args.set,
                          "d_model": cfg.d_model, "rows": len(idx), "device": str(device),
                          "threads": torch.get_num_threads(), "host": platform.node()}))


if __name__ == "__main__":
    main()
