"""groklab's training step against a bare PyTorch loop, side by side in one run.

Two tasks, each with its own loops on the same data, batch size and model shape:

  answer    composition-small (4 layers, d_model 128, 4 heads, batch 512, 4 tokens)
  span      string reversal (``strings``, up to 12 digits: 28 tokens, 4 layers, d_model 128,
            batch 256): teacher-forced loss on the answer tokens only

  groklab   the step `groklab train` runs between evaluations: LR (and weight decay) set, index
            draw from the device-resident split, the objective's forward (the models' speed
            paths) and loss, backward, grad clipping, AdamW
  bare      the same model and forward in a ten-line loop (measures the trainer's overhead)
  plain     answer task only: a minimal nn.Linear GPT (nanoGPT style, no hook points) in the
            same ten-line loop (measures the hooked model's overhead)

Prints one JSON line per task with ms/step for each loop and the ratios. Targets:
groklab/bare <= 1.05 on both tasks.

    python bench/trainer_overhead.py [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from groklab.config import load_config
from groklab.models import fast
from groklab.train.loop import Run
from groklab.train.steps import EagerStep


class PlainBlock(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, -1)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, n_ctx: int, d: int, h: int, n_layers: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.blocks = nn.ModuleList(PlainBlock(d, h) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, x, answer_pos):
        h = self.wte(x) + self.wpe(torch.arange(x.shape[1]))
        for blk in self.blocks:
            h = blk(h)
        h = self.ln_f(h)[torch.arange(x.shape[0]), answer_pos]
        return h @ self.wte.weight.T


def time_loop(step_fn, steps: int) -> float:
    for _ in range(5):  # warm-up
        step_fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn()
    return (time.perf_counter() - t0) / steps * 1000


def bench(cfg, steps: int, repeats: int, plain_model: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = Run.start(cfg, f"{tmp}/run")
    tc = cfg.train
    split = run.train_split
    n, B = len(split), tc.batch_size
    g = torch.Generator().manual_seed(0)
    answer = split.answer_pos is not None

    def bare_loop(model, forward):
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)

        def step():
            idx = torch.randint(n, (B,), generator=g)
            if answer:
                logits = forward(model, split.inputs[idx], split.answer_pos[idx])
                loss = F.cross_entropy(logits, split.targets[idx])
            else:  # -100 targets are ignored: the prompt and the padding
                logits = forward(model, split.inputs[idx])
                loss = F.cross_entropy(logits.flatten(0, 1), split.targets[idx].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    eager = EagerStep(run)

    def groklab_step():
        run.set_lr(run.lr())
        eager()

    loops = {"groklab": groklab_step, "bare": bare_loop(run.model, fast.forward)}
    if plain_model:
        mc = run.model_cfg
        plain = PlainGPT(mc.d_vocab, mc.n_ctx, mc.d_model, mc.n_heads, mc.n_effective_layers)
        loops["plain"] = bare_loop(plain, lambda m, x, ap: m(x, ap))
    # Interleave repeats so drift in machine load hits every loop alike; keep the best.
    best = {k: math.inf for k in loops}
    for _ in range(repeats):
        for name, fn in loops.items():
            best[name] = min(best[name], time_loop(fn, steps))
    out = {f"{k}_ms_per_step": round(v, 2) for k, v in best.items()}
    out["groklab_over_bare"] = round(best["groklab"] / best["bare"], 3)
    if plain_model:
        out["groklab_over_plain"] = round(best["groklab"] / best["plain"], 3)
    out["threads"] = torch.get_num_threads()
    return out


SPAN = ["task.max_len=12", "task.ood_extra=0", "task.n_train=20000", "model.n_layers=4",
        "model.d_model=128", "model.n_heads=4", "train.batch_size=256", "train.device=cpu"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", default="composition-small")
    args = ap.parse_args()
    answer = load_config(args.preset, None, ["train.device=cpu"])
    print(json.dumps({"task": f"answer ({args.preset})",
                      **bench(answer, args.steps, args.repeats, plain_model=True)}), flush=True)
    span = load_config("strings", None, SPAN)
    print(json.dumps({"task": "span (strings, 12 digits)",
                      **bench(span, args.steps, args.repeats, plain_model=False)}), flush=True)


if __name__ == "__main__":
    main()
