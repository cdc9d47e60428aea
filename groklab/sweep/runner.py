"""Run a sweep: every point an ordinary run directory, resumable, indexed in ``sweep.jsonl``.

    DIR/sweep.yaml        the spec, its points (slug -> overrides) and the sweep's token
    DIR/sweep.jsonl       one row per point: overrides, path, status, key summary numbers
    DIR/points/<slug>/    a normal run directory (config.yaml, metrics.jsonl, summary.json, ...)
    DIR/figures/, DIR/analysis/   written by ``groklab phase DIR``

Running the same command again continues the sweep: finished points (summary status
``completed`` or ``diverged``) are skipped, interrupted ones continue from their rolling
checkpoint with ``Run.resume`` (bit-for-bit, as ``groklab resume`` does), new ones start. A spec
may grow (more seeds, more values) between runs; a point whose directory holds a different
config is refused before anything is written.

A point that raises (out of memory, a worker killed, a bug) is indexed ``failed`` with a
one-line ``error`` and the sweep goes on; the next run resumes it. A point whose loss became
NaN/Inf is ``diverged``, with the reason in ``error``: finished, as training it again would
diverge again. ``groklab sweep`` exits 1 when any point failed or diverged.

Backends: in this process (``workers=1``), a pool of local processes (``workers=N``), or Ray
tasks on a cluster (``backend="ray"``, :mod:`groklab.sweep.ray_backend`). With ``batched=True``
points that can share one batched model (:func:`groklab.train.batched.batch_key`) train as one
unit of work; every backend runs units.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

import torch
import yaml

from groklab.rundir import RunDir, atomic_write_text
from groklab.sweep.spec import Point, SweepError, SweepSpec, task_key
from groklab.sweep.units import (  # noqa: F401 - re-exported: the sweep directory's names
    _DATA_CACHE,
    FINISHED,
    INDEX_FILE,
    POINTS_DIR,
    SPEC_FILE,
    _resume_step,
    _summary,
    execute_unit,
    failure_reason,
    point_status,
    unit_payload,
)

# ----------------------------------------------------------------------------- the directory


def _same_config(run_dir: Path, point: Point) -> bool:
    """The directory's resolved config is this point's (model sentinels like -1 resolve)."""
    tree = RunDir(run_dir).read_config_tree()
    new = point.config.to_dict()
    # A key the old file lacks (added to groklab since) counts as equal: it held the default.
    for group in ("task", "train"):
        old = tree.get(group, {})
        if any(old.get(k, v) != v for k, v in new[group].items()):
            return False
    model = tree.get("model", {})
    return all(model.get(k, v) == v for k, v in new["model"].items() if v != -1)


def prepare_sweep_dir(spec: SweepSpec, out: Path) -> str:
    """Check ``out`` can hold this sweep; returns the sweep's token. Writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out '{out}' is a file; choose a directory")
    spec_path = out / SPEC_FILE
    if not spec_path.exists():
        if out.exists() and any(out.iterdir()):
            raise SweepError(f"--out '{out}' exists, is not empty and holds no sweep; "
                             "choose a new --out")
        return uuid.uuid4().hex
    try:
        old = yaml.safe_load(spec_path.read_text()) or {}
    except yaml.YAMLError:
        raise SweepError(f"'{spec_path}' is not valid YAML; choose a new --out") from None
    for p in spec.points:
        d = out / POINTS_DIR / p.slug
        if RunDir(d).is_run() and not _same_config(d, p):
            raise SweepError(
                f"point '{p.slug}' in '{out}' was trained with a different config than the "
                "spec now gives it; choose a new --out or restore the spec"
            )
    return str(old.get("token") or uuid.uuid4().hex)


def write_spec_file(spec: SweepSpec, out: Path, token: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / POINTS_DIR).mkdir(exist_ok=True)
    doc = {"token": token, "source": spec.source, "spec": spec.to_dict(),
           "varying": spec.varying,
           "points": [{"slug": p.slug, "overrides": p.overrides} for p in spec.points]}
    atomic_write_text(out / SPEC_FILE, yaml.safe_dump(doc, sort_keys=False))


