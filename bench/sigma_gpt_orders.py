"""sigma-GPT against a plain GPT on the same task and budget, scored left to right and in random
orders, in and beyond the training lengths.

Question: what does order-agnostic training (sigma-GPT, Pannatier et al. 2024) cost or buy on
an algorithmic span task, left to right and in random orders, and does it change length
generalization?

Method: three runs of one task, model size, seed, optimizer and number of steps, one after the
other in this process (``groklab.train`` runs in a temporary directory):

    gpt          architecture=transformer (learned absolute positions)
    sigma L2R    architecture=sigma_gpt, order=left_to_right: the double positional encoding,
                 trained left to right only (the same model, without the random orders)
    sigma rand   architecture=sigma_gpt, order=random: each training row's prompt and answer
                 each in a fresh random order (the reference's order_mask)

Each final model is scored on the task's probes: exact match (the whole answer right: greedy
decoding in that order) and per-token accuracy, left to right and in one random order per row
(a fixed seed; the same orders for both sigma models). The plain GPT has no way to be told
which position comes next, so it has no random-order score. The default task is ``addition``
(reversed digits, operands of 1..max digits; ``ood``: both operands longer); ``--task strings``
runs the reverse-a-string task instead (``test_ood``: longer strings). For the sigma models it
also prints how many forward passes burst decoding (``any_order.burst_decode``) needs per row,
left to right and in a random order, against the answer's token count.

    python bench/sigma_gpt_orders.py                         # addition, ~10 min on a shared CPU
    python bench/sigma_gpt_orders.py --task strings --steps 1500
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from groklab.config import load_config
from groklab.tasks.any_order import (
    EVAL_SEED,
    AnyOrder,
    burst_decode,
    make_order,
    scored_tokens,
)
from groklab.train.loop import Run

TASKS = {
    "addition": ["task.max_digits={digits}", "task.eval_digits={eval_digits}",
                 "task.n_train=20000", "task.n_test=500"],
    "strings": ["task.max_len={digits}", "task.ood_extra={extra}", "task.n_train=5000",
                "task.n_test=500"],
}
MODELS = {
    "gpt": ["model.architecture=transformer"],
    "sigma L2R": ["model.architecture=sigma_gpt", "model.order=left_to_right"],
    "sigma rand": ["model.architecture=sigma_gpt", "model.order=random"],
}


def train_and_score(task: str, sets: list[str]) -> dict:
    cfg = load_config(task, None, sets)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run.start(cfg, Path(tmp) / "run")
        t0 = time.perf_counter()
        run.train()
        seconds = time.perf_counter() - t0
        run.model.eval()
        scorer = run.objective if isinstance(run.objective, AnyOrder) else None
        scores = {}
        for name, split in run.data.probes.items():
            obj = scorer or run.objective
            scores[name] = obj.evaluate(run.model, split, 2048, run.eval_ce, run.autocast)
            if scorer is not None:  # forward passes of burst decoding, per row, vs tokens
                scores[name]["tokens"] = scored_tokens(split.targets).sum(1).float().mean().item()
                for label, shuffle in (("l2r", False), ("rand", True)):
                    order = make_order(split.targets, shuffle, shuffle,
                                       torch.Generator().manual_seed(EVAL_SEED))
                    _, passes = burst_decode(run.model, split.inputs, split.targets, order)
                    scores[name][f"passes_{label}"] = passes.float().mean().item()
    return {"seconds": round(seconds, 1), "scores": scores}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="addition")
    ap.add_argument("--digits", type=int, default=4, help="longest training operand / string")
    ap.add_argument("--eval-digits", type=int, default=6, help="addition: longest ood operand")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    common = [s.format(digits=args.digits, eval_digits=args.eval_digits, extra=2)
              for s in TASKS[args.task]]
    common += [f"model.d_model={args.d_model}", f"model.n_layers={args.layers}",
               "model.n_heads=4", f"train.steps={args.steps}", f"train.lr={args.lr}",
               "train.weight_decay=0.1", "train.batch_size=256", "train.warmup_steps=100",
               f"train.seed={args.seed}", f"task.seed={args.seed}", "train.eval_every=100000",
               "train.eval_per_decade=0", "train.checkpoint_every=0",
               "train.checkpoint_per_decade=0", "train.resume_every=100000"]
    results = {}
    for name, sets in MODELS.items():
        print(f"training {name} ...", file=sys.stderr, flush=True)
        results[name] = train_and_score(args.task, common + sets)
    probes = list(next(iter(results.values()))["scores"])
    print(f"\n{args.task}: {args.steps} steps, d_model {args.d_model}, {args.layers} layers, "
          f"seed {args.seed}; exact match (per-token accuracy), left to right | random order")
    head = f"{'model':<11} {'s':>6}  " + "  ".join(f"{p + ' L2R':>15} {p + ' rand':>15}"
                                                   for p in probes)
    print(head)
    for name, r in results.items():
        cells = []
        for p in probes:
            s = r["scores"][p]
            cells.append(f"{s['exact']:>6.3f} ({s['acc']:.3f})")
            cells.append(f"{s['exact_random']:>6.3f} ({s['acc_random']:.3f})"
                         if "exact_random" in s else f"{'-':>15}")
        print(f"{name:<11} {r['seconds']:>6.0f}  " + "  ".join(f"{c:>15}" for c in cells))
    print("\nburst decoding (any_order.burst_decode, same tokens as one per pass): forward "
          "passes per row, left to right | random order, against answer tokens")
    for name, r in results.items():
        cells = [f"{p}: {r['scores'][p]['passes_l2r']:.2f} | {r['scores'][p]['passes_rand']:.2f}"
                 f" of {r['scores'][p]['tokens']:.1f}" for p in probes
                 if "passes_l2r" in r["scores"][p]]
        if cells:
            print(f"{name:<11} " + "   ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=1))


if __name__ == "__main__":
    main()
