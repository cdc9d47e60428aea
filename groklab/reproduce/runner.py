"""Carry out a study: train its runs, run their analyses, check its claims, write the table.

    DIR/study.json          the study, scale and seeds (a rerun with the same ones resumes)
    DIR/runs/<name>/        one run directory per RunSpec (resumed if interrupted)
    DIR/reproduction.json   every claim: published, measured, holds, source, numbers
    DIR/report.html         the table and the figures (written by the CLI through the report)

A run that fails (diverges, raises) is recorded and the study goes on; claims that need it say
they could not be measured. Nothing is tuned here: a claim that does not hold is reported so.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from groklab.config import load_config
from groklab.reproduce.base import SCALES, Measured, MissingRun, Runs, Study, StudyError
from groklab.rundir import RunDir, atomic_write_text

STUDY_FILE = "study.json"
RESULT_FILE = "reproduction.json"


@dataclass
class ClaimResult:
    text: str
    published: str
    measured: str
    holds: bool | None
    source: str
    detail: dict

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "not measured"}[self.holds]


@dataclass
class Reproduction:
    study: str
    title: str
    scale: str
    seeds: int
    out: Path
    runs: list[dict]  # name, label, preset, sets, status, error, seconds
    claims: list[ClaimResult]
    seconds: float

    def to_json(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        for c, obj in zip(d["claims"], self.claims):
            c["verdict"] = obj.verdict
        return d


def check_request(study: Study, scale: str, seeds: int, out: Path) -> None:
    """Refuse bad input before anything is written (one line each)."""
    if scale not in SCALES:
        raise StudyError(f"unknown --scale '{scale}'; scales: {', '.join(SCALES)}")
    if scale != "tiny" and scale not in study.minutes:
        raise StudyError(f"study {study.name} has no --scale {scale}; it has: "
                         f"{', '.join(study.minutes)}")
    if seeds < 1:
        raise StudyError(f"--seeds {seeds} is below 1; --seeds must be >= 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StudyError(f"--out '{out}' exists and is not a directory")
    if RunDir(out).is_run():
        raise StudyError(f"--out '{out}' is a run directory; choose a new directory")
    marker = out / STUDY_FILE
    if marker.exists():
        try:
            prev = json.loads(marker.read_text())
        except ValueError:
            raise StudyError(f"--out '{out}' has an unreadable {STUDY_FILE}; choose a new "
                             "directory") from None
        want = {"study": study.name, "scale": scale, "seeds": seeds}
        if {k: prev.get(k) for k in want} != want:
            raise StudyError(f"--out '{out}' holds a reproduction of {prev.get('study')} "
                             f"(scale {prev.get('scale')}, seeds {prev.get('seeds')}); rerun "
                             f"with those to resume it, or choose a new directory")
    elif out.exists() and any(out.iterdir()):
        raise StudyError(f"--out '{out}' is not empty and holds no reproduction; choose a new "
                         "directory")
    for spec in study.run_specs(scale, seeds):  # every config valid before training starts
        if spec.execute is None:
            load_config(spec.preset, None, list(spec.sets))


def reproduce(study: Study, scale: str, seeds: int, out: str | Path,
              say: Callable[[str], None] = print, progress: bool = False) -> Reproduction:
    from groklab.sweep.units import execute_unit, point_status

    out = Path(out)
    check_request(study, scale, seeds, out)
    specs = study.run_specs(scale, seeds)
    t0 = time.perf_counter()
    atomic_write_text(out / STUDY_FILE, json.dumps(
        {"study": study.name, "scale": scale, "seeds": seeds,
         "runs": [{"name": s.name, "preset": s.preset, "sets": list(s.sets)} for s in specs]},
        indent=1))
    runs = Runs(out, specs, scale)
    rows = []
    for i, spec in enumerate(specs, 1):
        before = point_status(runs.path(spec.name))
        say(f"[{i}/{len(specs)}] {spec.shown}: {spec.preset} {' '.join(spec.sets)}"
            + (" (already trained)" if before in ("completed", "diverged") else ""))
        t = time.perf_counter()
        if spec.execute is not None:
            res = _execute(spec, out / "runs", runs.path(spec.name), before)
        else:
            cfg = load_config(spec.preset, None, list(spec.sets))
            [res] = execute_unit(str(out / "runs"), [{"slug": spec.name,
                                                      "overrides": list(spec.sets),
                                                      "config": cfg.to_dict()}], batched=False,
                                 command=f"groklab reproduce {study.name}  # run {spec.name}",
                                 progress=progress)
        error = res["error"] or res.get("diverged")
        if res["error"] is None:
            error = _analyze(runs.path(spec.name), spec.analyses, say) or error
        rows.append({"name": spec.name, "label": spec.shown, "preset": spec.preset,
                     "sets": list(spec.sets), "status": point_status(runs.path(spec.name)),
                     "error": error, "seconds": round(time.perf_counter() - t, 1)})
        if error:
            say(f"    {spec.shown}: {error}")
    claims = [evaluate(c, runs) for c in study.claims]
    result = Reproduction(study.name, study.title, scale, seeds, out, rows, claims,
                          round(time.perf_counter() - t0, 1))
    atomic_write_text(out / RESULT_FILE, json.dumps(result.to_json(), indent=1))
    return result


def _execute(spec, runs_dir: Path, run_dir: Path, before: str) -> dict:
    """A callable run (``RunSpec.execute``), skipped once finished; a failure is recorded."""
    if before in ("completed", "diverged"):
        return {"error": None}
    try:
        spec.execute(runs_dir, run_dir)
    except Exception as e:  # noqa: BLE001 - one run failing leaves the claims to say so
        return {"error": f"{type(e).__name__}: {e}"}
    return {"error": None}


def _analyze(run_dir: Path, analyses, say) -> str | None:
    from groklab.analysis.registry import get

    for name, options in analyses:
        try:
            get(name).run(run_dir, **options).save(run_dir)
        except Exception as e:  # noqa: BLE001 - one analysis failing leaves the claims to say so
            say(f"    analysis {name} failed: {type(e).__name__}: {e}")
            return f"analysis {name}: {type(e).__name__}: {e}"
    return None


def evaluate(claim, runs: Runs) -> ClaimResult:
    try:
        m = claim.check(runs)
    except MissingRun as e:
        m = Measured(f"not measured ({e})", None)
    return ClaimResult(claim.text, claim.published, m.value, m.holds, claim.source, m.detail)
