"""Training tokens/s of groklab's trainer on the stories task against plain nanoGPT-style loops,
side by side in one process (rounds interleaved, so a shared machine slows all alike).

Same data (stories-1layer's training rows), batch, sequence length and model shape (one layer by
default, d_model 128, 4 heads, tied embeddings, LayerNorm, GELU), AdamW with the same lr,
weight decay, betas and grad clip 1.0:

  groklab            the eager step of `groklab train stories-1layer` as the schedule loop runs
                     it: set the lr, draw the batch from the run's generator (train.curriculum
                     none), forward through the model's fast path, masked token loss, backward,
                     clip, AdamW, accumulate the loss on the device
  plain-same-model   a nanoGPT-style loop (randint batch, model(x), F.cross_entropy with
                     ignore_index, backward, clip, step, zero_grad) on groklab's model object
  plain-nanogpt      the same loop on a minimal nanoGPT-style GPT module of the same shape
                     (F.scaled_dot_product_attention, causal)

Prints one JSON line per configuration (median tokens/s over rounds; tokens = batch x seq_len
positions per step) and the ratios groklab / plain (goal >= 0.95).

    python bench/lm_throughput.py [--steps 20] [--rounds 5] [--d-model 128] [--layers 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from groklab.config import load_config
from groklab.models import build_model
from groklab.train.loop import Run
from groklab.train.steps import make_step


class Block(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class NanoGPT(nn.Module):
    def __init__(self, vocab: int, n_ctx: int, d: int, layers: int, heads: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.ln_f(x) @ self.wte.weight.T  # tied unembedding


def plain_loop(model, inputs, targets, tc):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=tc.lr,
                            betas=tuple(tc.betas), eps=tc.eps)
    g = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(len(inputs), (tc.batch_size,), generator=g)
        x, y = inputs[idx], targets[idx]
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def groklab_loop(run):
    step = make_step(run)

    def one():
        run.set_lr(run.lr())
        losses = step()
        run.loss_sum += losses[0]
        run.step += 1
        return losses

    return one


def timed(fn, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config("stories-1layer", None, [f"model.d_model={a.d_model}",
                                               f"model.n_layers={a.layers}",
                                               "task.n_train=2000", "train.device=cpu",
                                               "train.warmup_steps=0"])
    with tempfile.TemporaryDirectory() as tmp:
        run = Run.start(cfg, Path(tmp) / "run")
        data = run.data
        m = run.model_cfg
        torch.manual_seed(0)
        same = build_model(m)
        nano = NanoGPT(m.d_vocab, m.n_ctx, m.d_model, m.n_layers, m.n_heads)
        x, y = data.train.inputs, data.train.targets
        loops = {"groklab": groklab_loop(run), "plain-same-model": plain_loop(same, x, y, cfg.train),
                 "plain-nanogpt": plain_loop(nano, x, y, cfg.train)}
        for fn in loops.values():  # warm-up
            timed(fn, 3)
        times = {k: [] for k in loops}
        for _ in range(a.rounds):
            for k, fn in loops.items():
                times[k].append(timed(fn, a.steps))
        tokens = cfg.train.batch_size * data.seq_len * a.steps
        rate = {k: tokens / statistics.median(v) for k, v in times.items()}
        run.lock = run.lock.release()
    for k, r in rate.items():
        print(json.dumps({"config": k, "tokens_per_s": round(r), "batch": cfg.train.batch_size,
                          "seq_len": data.seq_len, "d_model": a.d_model, "layers": a.layers,
                          "threads": a.threads}))
    print(json.dumps({"ratio_vs_plain_same_model": round(rate["groklab"] / rate["plain-same-model"], 3),
                      "ratio_vs_plain_nanogpt": round(rate["groklab"] / rate["plain-nanogpt"], 3),
                      "goal": 0.95}))


if __name__ == "__main__":
    main()
