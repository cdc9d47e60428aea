"""What a study is: the runs it names and the claims it checks over them.

A study (``groklab reproduce STUDY``) trains a few runs (presets with ``--set`` overrides),
runs analyses on them, then evaluates each published claim as a predicate over the runs'
metrics and analyses. A claim reports what was measured and whether the published finding
holds at this scale; its threshold is the published one and is never tuned to make it pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SCALES = ("tiny", "cpu", "gpu")  # tiny: the test suite's settings (seconds; claims may fail)


class StudyError(ValueError):
    """Bad input to a study: unknown study or scale, seeds < 1, an --out it cannot use."""


@dataclass(frozen=True)
class RunSpec:
    name: str  # unique in the study: the run's directory DIR/runs/<name>
    preset: str  # a preset or task name
    sets: tuple[str, ...] = ()  # --set overrides
    analyses: tuple[tuple[str, dict], ...] = ()  # (registry name, options) run after training
    label: str = ""  # shown in tables and legends; the name when empty
    # A run made by a callable instead of by training ``preset`` (e.g. an injection into an
    # earlier run of the study): execute(runs_dir, run_dir) writes a run directory at run_dir;
    # ``preset`` and ``sets`` then only describe it in tables
    execute: Callable[[Path, Path], None] | None = None

    @property
    def shown(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Measured:
    value: str  # as shown in the table
    holds: bool | None  # None: could not be measured (a run or analysis is missing)
    detail: dict = field(default_factory=dict)  # numbers for reproduction.json


@dataclass(frozen=True)
class Claim:
    text: str
    published: str
    source: str
    check: Callable[["Runs"], Measured]


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    description: str
    minutes: dict[str, float]  # expected minutes per scale, on the machine the scale is for
    runs: Callable[[str, int], list[RunSpec]]  # (scale, seeds) -> runs
    claims: tuple[Claim, ...]

    def run_specs(self, scale: str, seeds: int) -> list[RunSpec]:
        specs = self.runs(scale, seeds)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.name} names a run twice: {names}")
        return specs


class MissingRun(LookupError):
    """A claim asked for a run or analysis the study did not produce (a failed run)."""


class Runs:
    """The runs of one reproduction, by name, with the accessors claims use."""

    def __init__(self, root: Path, specs: list[RunSpec], scale: str = "cpu"):
        self.root = Path(root)
        self.specs = {s.name: s for s in specs}
        self.scale = scale
        self._loaded: dict = {}

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self.specs if n.startswith(prefix)]

    def path(self, name: str) -> Path:
        return self.root / "runs" / name

    def __getitem__(self, name: str):
        return self._loaded[name] if name in self._loaded else self._load(name)

    def _load(self, name: str):
        from groklab.rundir import RunDirError, load_run

        if name not in self.specs:
            raise MissingRun(f"no run named {name}")
        try:
            run = load_run(self.path(name))
        except RunDirError as e:
            raise MissingRun(f"run {name}: {e}") from e
        self._loaded[name] = run
        return run

    def metric(self, name: str, key: str) -> tuple[list[int], list[float]]:
        rows = [m for m in self[name].metrics if key in m]
        if not rows:
            raise MissingRun(f"run {name} logged no {key}")
        return [m["step"] for m in rows], [float(m[key]) for m in rows]

    def first_step(self, name: str, key: str, threshold: float, below: bool = False) -> int | None:
        """First evaluated step where ``key >= threshold`` (``<=`` with ``below``)."""
        for s, v in zip(*self.metric(name, key)):
            if (v <= threshold) if below else (v >= threshold):
                return s
        return None

    def at(self, name: str, key: str, step: int) -> float:
        """The value logged at the last evaluation at or before ``step``."""
        steps, values = self.metric(name, key)
        best = [v for s, v in zip(steps, values) if s <= step]
        return best[-1] if best else values[0]

    def final(self, name: str, key: str) -> float:
        return self.metric(name, key)[1][-1]

    def best(self, name: str, key: str) -> float:
        return max(self.metric(name, key)[1])

    def analysis(self, name: str, file: str) -> Path:
        """RUN/analysis/<file> of one run (MissingRun when it was not written)."""
        path = self.path(name) / "analysis" / file
        if not path.exists():
            raise MissingRun(f"run {name} has no analysis/{file}")
        return path


def fmt_step(step: int | None, cap: int | None = None) -> str:
    if step is None:
        return f"not by {cap:,}" if cap else "never"
    return f"{step:,}"


def ratio(a: int | None, b: int | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def median(values: list[float]) -> float:
    values = sorted(v for v in values if v is not None and not math.isnan(v))
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])
