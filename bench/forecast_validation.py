"""Does the early forecast of grokking hold up? A sweep, forecasts at a fixed early step, outcomes.

Question: from the metrics rows of the first ``--at`` steps of a run (train loss, weight norm,
train / test loss and accuracy), can :func:`groklab.train.forecast.forecast` tell whether the
run will reach ``--threshold`` test accuracy within its ``--steps`` budget, and roughly when?

Method: modular addition mod ``--p`` with a small Nanda-style one-layer transformer (no
LayerNorm, ReLU, full batch, AdamW betas 0.9/0.98, Nanda init), a grid of learning rate x weight
decay x training fraction (36 runs by default), each trained with ``groklab.train`` for the
whole budget. The forecast at step ``--at`` sees only the rows logged up to that step, exactly
what the progress bar sees at that moment. Honesty: the runs are split in two halves by a
seeded shuffle; the forecaster's one free constant (``ForecastRule.k``) is fitted on one half
(grid search) and scored on the other, and then the halves swap (2-fold). The shipped default
is scored on all runs too, as a rule stated in advance.

Reported: accuracy of the grok / no-grok call ("wait" counts as no-grok), and for runs that
grokked later than the forecast step and were called "grok", the error of the forecast step
(median and max of |log2(forecast / actual)|; runs that had already grokked are not counted).

    python bench/forecast_validation.py --out runs/forecast-validation   # trains missing runs
    python bench/forecast_validation.py --out runs/forecast-validation --no-train  # score only

Runs are cached under ``--out`` (one run directory each); a rerun trains only what is missing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from groklab.config import load_config
from groklab.rundir import RunDir
from groklab.train.forecast import DEFAULT_RULE, ForecastRule, forecast, steps_to
from groklab.train.loop import Run

LRS = (1e-3, 2e-3, 4e-3)
WDS = (0.1, 0.3, 1.0, 3.0)
FRACTIONS = (0.3, 0.5, 0.7)


def run_sets(p: int, steps: int, lr: float, wd: float, frac: float) -> list[str]:
    return [
        f"task.p={p}", f"task.train_fraction={frac}", "model.d_vocab_out=-1",
        "model.d_model=64", "model.d_mlp=256", "model.n_heads=4",
        f"train.lr={lr}", f"train.weight_decay={wd}", f"train.steps={steps}",
        "train.loss_dtype=fp32", "train.eval_every=50", "train.eval_per_decade=10",
        "train.checkpoint_every=0", "train.checkpoint_per_decade=0", f"train.resume_every={steps}",
    ]


def grid():
    return [dict(lr=lr, wd=wd, frac=f) for lr, wd, f in itertools.product(LRS, WDS, FRACTIONS)]


def train_missing(out: Path, p: int, steps: int) -> None:
    torch.set_num_threads(1)  # the runs are small; one thread wastes nothing on a shared box
    for i, g in enumerate(grid()):
        d = out / f"run{i:02d}"
        rd = RunDir(d)
        if (d / "summary.json").exists() and json.loads((d / "summary.json").read_text()).get(
                "status") == "completed":
            continue
        if d.exists():  # a half-finished run from an earlier session: start it over
            import shutil
            shutil.rmtree(d)
        t = time.perf_counter()
        cfg = load_config("modular-nanda", None, run_sets(p, steps, g["lr"], g["wd"], g["frac"]))
        Run.start(cfg, d, command="bench/forecast_validation.py").train()
        acc = rd.read_metrics()[-1]["acc/test"]
        print(f"run{i:02d} {g} test {acc:.3f} ({time.perf_counter() - t:.0f}s)", flush=True)


def load(out: Path, steps: int):
    runs = []
    for i, g in enumerate(grid()):
        d = out / f"run{i:02d}"
        if not (d / "summary.json").exists():
            continue
        rows = RunDir(d).read_metrics()
        if not rows or rows[-1]["step"] < steps:
            continue
        runs.append({"i": i, **g, "rows": rows})
    return runs


def score(runs, rule: ForecastRule, at: int, steps: int, threshold: float) -> dict:
    """Accuracy of the call and log2 error of the step forecast over ``runs``."""
    calls, errs, table = [], [], []
    for r in runs:
        actual = steps_to(r["rows"], "test", threshold)
        early = [row for row in r["rows"] if row["step"] <= at]
        f = forecast(early, split="test", threshold=threshold, total=steps, rule=rule)
        will = f.call in ("grok", "grokked")
        grokked = actual is not None
        calls.append(will == grokked)
        err = None
        if grokked and f.call == "grok":  # a forecast, not an observation
            err = abs(math.log2(max(f.step, 1) / max(actual, 1)))
            errs.append(err)
        table.append((r, f, actual, err))
    errs_sorted = sorted(errs)
    return {
        "n": len(runs),
        "call_accuracy": sum(calls) / max(len(calls), 1),
        "n_grokked": sum(t[2] is not None for t in table),
        "step_err_median_log2": errs_sorted[len(errs) // 2] if errs else None,
        "step_err_mean_log2": sum(errs) / len(errs) if errs else None,
        "step_err_max_log2": max(errs) if errs else None,
        "step_within_2x": sum(e <= 1 for e in errs) / len(errs) if errs else None,
        "table": table,
    }


def fit(runs, at: int, steps: int, threshold: float) -> ForecastRule:
    """Grid search of the rule's one constant ``k`` on ``runs``: best call accuracy, then the
    smallest mean step error."""
    best, best_key = None, None
    for k in DEFAULT_RULE.grid_k:
        rule = replace(DEFAULT_RULE, k=k)
        s = score(runs, rule, at, steps, threshold)
        key = (s["call_accuracy"], -(s["step_err_mean_log2"] or 9.0))
        if best_key is None or key > best_key:
            best, best_key = rule, key
    return best


def fmt(x, nd=2):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/forecast-validation")
    ap.add_argument("--p", type=int, default=47)
    ap.add_argument("--steps", type=int, default=3000, help="budget of every run")
    ap.add_argument("--at", type=int, default=300, help="the step at which the forecast is made")
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--no-train", action="store_true", help="score the cached runs only")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fit / evaluation split")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not a.no_train:
        train_missing(out, a.p, a.steps)
    runs = load(out, a.steps)
    if len(runs) < 4:
        print(f"only {len(runs)} finished runs under {out}; train them first", file=sys.stderr)
        return 2
    order = list(range(len(runs)))
    random.Random(a.seed).shuffle(order)
    halves = [[runs[j] for j in order[0::2]], [runs[j] for j in order[1::2]]]

    print(f"# forecast validation: modular + mod {a.p}, {len(runs)} runs of {a.steps} steps, "
          f"forecast at step {a.at}, grok = test acc >= {a.threshold} within the budget")
    results = {}
    for k, (fit_half, eval_half) in enumerate([(halves[0], halves[1]), (halves[1], halves[0])]):
        rule = fit(fit_half, a.at, a.steps, a.threshold)
        s = score(eval_half, rule, a.at, a.steps, a.threshold)
        results[f"fold{k}"] = (rule, s)
    prior = score(runs, DEFAULT_RULE, a.at, a.steps, a.threshold)
    k_all = fit(runs, a.at, a.steps, a.threshold).k

    print("\n| run | lr | wd | frac | actual step | call at step %d | forecast step | log2 err |" % a.at)
    print("|---|---|---|---|---|---|---|---|")
    by_i = {}
    for k in ("fold0", "fold1"):
        for r, f, actual, err in results[k][1]["table"]:
            by_i[r["i"]] = (r, f, actual, err)
    for i in sorted(by_i):
        r, f, actual, err = by_i[i]
        print(f"| {i:02d} | {r['lr']:g} | {r['wd']:g} | {r['frac']:g} | {fmt(actual)} | "
              f"{f.call} | {fmt(f.step)} | {fmt(err)} |")
    print("\n(held-out half of each fold; the constants were fitted on the other half)\n")
    print("| scored on | fitted constants | runs | grokked | call accuracy | "
          "median / mean log2 step err | within 2x | max log2 err |")
    print("|---|---|---|---|---|---|---|---|")
    for k, (rule, s) in results.items():
        print(f"| {k} held-out | k {rule.k:g} | {s['n']} | "
              f"{s['n_grokked']} | {s['call_accuracy']:.2f} | {fmt(s['step_err_median_log2'])} / "
              f"{fmt(s['step_err_mean_log2'])} | "
              f"{fmt(s['step_within_2x'])} | {fmt(s['step_err_max_log2'])} |")
    print(f"| all runs, shipped default | k {DEFAULT_RULE.k:g} | {prior['n']} | {prior['n_grokked']} | "
          f"{prior['call_accuracy']:.2f} | {fmt(prior['step_err_median_log2'])} / "
          f"{fmt(prior['step_err_mean_log2'])} | "
          f"{fmt(prior['step_within_2x'])} | {fmt(prior['step_err_max_log2'])} |")
    n = sum(results[k][1]["n"] for k in results)
    acc = sum(results[k][1]["call_accuracy"] * results[k][1]["n"] for k in results) / n
    base = 1 - prior["n_grokked"] / prior["n"]
    trivial = sum(1 for r, f, _, _ in prior["table"] if f.call == "grokked")
    print(f"\nheld-out call accuracy over both folds: {acc:.2f} ({n} runs); always calling "
          f"'no_grok' would score {base:.2f}; {trivial} runs had already grokked at step {a.at}")
    print(f"k fitted on all {len(runs)} runs: {k_all:g} (in-sample; the shipped default is "
          f"{DEFAULT_RULE.k:g})")
    summary = {k: {"rule": asdict(rule), **{kk: v for kk, v in s.items() if kk != "table"}}
               for k, (rule, s) in results.items()}
    (out / "validation.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
