"""Greedy decoding of ``span`` answers batched over rows and lengths vs one row at a time.

The rows of the addition task's ``ood`` probe (operands of many lengths, so prompts and answers
differ per row) are decoded by one model three ways in the same run: all rows at once
(``greedy_decode`` with the rows' own starts and lengths, stopping at ``<eos>``) and each row
alone through the same function (both with the key/value cache of ``groklab.models.decode``),
then all rows through the full-forward loop without the cache. The outputs must be equal
(asserted); the script prints one JSON line with the times (medians of --rounds alternating
rounds), the speedup of batching (the
issue's target: >= 20x) and that of the cache. The model is the abacus presets' shape (2
blocks looped twice, d_model 64) with random weights: rows rarely write <eos> early, so every
answer is decoded to its full length.

    python bench/decode_batched.py [--rows 256] [--positional abacus] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from groklab.models import HookedTransformer, ModelConfig, decode
from groklab.tasks import make_task
from groklab.tasks.objectives import greedy_decode, span_bounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--positional", default="abacus")
    ap.add_argument("--eval-digits", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="medians over alternating rounds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = make_task("addition", max_digits=10, eval_digits=args.eval_digits, n_train=100,
                     n_test=args.rows)
    cfg = ModelConfig(n_layers=2, n_loops=2, loop_injection="add", d_model=64, n_heads=4,
                      positional=args.positional, abacus_max_offset=20).for_task(data)
    torch.manual_seed(0)
    model = HookedTransformer(cfg).eval()
    split = data.probes["ood"]
    start, length = span_bounds(split.targets)
    eos = data.vocab.id("<eos>")
    greedy_decode(model, split.inputs[:8], start[:8], length[:8], eos)  # warm up

    runs = {"batched": [], "single": [], "uncached": []}
    supported = decode.supported
    for _ in range(args.rounds):  # alternating, so load on the machine hits all three alike
        t = time.perf_counter()
        batched = greedy_decode(model, split.inputs, start, length, eos)
        runs["batched"].append(time.perf_counter() - t)
        t = time.perf_counter()
        single = torch.cat([greedy_decode(model, split.inputs[i : i + 1], start[i : i + 1],
                                          length[i : i + 1], eos) for i in range(len(split))])
        runs["single"].append(time.perf_counter() - t)
        assert torch.equal(batched, single), "batched decoding changed an output"
        decode.supported = lambda m: False  # the same batch, full-forward loop (no cache)
        t = time.perf_counter()
        uncached = greedy_decode(model, split.inputs, start, length, eos)
        runs["uncached"].append(time.perf_counter() - t)
        decode.supported = supported
        assert torch.equal(batched, uncached), "the key/value cache changed an output"
    t_batched, t_single, t_uncached = (statistics.median(runs[k]) for k in runs)
    print(json.dumps({"rows": len(split), "positional": args.positional,
                      "answer_tokens": [int(length.min()), int(length.max())],
                      "batched_s": round(t_batched, 3), "one_row_at_a_time_s": round(t_single, 3),
                      "speedup": round(t_single / t_batched, 1),
                      "batched_without_cache_s": round(t_uncached, 3),
                      "cache_speedup": round(t_uncached / t_batched, 1), "same_outputs": True,
                      "rounds": args.rounds, "threads": args.threads, "machine": platform.processor() or "cpu"}))


if __name__ == "__main__":
    main()
