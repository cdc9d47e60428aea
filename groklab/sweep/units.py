"""A unit of sweep work: one point, or a batched group of points, trained into its run
directories wherever a backend puts it (this process, a pool worker, a Ray worker). Training
failures are reported per point, never raised, so the rest of the sweep goes on.

Also the sweep directory's names and a point's status, which every backend reads.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import torch

from groklab.config import build_config
from groklab.rundir import RunDir, RunDirError
from groklab.sweep.spec import Point, task_key

SPEC_FILE = "sweep.yaml"
INDEX_FILE = "sweep.jsonl"
POINTS_DIR = "points"
FINISHED = ("completed", "diverged")


def point_status(run_dir: Path) -> str:
    """``new`` (nothing trained), ``interrupted`` (resumable), ``completed`` or ``diverged``."""
    rd = RunDir(run_dir)
    if not rd.is_run():
        return "new"
    status = _summary(rd).get("status")
    return status if status in FINISHED else "interrupted"


def _summary(rd: RunDir) -> dict:
    # A killed point may have no summary.json; a damaged one must not stop the whole sweep:
    # either way the point counts as interrupted and is resumed.
    try:
        s = rd.read_summary()
    except (OSError, ValueError):
        return {}
    return s if isinstance(s, dict) else {}


def failure_reason(e: BaseException) -> str:
    """One line for sweep.jsonl: CUDA out-of-memory messages run to several sentences."""
    text = " ".join(str(e).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _resume_step(run_dir: Path) -> int | str:
    rd = RunDir(run_dir)
    if not rd.is_run():
        return "new"
    if not rd.resume_path.exists():
        return 0
    try:
        return int(rd.load_resume_state()["step"])  # weights_only: no code from a shared sweep
    except (RunDirError, KeyError, TypeError, ValueError):  # let Run.resume report it alone
        return f"bad-{run_dir.name}"


def unit_payload(unit: list[Point]) -> list[dict]:
    """What a worker needs: plain dicts, picklable and independent of this process."""
    return [{"slug": p.slug, "overrides": p.overrides, "config": p.config.to_dict()}
            for p in unit]


_DATA_CACHE: dict = {}  # per process: task json -> TaskData, reused by later units


def _restart_unsaved(run_dir: Path) -> str:
    """A point's status, after clearing a point that stopped before its first resumable
    checkpoint (a fault at step 5, say): it has nothing to resume, so it starts again. The
    directory is the sweep's own, its config already checked against the point's."""
    status = point_status(run_dir)
    if status == "interrupted" and not RunDir(run_dir).resume_path.is_file():
        shutil.rmtree(run_dir)
        return "new"
    return status


def execute_unit(points_root: str, payload: list[dict], batched: bool,
                 command: str = "groklab sweep", progress: bool = False) -> list[dict]:
    """Train one unit into ``points_root/<slug>``; returns [{slug, error, diverged}] (None
    where there is nothing to report).

    Runs wherever the backend puts it (this process, a pool worker, a Ray worker). Training
    failures (an exception, out of memory) are reported per point, never raised: the rest of the
    sweep goes on. A point left interrupted by one is resumed by the next run of the sweep.
    """
    from groklab.train.loop import Run, TrainingDiverged

    root = Path(points_root)
    cfgs = [build_config(item["config"]) for item in payload]
    dirs = [root / item["slug"] for item in payload]
    data = _DATA_CACHE
    if len(_DATA_CACHE) > 8:
        _DATA_CACHE.clear()
    if batched and len(payload) > 1:
        try:
            return _execute_batched(cfgs, dirs, payload, data, command)
        except _FallBack:
            pass
    out = []
    for cfg, d, item in zip(cfgs, dirs, payload):
        error = diverged = None
        try:
            key = task_key(cfg)
            if key not in data:
                from groklab.tasks import make_task

                data[key] = make_task(cfg.task)
            status = _restart_unsaved(d)
            if status in FINISHED:
                pass
            elif status == "interrupted":
                Run.resume(d, data=data[key]).train(progress=progress)
            else:
                Run.start(cfg, d, command=f"{command}  # point {item['slug']}",
                          data=data[key]).train(progress=progress)
        except TrainingDiverged as e:  # the run wrote its own summary (status diverged)
            diverged = failure_reason(e).removeprefix("TrainingDiverged: ")
        except Exception as e:  # noqa: BLE001 - reported in the index, the sweep goes on
            error = failure_reason(e)
        if error is not None and torch.cuda.is_available():
            # The failed run is garbage now (maybe in reference cycles): return its GPU memory
            # before the next point, so one out-of-memory point does not starve the rest.
            gc.collect()
            torch.cuda.empty_cache()
        out.append({"slug": item["slug"], "error": error, "diverged": diverged})
    return out


class _FallBack(Exception):
    pass


def _execute_batched(cfgs, dirs, payload, data, command) -> list[dict]:
    from groklab.train.batched import BatchedRun

    statuses = {_restart_unsaved(d) for d in dirs}
    steps = {_resume_step(d) for d in dirs}
    try:
        if statuses == {"new"}:
            run = BatchedRun.start(cfgs, dirs, data=data,
                                   command=f"{command}  # batched with {len(dirs)} members")
        elif statuses == {"interrupted"} and len(steps) == 1:
            run = BatchedRun.resume(dirs, data=data)
        else:
            raise _FallBack
    except _FallBack:
        raise
    except Exception as e:  # noqa: BLE001
        return [{"slug": item["slug"], "error": failure_reason(e)} for item in payload]
    try:
        run.train()
    except Exception as e:  # noqa: BLE001
        return [{"slug": item["slug"], "error": failure_reason(e)} for item in payload]
    return [{"slug": item["slug"], "error": None,
             "diverged": " ".join(msg.split()) if msg else None}
            for item, msg in zip(payload, run.errors)]
