"""Inference memory of Aaren's recurrence against softmax attention's KV cache, by length.

Question: does Aaren (Feng et al. 2024) decode in memory that does not grow with the sequence,
and how does that compare with a softmax transformer of the same size decoding with a KV cache?

Method: an ``aaren`` model and a ``transformer`` of the same widths (random weights: memory does
not depend on them) decode T tokens one at a time, batch B, for T = 64 .. 4096:

    aaren     ``AarenLM.step``: per layer and head a running max, a normalizer and a weighted
              value sum (m, u, w), updated in place of the old ones
    softmax   per layer a preallocated K and V cache [B, T, n_heads, d_head] filled one row a
              step, each step attending over the rows filled so far (the standard KV cache)

Two measures, side by side: (1) state: the bytes of the tensors a decoder carries from one step
to the next (torch's own accounting: numel x element size), its maximum over the T steps; (2)
peak RSS: each (model, T) decodes in a forked child process and reports the growth of its resident
memory (/proc/self/statm, sampled after every step; the maximum) over what it held before its
decoder (and cache) existed, after a warm-up step of a throwaway decoder: real memory, with the
allocator's and the OS's noise of a few MB. The softmax decoder's logits are checked against
the transformer's full forward on a short sequence first (so its cache is the real thing), and
Aaren's recurrence against its parallel scan.

    python bench/aaren_memory.py                  # d_model 256, 4 layers, batch 8: ~1 CPU-min
    python bench/aaren_memory.py --d-model 512 --batch 16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

from groklab.models import ModelConfig, build_model, kernels

LENGTHS = [64, 128, 256, 512, 1024, 2048, 4096]


def make(arch: str, args) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(architecture=arch, n_layers=args.layers, d_model=args.d_model,
                      n_heads=args.heads).resolved(args.vocab, max(LENGTHS))
    return build_model(cfg).eval()


class KVDecoder:
    """Softmax attention decoding of a HookedTransformer with a preallocated KV cache."""

    def __init__(self, model, batch: int, length: int):
        c = model.cfg
        self.model, self.t = model, 0
        shape = (batch, length, c.n_heads, c.d_head)
        # empty, not zeros: zeroing would touch every page up front; rows are written as used
        self.cache = [(torch.empty(shape), torch.empty(shape)) for _ in model.blocks]

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.cache for t in kv)

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        m, t = self.model, self.t
        x = F.embedding(token, m.W_E) + m.W_pos[t]
        for block, (K, V) in zip(m.blocks, self.cache):
            q, k, v = kernels.qkv(block.attn, kernels.layer_norm(block.ln1, x))  # [B, h, dh]
            K[:, t], V[:, t] = k, v
            s = (q[:, None] * K[:, : t + 1]).sum(-1) / math.sqrt(m.cfg.d_head)  # [B, t+1, h]
            z = (s.softmax(1)[..., None] * V[:, : t + 1]).sum(1)
            x = x + kernels.out_proj(block.attn, z)
            x = x + kernels.mlp(block.mlp, kernels.layer_norm(block.ln2, x))
        self.t += 1
        return m.unembed(kernels.layer_norm(m.ln_final, x))


class AarenDecoder:
    def __init__(self, model, batch: int, length: int):
        self.model, self.t, self.state = model, 0, model.init_state(batch)

    def state_bytes(self) -> int:
        return self.model.state_bytes(self.state)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        logits, self.state = self.model.step(token, self.t, self.state)
        self.t += 1
        return logits


DECODERS = {"aaren": ("aaren", AarenDecoder), "softmax": ("transformer", KVDecoder)}


def decode(kind: str, length: int, args) -> dict:
    arch, cls = DECODERS[kind]
    model = make(arch, args)
    tokens = torch.randint(0, args.vocab, (args.batch, length),
                           generator=torch.Generator().manual_seed(1))
    warm = cls(model, args.batch, 2)  # first-call allocations outside the measurement
    warm.step(tokens[:, 0])
    del warm
    rss0 = rss = resident_kb()
    dec = cls(model, args.batch, length)
    dec.step(tokens[:, 0])
    state = dec.state_bytes()
    for t in range(1, length):
        dec.step(tokens[:, t])
        state = max(state, dec.state_bytes())
        rss = max(rss, resident_kb())
    return {"state_bytes": state, "rss_growth_kb": rss - rss0}


def resident_kb() -> int:
    """Current resident memory (/proc/self/statm), not the peak: a forked child inherits its
    parent's peak, and a peak counts memory freed before the decode."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def check(args) -> None:
    """Both decoders give their model's full-forward logits (a short sequence)."""
    tokens = torch.randint(0, args.vocab, (2, 48), generator=torch.Generator().manual_seed(2))
    for kind, (arch, cls) in DECODERS.items():
        model = make(arch, args)
        dec = cls(model, 2, 48)
        steps = torch.stack([dec.step(tokens[:, t]) for t in range(48)], 1)
        with torch.no_grad():
            full = model(tokens)
        err = (steps - full).abs().max().item()
        assert err < 1e-4, f"{kind} decoding differs from the full forward by {err}"


def in_child(kind: str, length: int, args) -> dict:
    """:func:`decode` in a forked child (torch already imported): its own peak RSS."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.write(write, json.dumps(decode(kind, length, args)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return json.loads(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=16)
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # glibc would serve big tensors from heap pages that earlier frees left resident, so
        # the RSS would not move: every allocation over 64 KB gets fresh pages instead
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    torch.set_num_threads(1)
    check(args)
    rows = []
    for length in LENGTHS:
        row = {"length": length}
        for kind in DECODERS:
            row[kind] = in_child(kind, length, args)
        rows.append(row)
    print(f"d_model {args.d_model}, {args.layers} layers, {args.heads} heads, batch "
          f"{args.batch}, float32; state = bytes carried between steps (max over the run), "
          "RSS = growth of resident memory over the decode (max of samples)")
    print(f"{'length':>7} {'aaren state':>12} {'softmax state':>14} {'ratio':>8} "
          f"{'aaren RSS':>10} {'softmax RSS':>12}")
    for r in rows:
        a, s = r["aaren"], r["softmax"]
        print(f"{r['length']:>7} {a['state_bytes'] / 1024:>9.1f} KB {s['state_bytes'] / 1024:>11.1f}"
              f" KB {s['state_bytes'] / a['state_bytes']:>7.0f}x {a['rss_growth_kb'] / 1024:>7.1f} MB"
              f" {s['rss_growth_kb'] / 1024:>9.1f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
