"""A run directory read for a report: config tree, metrics rows, summary, command line.

Reads the files as they are, without rebuilding the task or the model, so a report can be made
of a run that is still training (its ``summary.json`` is rewritten at every rolling checkpoint)
or of one written by an older groklab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from groklab.rundir import RunDir, RunDirError
from groklab.train.summary import summarize


@dataclass
class RunRecord:
    path: Path
    config: dict
    rows: list[dict]
    summary: dict
    command: str

    @property
    def name(self) -> str:
        return self.path.resolve().name


def read_run(path: str | Path) -> RunRecord:
    """The run at ``path``; a one-line :class:`RunDirError` if it is not one or has no metrics."""
    rd = RunDir(Path(path))
    tree = rd.read_config_tree()
    rows = rd.read_metrics()
    if not rows:
        raise RunDirError(f"'{path}' has no evaluations yet (metrics.jsonl is empty); "
                          "a report needs at least one")
    summary = rd.read_summary()
    if not summary:
        # Before the first rolling checkpoint there is no summary.json; the rows are enough.
        metric = "exact" if any(k.startswith("exact/") for k in rows[0]) else "acc"
        splits = [k.split("/", 1)[1] for k in rows[0] if k.startswith(f"{metric}/")]
        summary = summarize(rows, splits, None, None, metric=metric)
        summary["status"] = "running"
    cmd = rd.path / "command.txt"
    command = cmd.read_text().strip() if cmd.exists() else ""
    return RunRecord(rd.path, tree or {}, rows, summary, command)
