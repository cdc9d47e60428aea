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
              ood_split: str | None) -> dict:
    """Summary from ``metrics.jsonl`` rows (``acc/<split>`` keys)."""
    if not rows:
        return {}
    last = rows[-1]
    mem = first_step(rows, "acc/train", MEMORIZED)
    # Every split, train included: a run whose training accuracy plateaus just under 0.99
    # still shows when it crossed 0.9 / 0.95.
    thresholds = {s: {str(t): first_step(rows, f"acc/{s}", t) for t in THRESHOLDS} for s in splits}
    id95 = thresholds.get(id_split, {}).get("0.95") if id_split else None
    delay = None
    if mem is not None and id95 is not None:
        delay = round(id95 / max(mem, 1), 3)
    return {
        "steps": int(last["step"]),
        "wall_time_s": round(float(last.get("time", 0.0)), 2),
        "memorization_step": mem,
        "id_split": id_split,
        "ood_split": ood_split,
        "generalization_step_id": id95,
        "generalization_step_ood": thresholds.get(ood_split, {}).get("0.95") if ood_split else None,
        "grokking_delay": delay,
        "thresholds": thresholds,
        "final": {s: last.get(f"acc/{s}") for s in splits},
        "final_loss": {s: last.get(f"loss/{s}") for s in splits},
        "best": {s: max(r.get(f"acc/{s}", 0.0) for r in rows) for s in splits},
    }
