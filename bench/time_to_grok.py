"""Time to grok: groklab's fastest recipes against the canonical and tuned-AdamW ones, side by side.

Question: how much sooner does a run reach its generalization threshold with groklab's ``*-fast``
presets than with the canonical recipe and with a tuned plain AdamW (the fair baseline), on the
same machine, data and model?

Method: every recipe is a ``groklab.train`` run of the same task and model (only ``train.*``
differs), trained until the threshold split first reaches the threshold at an evaluation (or a
step cap), in one process, one after another. Evaluations are on the same schedule for every
recipe of a task, and their cost is in the wall time. Reported per recipe: steps and wall seconds
to the threshold, ms per step, and the ratios against the fastest recipe. A recipe that hits its
cap is reported as "> N steps"; for the canonical modular recipe a step-time-based extrapolation
to the published ~14k steps (anchors.md section 2) is printed as well, labelled as such.

    python bench/time_to_grok.py                        # both tasks (composition: ~10 min+)
    python bench/time_to_grok.py --task modular --canonical-steps 2000

Tasks and recipes:
  modular      (a + b) mod 113, 30% train, the Nanda one-layer transformer (``modular-nanda``),
               to 0.99 test accuracy:
                 canonical      modular-nanda (AdamW lr 1e-3, wd 1, betas 0.9/0.98)
                 AdamW tuned    lr 3e-3, wd 5 (tasks.md section 6; ~450 steps there)
                 AdamW retuned  the best plain AdamW found while tuning the fast preset
                 modular-fast   groklab's fastest recipe
  composition  ``composition-small`` to 0.95 test_id:
                 AdamW best     composition-small (lr 1e-3, wd 1.0; ~3.5k steps in tasks.md)
                 composition-fast
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

CANONICAL_PUBLISHED_STEPS = 14_000  # end of Nanda et al.'s cleanup phase (anchors.md section 2)


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
    if tc.lr_schedule == "constant" and tc.weight_decay_schedule == "constant":
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


def fmt_steps(r: dict) -> str:
    return str(r["steps"]) if r["steps"] is not None else f"> {r['steps_run']}"


def fmt_wall(r: dict) -> str:
    return f"{r['wall_s']:.1f}" if r["wall_s"] is not None else f"> {r['wall_run_s']:.1f}"


def table(task: str, results: dict[str, dict], fast: str, extrapolate: bool) -> list[str]:
    f = results[fast]
    out = [f"\n## {task}\n",
           "| recipe | steps to threshold | wall s to threshold | ms/step | memorized at | "
           "steps / fast | wall / fast |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if r["steps"] is not None and f["steps"]:
            sr, wr = f"{r['steps'] / f['steps']:.1f}x", f"{r['wall_s'] / f['wall_s']:.1f}x"
        elif f["steps"]:
            sr = f"> {r['steps_run'] / f['steps']:.1f}x"
            wr = f"> {r['wall_run_s'] / f['wall_s']:.1f}x"
        else:
            sr = wr = "-"
        out.append(f"| {name} | {fmt_steps(r)} | {fmt_wall(r)} | {r['ms_per_step']} | "
                   f"{r['memorized_at']} | {sr} | {wr} |")
    can = results.get("canonical")
    if extrapolate and can is not None and can["steps"] is None and f["wall_s"]:
        est = can["ms_per_step"] / 1000 * CANONICAL_PUBLISHED_STEPS
        out.append(f"\nEXTRAPOLATED, not measured: canonical at its measured {can['ms_per_step']} "
                   f"ms/step x {CANONICAL_PUBLISHED_STEPS} published steps = {est:.0f} s, "
                   f"{est / f['wall_s']:.0f}x the wall time of {fast}.")
    return out


def modular(a) -> list[str]:
    evals = ["train.eval_every=10", "train.eval_per_decade=10", "train.train_probe_size=1000",
             "train.checkpoint_every=0", "train.checkpoint_per_decade=0",
             "train.resume_every=100000"]
    recipes = {
        "canonical": ("modular-nanda", [], a.canonical_steps),
        "AdamW tuned (tasks.md: lr 3e-3, wd 5)": (
            "modular-nanda", ["train.lr=3e-3", "train.weight_decay=5"], a.cap),
        "AdamW retuned (lr 6e-3, wd 5, betas 0.9/0.9)": (
            "modular-nanda", ["train.lr=6e-3", "train.weight_decay=5", "train.betas=[0.9,0.9]"],
            a.cap),
        "modular-fast": ("modular-fast", [], a.cap),
    }
    results = {}
    for name, (preset, sets, cap) in recipes.items():
        results[name] = run_to_threshold(preset, sets, "test", 0.99, cap, evals)
        print(f"  {name}: {fmt_steps(results[name])} steps, {fmt_wall(results[name])} s",
              file=sys.stderr, flush=True)
    return table("modular addition mod 113, 30% train, Nanda 1-layer: steps / wall time to "
                 "0.99 test accuracy", results, "modular-fast", extrapolate=True), results


def composition(a) -> list[str]:
    evals = ["train.eval_every=100", "train.eval_per_decade=4", "train.checkpoint_every=0",
             "train.checkpoint_per_decade=0", "train.resume_every=100000"]
    recipes = {
        "AdamW best (composition-small: lr 1e-3, wd 1)": ("composition-small", [],
                                                          a.composition_cap),
        "composition-fast": ("composition-fast", [], a.composition_cap),
    }
    results = {}
    for name, (preset, sets, cap) in recipes.items():
        results[name] = run_to_threshold(preset, sets, "test_id", 0.95, cap, evals)
        print(f"  {name}: {fmt_steps(results[name])} steps, {fmt_wall(results[name])} s",
              file=sys.stderr, flush=True)
    return table("composition-small: steps / wall time to 0.95 test_id", results,
                 "composition-fast", extrapolate=False), results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=["modular", "composition", "both"], default="both")
    ap.add_argument("--canonical-steps", type=int, default=2000,
                    help="cap of the canonical modular run (it needs ~14k steps to grok)")
    ap.add_argument("--cap", type=int, default=3000, help="cap of the other modular recipes")
    ap.add_argument("--composition-cap", type=int, default=6000)
    ap.add_argument("--json", help="also write every result (with curves) to this file")
    a = ap.parse_args(argv)
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
    if a.json:
        Path(a.json).write_text(json.dumps(everything, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