def index_row(out: Path, slug: str, overrides: dict, error: str | None = None,
              diverged: str | None = None) -> dict:
    """One row of sweep.jsonl, from the point's run directory. ``error``: why this run of the
    sweep failed the point; ``diverged``: why it diverged (both land in the row's ``error``)."""
    d = Path(out) / POINTS_DIR / slug
    s = _summary(RunDir(d))
    status = "failed" if error else (point_status(d) if s or RunDir(d).is_run() else "pending")
    if status == "interrupted" and not error:
        status = "running" if s.get("status") == "running" else "interrupted"
    row = {"point": slug, "path": f"{POINTS_DIR}/{slug}", "overrides": overrides,
           "status": status}
    if s:
        ids, oods = s.get("id_split"), s.get("ood_split")
        row.update({
            "steps": s.get("steps"),
            "memorization_step": s.get("memorization_step"),
            "generalization_step_id": s.get("generalization_step_id"),
            "generalization_step_ood": s.get("generalization_step_ood"),
            "grokking_delay": s.get("grokking_delay"),
            "final_train": s.get("final", {}).get("train"),
            "final_id": s.get("final", {}).get(ids) if ids else None,
            "final_ood": s.get("final", {}).get(oods) if oods else None,
            "best_id": s.get("best", {}).get(ids) if ids else None,
            "wall_time_s": s.get("wall_time_s"),
            "steps_per_s": s.get("steps_per_s"),
        })
    if error:
        row["error"] = error
    elif status == "diverged":
        row["error"] = diverged or f"loss became NaN/Inf by step {s.get('steps')}"
    return row


def write_index(out: Path, spec: SweepSpec, errors: dict[str, str],
                diverged: dict[str, str] | None = None) -> list[dict]:
    diverged = diverged or {}
    rows = [index_row(out, p.slug, p.overrides, errors.get(p.slug), diverged.get(p.slug))
            for p in spec.points]
    atomic_write_text(Path(out) / INDEX_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _earlier_divergences(out: Path) -> dict[str, str]:
    """Reasons recorded for diverged points by earlier runs of the sweep: a diverged point is
    finished and not trained again, but its row should keep saying why."""
    try:
        rows = read_index(out)
    except (SweepError, OSError, ValueError):
        return {}
    return {r["point"]: r["error"] for r in rows
            if isinstance(r, dict) and r.get("status") == "diverged" and r.get("error")}


def read_index(out: Path) -> list[dict]:
    path = Path(out) / INDEX_FILE
    if not path.exists():
        raise SweepError(f"'{out}' is not a sweep directory (no {INDEX_FILE})")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- units of work


def plan_units(spec: SweepSpec, out: Path, batched: bool, max_batch: int) -> list[list[Point]]:
    """Points still to train, grouped into batched units where allowed (else one per unit)."""
    todo = [p for p in spec.points if point_status(Path(out) / POINTS_DIR / p.slug) not in FINISHED]
    if not batched:
        return [[p] for p in todo]
    from groklab.train.batched import batch_key, group_for_batching

    def key(p: Point):
        k = batch_key(p.config, spec.data[task_key(p.config)])
        if k is None:
            return None
        # Members must start from the same step: fresh ones together, resumed ones by step.
        return f"{k}|{_resume_step(Path(out) / POINTS_DIR / p.slug)}"

    return group_for_batching(todo, key, max_members=max_batch)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _local_units(out: Path, units: list[list[Point]], workers: int, batched: bool,
                 command: str) -> Iterator[list[dict]]:
    root = str(Path(out) / POINTS_DIR)
    if workers <= 1:
        for unit in units:  # noqa: B007 - a generator: the caller updates the index between units
            yield execute_unit(root, unit_payload(unit), batched, command)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(execute_unit, root, unit_payload(u), batched, command): u
                   for u in units}
        for f in as_completed(futures):
            try:
                yield f.result()
            except Exception as e:  # noqa: BLE001 - a worker died (the OOM killer, a crash)
                # A dead worker breaks the pool: every unit not yet done lands here too, and the
                # next run of the sweep resumes them all.
                reason = failure_reason(e)
                if isinstance(e, BrokenProcessPool):
                    reason = ("a worker process died (killed by the OS, e.g. out of memory); "
                              "run the sweep again to resume")
                yield [{"slug": p.slug, "error": reason} for p in futures[f]]


# ----------------------------------------------------------------------------- progress


def _last_step(run_dir: Path) -> int:
    """Step of the last metrics row (0 if none), reading only the end of the file."""
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = f.read().decode(errors="ignore").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


