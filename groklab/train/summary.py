"""The grokking summary of a run: when it memorized, when each split generalized, the delay."""

from __future__ import annotations

THRESHOLDS = (0.5, 0.9, 0.95, 0.99)
MEMORIZED = 0.99


def first_step(rows: list[dict], key: str, threshold: float) -> int | None:
    for row in rows:
        v = row.get(key)
        if v is not None and v >= threshold:
            return int(row["step"])
    return None


def summarize(rows: list[dict], splits: list[str], id_split: str | None,
              ood_split: str | None, metric: str = "acc", mem_split: str = "train") -> dict:
    """Summary from ``metrics.jsonl`` rows, read off the objective's headline ``metric``
    (``acc``: one answer or class per row; ``exact``: a whole answer span right).
    Memorization is ``mem_split`` reaching 0.99 (the task's choice: ``train``, or the trained
    inferred facts where the paper measures it so)."""
    if not rows:
        return {}
    last = rows[-1]
    if mem_split not in splits:
        mem_split = "train"
    mem = first_step(rows, f"{metric}/{mem_split}", MEMORIZED)
    # Every split, train included: a run whose training accuracy plateaus just under 0.99
    # still shows when it crossed 0.9 / 0.95.
    thresholds = {s: {str(t): first_step(rows, f"{metric}/{s}", t) for t in THRESHOLDS}
                  for s in splits}
    id95 = thresholds.get(id_split, {}).get("0.95") if id_split else None
    delay = None
    if mem is not None and id95 is not None:
        delay = round(id95 / max(mem, 1), 3)
    return {
        "steps": int(last["step"]),
        "metric": metric,
        "wall_time_s": round(float(last.get("time", 0.0)), 2),
        "memorization_step": mem,
        "memorization_split": mem_split,
        "id_split": id_split,
        "ood_split": ood_split,
        "generalization_step_id": id95,
        "generalization_step_ood": thresholds.get(ood_split, {}).get("0.95") if ood_split else None,
        "grokking_delay": delay,
        "thresholds": thresholds,
        "final": {s: last.get(f"{metric}/{s}") for s in splits},
        "final_loss": {s: last.get(f"loss/{s}") for s in splits},
        "best": {s: max(r.get(f"{metric}/{s}", 0.0) for r in rows) for s in splits},
        "final_metrics": {k: v for k, v in last.items() if "/" in k},
    }


def run_summary(run, rows: list[dict], status: str) -> dict:
    """``summary.json`` of a run (``groklab.train.loop.Run``): the grokking summary of its rows
    in the objective's headline metric, the task, where it ran, and the forecast."""
    import torch

    from groklab.train.forecast import summary_forecast

    d, metric = run.data, run.objective.headline
    summary = summarize(rows, list(run.probes), d.id_split, d.ood_split, metric=metric,
                        mem_split=d.memorization_split)
    summary.update(status=status, task=d.name, objective=run.objective.describe(),
                   task_info={k: v for k, v in d.info.items() if isinstance(v, (int, float, str))},
                   device=str(run.device), threads=torch.get_num_threads())
    wall = summary.get("wall_time_s")
    summary["steps_per_s"] = round(summary["steps"] / wall, 3) if wall else None
    summary["forecast"] = summary_forecast(rows, d.id_split, run.cfg.train.steps, metric=metric)
    return summary
