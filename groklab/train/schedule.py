"""When to evaluate, when to snapshot, and the learning rate at each step.

Grokking happens on a log scale: memorization in the first hundreds of steps, generalization
one or two decades later. Evaluations and weight snapshots are therefore dense early (log-spaced)
and regular later (every N steps), so curves look right on a log axis and analyses over training
have checkpoints on both sides of every transition.
"""

from __future__ import annotations

import math


def log_linear_steps(total: int, every: int, per_decade: int) -> list[int]:
    """Sorted steps in [0, total]: 0, total, multiples of ``every``, ``per_decade`` per decade."""
    steps = {0, total}
    if every > 0:
        steps.update(range(every, total + 1, every))
    if per_decade > 0:
        i = 0
        while True:
            s = round(10 ** (i / per_decade))
            if s > total:
                break
            steps.add(s)
            i += 1
    return sorted(steps)


def lr_at(step: int, *, lr: float, warmup_steps: int, schedule: str, total: int,
          min_lr_ratio: float = 0.0) -> float:
    """Linear warmup over ``warmup_steps`` updates, then constant or cosine to lr*min_lr_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(1, total - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    cos = 0.5 * (1 + math.cos(math.pi * progress))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * cos)