class SweepProgress:
    """Points done / total and steps trained across points, with a rate and time left.

    A thread reads the last metrics row of unfinished points every second, so the step
    count moves while points train in this process, in worker processes or on Ray workers
    with a shared filesystem. Not interactive: one line per finished point.
    """

    def __init__(self, out: Path, spec: SweepSpec, enabled: bool, log: Callable[[str], None]):
        self.out, self.spec, self.enabled, self.log = Path(out), spec, enabled, log
        self.total_points = len(spec.points)
        self.done = 0
        self.stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("{task.description:>6}"), MofNCompleteColumn(),
                                     BarColumn(), TimeElapsedColumn(), TextColumn("left"),
                                     TimeRemainingColumn(), refresh_per_second=2)
            self.progress.__enter__()
            self.points_task = self.progress.add_task("points", total=self.total_points)
            total_steps = sum(p.config.train.steps for p in self.spec.points)
            self.steps_task = self.progress.add_task("steps", total=total_steps)
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.enabled:
            self._update_steps()
            self.progress.__exit__(*exc)
        return False

    def _update_steps(self) -> None:
        steps = 0
        for p in self.spec.points:
            d = self.out / POINTS_DIR / p.slug
            if point_status(d) in FINISHED:
                steps += p.config.train.steps
            else:
                steps += _last_step(d)
        self.progress.update(self.steps_task, completed=steps)

    def _poll(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self._update_steps()
            except Exception:  # noqa: BLE001 - a half-written file; next tick
                pass

    def set_done(self, n: int) -> None:
        self.done = n
        if self.enabled:
            self.progress.update(self.points_task, completed=n)

    def point_finished(self, row: dict) -> None:
        self.done += 1
        line = describe_row(row, self.done, self.total_points)
        if self.enabled:
            self.progress.update(self.points_task, completed=self.done)
            self.progress.console.print(line, highlight=False)
        else:
            self.log(line)


def describe_row(row: dict, i: int, n: int) -> str:
    status = row["status"]
    head = f"[{i}/{n}] {row['point']}: {status}"
    if status in ("failed", "diverged"):
        return f"{head} ({row.get('error')})"
    if status not in FINISHED:
        return head
    gen = row.get("generalization_step_id")
    id_part = (f"ID >= 0.95 at step {gen}" if gen is not None
               else f"ID did not reach 0.95 (best {row.get('best_id') or 0:.3f})")
    mem = row.get("memorization_step")
    mem_part = f"memorized at {mem}" if mem is not None else "did not memorize"
    return (f"{head}, {mem_part}, {id_part}, final ID "
            f"{row.get('final_id') or 0:.3f} OOD {row.get('final_ood') or 0:.3f}, "
            f"{row.get('wall_time_s') or 0:.0f} s")


# ----------------------------------------------------------------------------- the sweep


def run_sweep(spec: SweepSpec, out: str | Path, *, backend: str = "local", workers: int = 1,
              batched: bool = False, max_batch: int = 64, ray_address: str | None = None,
              ray_cpus: float = 1.0, ray_gpus: float = 0.0, ray_transfer: str = "auto",
              progress: bool = False,
              command: str = "groklab sweep", log: Callable[[str], None] = print) -> list[dict]:
    """Train every unfinished point of ``spec`` into ``out``; returns the sweep.jsonl rows."""
    out = Path(out)
    if backend not in ("local", "ray"):
        raise SweepError(f"unknown backend '{backend}'; backends: local, ray")
    if workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    if max_batch < 1:
        raise SweepError(f"--max-batch must be >= 1, got {max_batch}")
    if backend == "ray":
        from groklab.sweep.ray_backend import check_ray

        check_ray()
    token = prepare_sweep_dir(spec, out)
    write_spec_file(spec, out, token)
    units = plan_units(spec, out, batched, max_batch)
    errors: dict[str, str] = {}
    diverged = _earlier_divergences(out)
    rows = write_index(out, spec, errors, diverged)
    _DATA_CACHE.update(spec.data)  # built while validating: in-process units reuse it
    with SweepProgress(out, spec, progress, log) as bar:
        bar.set_done(sum(r["status"] in FINISHED for r in rows))
        if backend == "ray":
            from groklab.sweep.ray_backend import ray_units

            results = ray_units(out, units, token, batched=batched, address=ray_address,
                                cpus=ray_cpus, gpus=ray_gpus, command=command,
                                transfer=ray_transfer)
        else:
            results = _local_units(out, units, workers, batched, command)
        for unit_result in results:
            for item in unit_result:
                if item["error"]:
                    errors[item["slug"]] = item["error"]
                else:
                    errors.pop(item["slug"], None)
                if item.get("diverged"):
                    diverged[item["slug"]] = item["diverged"]
            rows = write_index(out, spec, errors, diverged)
            by_slug = {r["point"]: r for r in rows}
            for item in unit_result:
                bar.point_finished(by_slug[item["slug"]])
    return rows


def sweep_summary(rows: list[dict]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))

