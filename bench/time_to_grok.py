"""Time to grok: groklab's fastest recipes against the canonical and tuned-AdamW ones, side by side.

Question: how much sooner does a run reach its generalization threshold with groklab's ``*-fast``
presets than with the canonical recipe and with a tuned plain AdamW (the fair baseline), on the
same machine, data and model?

Method: every recipe is a ``groklab.train`` run of the same task and model (only ``train.*``
differs), trained until the threshold split first reaches the threshold at an evaluation (or a
step cap), in one process, one after another. Evaluations are on the same schedule for every
recipe of a task, and their cost is in the wall time. Each recipe runs with several seeds
(``task.seed`` = ``train.seed``: another split and another init); reported are the steps of
every seed, the median steps and wall seconds (a capped seed counts as its cap, and the median is
then marked as a lower bound "> N"), ms per step, the step at which the training split was
memorized (train accuracy 0.99), and the ratios of the medians against the fast preset. The
canonical modular recipe runs once, capped (``--canonical-steps``); its time to grok is then
also extrapolated from its measured step time to the published ~14k steps (docs/anchors.md
section 2), labelled as an extrapolation.

    python bench/time_to_grok.py                        # both tasks (composition: ~15 min)
    python bench/time_to_grok.py --task modular --canonical-steps 2000 --seeds 0,1,2
    python bench/time_to_grok.py --task ablations   # each accelerator on the tuned AdamW
    python bench/time_to_grok.py --task grokfast    # Grokfast on the canonical recipe

Tasks and recipes:
  modular      (a + b) mod 113, 30% train, the Nanda one-layer transformer (``modular-nanda``),
               to 0.99 test accuracy:
                 canonical      modular-nanda (AdamW lr 1e-3, wd 1, betas 0.9/0.98)
                 AdamW tuned    lr 3e-3, wd 5 (docs/tasks.md section 6.1; ~450 steps there)
                 AdamW retuned  the best plain AdamW found while tuning the fast preset
                 modular-fast   groklab's fastest recipe
  composition  ``composition-small`` to 0.95 test_id:
                 AdamW best     composition-small (lr 1e-3, wd 1.0; ~3.5k steps in docs/tasks.md
                                section 1.6)
                 composition-fast
  ablations    the modular task, the tuned AdamW (lr 3e-3, wd 5) alone and with one
               accelerator added at its published defaults: Grokfast EMA (alpha 0.98,
               lambda 2), Grokfast MA (window 100, lambda 5), StableMax, perpendicular AdamW
               (with wd 0 too, as Prieto et al. run it), and the weight-decay warmup of
               modular-fast. This is the evidence for what the fast presets use.
  grokfast     the modular task, the canonical recipe (lr 1e-3, wd 1: the slow setting that
               Grokfast was published on) alone and with Grokfast EMA / MA, seed 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from groklab.config import load_config
from groklab.train.loop import Run

CANONICAL_PUBLISHED_STEPS = 14_000  # end of Nanda et al.'s cleanup (docs/anchors.md section 2)


# Every modular recipe is evaluated on the same schedule (every 10 steps, 1,000 train rows);
# no checkpoints: their cost is not part of the recipe.
MODULAR_EVALS = ["train.eval_every=10", "train.eval_per_decade=10", "train.train_probe_size=1000",
                 "train.checkpoint_every=0", "train.checkpoint_per_decade=0",
                 "train.resume_every=100000"]


class _Reached(Exception):
    pass


def run_to_threshold(preset: str, sets: list[str], split: str, threshold: float, cap: int,
                     eval_sets: list[str]) -> dict:
    """Train until ``acc/<split>`` >= threshold at an evaluation, or ``cap`` steps.

    A recipe whose schedules do not depend on its length runs with ``train.steps = cap``; one
    with a cosine schedule keeps its own length (part of the recipe) and is stopped at the cap.
    """
    cfg = load_config(preset, None, [*sets, *eval_sets])
    tc = cfg.train
    if tc.lr_schedule == "constant":
        tc.steps = cap
    with tempfile.TemporaryDirectory() as tmp:
        run = Run.start(cfg, Path(tmp) / "run")
        log_eval = run.log_eval
        hit: dict = {}

        def log_and_stop(lr):
            row = log_eval(lr)
            if row.get(f"acc/{split}", 0.0) >= threshold:
                hit.update(row)
                raise _Reached
            if row["step"] >= cap:
                raise _Reached
            return row

        run.log_eval = log_and_stop
        t0 = time.perf_counter()
        try:
            run.train()
        except _Reached:
            pass
        wall = time.perf_counter() - t0
        rows = run.dir.read_metrics()
    mem = next((r["step"] for r in rows if r.get("acc/train", 0) >= 0.99), None)
    last = rows[-1]
    return {
        "steps": hit.get("step"), "wall_s": round(wall, 2) if hit else None,
        "steps_run": last["step"], "wall_run_s": round(wall, 2),
        "ms_per_step": round(1000 * wall / max(last["step"], 1), 1),
        "memorized_at": mem, "final_acc": last.get(f"acc/{split}"),
        "curve": [(r["step"], r.get("acc/train"), r.get(f"acc/{split}")) for r in rows],
    }


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def run_recipe(preset: str, sets: list[str], seeds: list[int], split: str, threshold: float,
               cap: int, eval_sets: list[str]) -> dict:
    """One recipe over seeds (``task.seed`` = ``train.seed`` = s: another split and init)."""
    per = [run_to_threshold(preset, [*sets, f"task.seed={s}", f"train.seed={s}"], split,
                            threshold, cap, eval_sets) for s in seeds]
    hits = [r for r in per if r["steps"] is not None]
    # Median over seeds, a miss counting as its cap (so a miss can only raise the median).
    steps = _median([r["steps"] if r["steps"] is not None else r["steps_run"] for r in per])
    wall = _median([r["wall_s"] if r["wall_s"] is not None else r["wall_run_s"] for r in per])
    return {"seeds": seeds, "per_seed": per, "hits": len(hits), "median_steps": steps,
            "median_wall_s": round(wall, 2), "all_hit": len(hits) == len(per),
            "ms_per_step": round(_median([r["ms_per_step"] for r in per]), 1)}


def _steps_cell(r: dict) -> str:
    return ", ".join(str(x["steps"]) if x["steps"] is not None else f"> {x['steps_run']}"
                     for x in r["per_seed"])


def table(title: str, results: dict[str, dict], fast: str, extrapolate: bool) -> list[str]:
    f = results[fast]
    out = [f"\n## {title}\n", f"ratios against: {fast}\n",
           "| recipe | steps to threshold (per seed) | median steps | median wall s | ms/step | "
           "memorized at | steps / ref | wall / ref |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        gt = "" if r["all_hit"] else "> "  # a capped run makes the median a lower bound
        ratio_s = f"{gt}{r['median_steps'] / f['median_steps']:.1f}x"
        ratio_w = f"{gt}{r['median_wall_s'] / f['median_wall_s']:.1f}x"
        mem = ", ".join(str(x["memorized_at"]) for x in r["per_seed"])
        out.append(f"| {name} | {_steps_cell(r)} | {gt}{r['median_steps']:g} | "
                   f"{gt}{r['median_wall_s']:.1f} | {r['ms_per_step']} | {mem} | {ratio_s} | "
                   f"{ratio_w} |")
    can = results.get("canonical")
    if extrapolate and can is not None and not can["all_hit"]:
        est = can["ms_per_step"] / 1000 * CANONICAL_PUBLISHED_STEPS
        out.append(f"\nEXTRAPOLATED, not measured: the canonical recipe at its measured "
                   f"{can['ms_per_step']} ms/step x {CANONICAL_PUBLISHED_STEPS:,} published steps "
                   f"(docs/anchors.md section 2) = {est:.0f} s, "
                   f"{est / f['median_wall_s']:.0f}x the median wall time of {fast}.")
    return out


def modular(a) -> tuple[list[str], dict]:
    recipes = {
        "canonical": ("modular-nanda", [], a.canonical_steps, [0]),
        "AdamW tuned (docs/tasks.md: lr 3e-3, wd 5)": (
            "modular-nanda", ["train.lr=3e-3", "train.weight_decay=5"], a.cap, a.seeds),
        "AdamW retuned (lr 6e-3, wd 5, betas 0.9/0.9)": (
            "modular-nanda", ["train.lr=6e-3", "train.weight_decay=5", "train.betas=[0.9,0.9]"],
            a.cap, a.seeds),
        "modular-fast": ("modular-fast", [], a.cap, a.seeds),
    }
    results = {}
    for name, (preset, sets, cap, seeds) in recipes.items():
        results[name] = run_recipe(preset, sets, seeds, "test", 0.99, cap, MODULAR_EVALS)
        print(f"  {name}: {_steps_cell(results[name])} steps", file=sys.stderr, flush=True)
    return table("modular addition mod 113, 30% train, Nanda 1-layer: to 0.99 test accuracy",
                 results, "modular-fast", extrapolate=True), results


def composition(a) -> tuple[list[str], dict]:
    evals = ["train.eval_every=100", "train.eval_per_decade=4", "train.checkpoint_every=0",
             "train.checkpoint_per_decade=0", "train.resume_every=100000"]
    recipes = {
        "canonical (the paper's lr 1e-4, wd 0.1)": (
            "composition-small", ["train.lr=1e-4", "train.weight_decay=0.1"],
            a.composition_canonical_steps, a.composition_seeds[:1]),
        "AdamW best (composition-small: lr 1e-3, wd 1)": (
            "composition-small", [], a.composition_cap, a.composition_seeds),
        "composition-fast": ("composition-fast", [], a.composition_cap, a.composition_seeds),
    }
    results = {}
    for name, (preset, sets, cap, seeds) in recipes.items():
        results[name] = run_recipe(preset, sets, seeds, "test_id", 0.95, cap, evals)
        print(f"  {name}: {_steps_cell(results[name])} steps", file=sys.stderr, flush=True)
    return table("composition-small: to 0.95 test_id", results, "composition-fast",
                 extrapolate=False), results


def ablations(a) -> tuple[list[str], dict]:
    base = ["train.lr=3e-3", "train.weight_decay=5"]
    recipes = {
        "AdamW tuned (lr 3e-3, wd 5)": [],
        "+ Grokfast EMA": ["train.grokfast=ema"],
        "+ Grokfast MA": ["train.grokfast=ma"],
        "+ StableMax": ["train.loss=stablemax"],
        "⊥AdamW": ["train.optimizer=ortho_adamw"],
        "⊥AdamW, wd 0": ["train.optimizer=ortho_adamw", "train.weight_decay=0"],
        "+ wd warmup 100": ["train.weight_decay_warmup_steps=100"],
    }
    results = {}
    for name, extra in recipes.items():
        results[name] = run_recipe("modular-nanda", [*base, *extra], a.seeds, "test", 0.99,
                                   a.ablation_cap, MODULAR_EVALS)
        print(f"  {name}: {_steps_cell(results[name])} steps", file=sys.stderr, flush=True)
    return table("accelerators on the tuned AdamW, modular addition mod 113: to 0.99 test",
                 results, "AdamW tuned (lr 3e-3, wd 5)", extrapolate=False), results


def grokfast_on_canonical(a) -> tuple[list[str], dict]:
    recipes = {
        "canonical": [],
        "canonical + Grokfast EMA": ["train.grokfast=ema"],
        "canonical + Grokfast MA": ["train.grokfast=ma"],
    }
    results = {}
    for name, extra in recipes.items():
        results[name] = run_recipe("modular-nanda", extra, [0], "test", 0.99, a.canonical_steps,
                                   MODULAR_EVALS)
        print(f"  {name}: {_steps_cell(results[name])} steps", file=sys.stderr, flush=True)
    return table("Grokfast on the canonical recipe, modular addition mod 113: to 0.99 test",
                 results, "canonical", extrapolate=False), results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=["modular", "composition", "both", "ablations", "grokfast"],
                    default="both")
    ap.add_argument("--canonical-steps", type=int, default=8000,
                    help="cap of the canonical modular run (~6k steps to 0.99 here)")
    ap.add_argument("--cap", type=int, default=3000, help="cap of the other modular recipes")
    ap.add_argument("--seeds", default="0,1,2,3,4",
                    help="modular seeds (task and train seed)")
    ap.add_argument("--ablation-cap", type=int, default=800)
    ap.add_argument("--composition-cap", type=int, default=6000)
    ap.add_argument("--composition-canonical-steps", type=int, default=3000,
                    help="cap of the paper's recipe on composition-small (< 0.1 test_id at 20k)")
    ap.add_argument("--composition-seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: leave torch's default, e.g. OMP_NUM_THREADS)")
    ap.add_argument("--json", help="also write every result (with curves) to this file")
    a = ap.parse_args(argv)
    a.seeds = [int(x) for x in a.seeds.split(",")]
    a.composition_seeds = [int(x) for x in a.composition_seeds.split(",")]
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"# time to grok: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; one process, recipes run one after "
          "another")
    everything = {}
    if a.task in ("modular", "both"):
        lines, everything["modular"] = modular(a)
        print("\n".join(lines), flush=True)
    if a.task in ("composition", "both"):
        lines, everything["composition"] = composition(a)
        print("\n".join(lines), flush=True)
    if a.task == "ablations":
        lines, everything["ablations"] = ablations(a)
        print("\n".join(lines), flush=True)
    if a.task == "grokfast":
        lines, everything["grokfast"] = grokfast_on_canonical(a)
        print("\n".join(lines), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(everything, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
