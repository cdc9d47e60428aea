"""A rich progress bar: step, steps/s, train / ID / OOD accuracy, the grokking forecast
(groklab/train/forecast.py), time left.

Redrawn at most a few times a second, so it costs nothing measurable even when a step takes
well under a millisecond. When disabled (tests, non-interactive use) every method is a no-op.
"""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from groklab.train.forecast import forecast


class _Quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, step: int) -> None:
        pass

    def metrics(self, row: dict) -> None:
        pass


class _Bar(_Quiet):
    def __init__(self, total: int, start: int, id_split: str | None, ood_split: str | None,
                 metric: str = "acc"):
        self.metric = metric
        self.splits = [("train", "train")]
        if id_split:
            self.splits.append(("ID", id_split))
        if ood_split:
            self.splits.append(("OOD", ood_split))
        self.progress = Progress(
            TextColumn("[bold]step"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[rate]:>7} steps/s"),
            TextColumn("{task.fields[acc]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            refresh_per_second=4,
        )
        self.task = self.progress.add_task("train", total=total, completed=start,
                                           rate="-", acc="")
        self.start_step, self.t0, self.last = start, time.perf_counter(), 0.0
        self.total, self.id_split, self.rows = total, id_split, []  # rows feed the forecast

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def advance(self, step: int) -> None:
        now = time.perf_counter()
        if now - self.last < 0.25:
            return
        self.last = now
        rate = (step - self.start_step) / max(now - self.t0, 1e-9)
        self.progress.update(self.task, completed=step, rate=f"{rate:.1f}")

    def metrics(self, row: dict) -> None:
        acc = "  ".join(
            f"{label} {row[f'{self.metric}/{s}']:.3f}" for label, s in self.splits
            if f"{self.metric}/{s}" in row
        )
        self.rows.append(row)
        if self.id_split:  # will the ID split reach 0.95 within the budget, and when?
            acc += "  " + forecast(self.rows, self.id_split, 0.95, self.total,
                                   metric=self.metric).short()
        self.progress.update(self.task, completed=row["step"], acc=acc)


def make_progress(enabled: bool, total: int, start: int, id_split=None, ood_split=None,
                  metric: str = "acc"):
    return _Bar(total, start, id_split, ood_split, metric) if enabled else _Quiet()
