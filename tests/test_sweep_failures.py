"""A sweep survives its points: a point that diverges, raises or runs out of memory is indexed
with a one-line reason while the others train; `groklab sweep` exits 1 at the end; the next run
resumes failed and killed points."""

import json
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest
import torch
import yaml
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import load_config
from groklab.sweep import parse_spec, read_index, run_sweep
from groklab.sweep import runner as sweep_runner
from groklab.train.loop import Run
from groklab.train.steps import EagerStep
from tests.conftest import TINY_SETS
from tests.test_sweep import strip_time, tiny_spec

cli = CliRunner()

# CUDA's out-of-memory text, several sentences over several lines, as torch raises it.
CUDA_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "79.10 GiB of which 1.19 GiB is free.\nOf the allocated memory 75.0 GiB is allocated "
            "by PyTorch. " + "If reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True. " * 4)


def sweep_cli(spec_tree, out, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_tree))
    return cli.invoke(app, ["sweep", str(spec), "--out", str(out), "--no-progress"])


def fault_by_seed(monkeypatch, faults):
    """Make the eager step of the points with these train seeds fail at step 5."""
    original = EagerStep.__call__

    def step(self):
        fault = faults.get(self.run.cfg.train.seed)
        if fault is not None and self.run.step == 5:
            if fault == "nan":
                return torch.tensor([float("nan")])
            raise fault
        return original(self)

    monkeypatch.setattr(EagerStep, "__call__", step)


def test_failed_points_are_indexed_and_the_sweep_goes_on(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    tree = tiny_spec(steps=20, **{"train.seed": [0, 1, 2, 3]})
    fault_by_seed(monkeypatch, {1: torch.OutOfMemoryError(CUDA_OOM), 2: MemoryError(),
                                3: "nan"})
    res = sweep_cli(tree, out, tmp_path)
    assert res.exit_code == 1, res.output
    rows = {r["point"]: r for r in read_index(out)}
    assert rows["seed=0"]["status"] == "completed" and "error" not in rows["seed=0"]
    assert rows["seed=1"]["status"] == "failed"
    assert rows["seed=1"]["error"].startswith("OutOfMemoryError: CUDA out of memory. Tried")
    assert len(rows["seed=1"]["error"]) <= 320
    assert rows["seed=2"] == {**rows["seed=2"], "status": "failed", "error": "MemoryError"}
    assert rows["seed=3"]["status"] == "diverged"
    assert rows["seed=3"]["error"].startswith("loss became NaN/Inf between step 5 and 6")
    for r in rows.values():
        assert "\n" not in r.get("error", "")
    # Each point's reason is on its own output line, and the totals close the output.
    assert "seed=1: failed (OutOfMemoryError: CUDA out of memory." in res.output
    assert "seed=3: diverged (loss became NaN/Inf" in res.output
    assert "1 completed, 1 diverged, 2 failed" in res.output

    # The fault is gone (more memory, say): the next run trains the failed points again and
    # leaves the finished ones, the diverged one included, alone.
    monkeypatch.undo()
    done = {s: (out / "points" / s / "metrics.jsonl").stat().st_mtime_ns
            for s in ("seed=0", "seed=3")}
    res = sweep_cli(tree, out, tmp_path)
    assert res.exit_code == 1, res.output  # still: seed=3 diverged
    rows = {r["point"]: r for r in read_index(out)}
    assert [rows[f"seed={i}"]["status"] for i in range(4)] == [
        "completed", "completed", "completed", "diverged"]
    assert rows["seed=3"]["error"].startswith("loss became NaN/Inf between step 5 and 6")
    assert {s: (out / "points" / s / "metrics.jsonl").stat().st_mtime_ns for s in done} == done
    ref = Run.start(load_config("composition", None, [*TINY_SETS, "train.steps=20",
                                                      "train.resume_every=20", "train.seed=1"]),
                    tmp_path / "ref")
    ref.train()
    assert strip_time(map(json.loads, (out / "points/seed=1/metrics.jsonl").read_text()
                          .splitlines())) == strip_time(ref.dir.read_metrics())


def test_a_sweep_without_failures_exits_0(tmp_path):
    res = sweep_cli(tiny_spec(steps=10, **{"train.seed": [0]}), tmp_path / "s", tmp_path)
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("damage", ["summary deleted", "status running", "summary corrupt"])
def test_a_killed_point_is_resumed_by_the_next_sweep(tmp_path, monkeypatch, damage):
    out = tmp_path / "sweep"
    tree = tiny_spec(steps=40, **{"train.seed": [0, 1]})
    original = EagerStep.__call__

    def killed_at_30(self):  # seed=1 had its resume.pt written at step 20
        if self.run.cfg.train.seed == 1 and self.run.step == 30:
            raise KeyboardInterrupt  # what a kill of the sweep looks like from inside
        return original(self)

    monkeypatch.setattr(EagerStep, "__call__", killed_at_30)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(parse_spec(tree), out, log=lambda s: None)
    monkeypatch.undo()
    summary = out / "points" / "seed=1" / "summary.json"
    assert json.loads(summary.read_text())["status"] == "running"
    if damage == "summary deleted":
        summary.unlink()
    elif damage == "summary corrupt":
        summary.write_text("{")

    res = sweep_cli(tree, out, tmp_path)
    assert res.exit_code == 0, res.output
    assert [r["status"] for r in read_index(out)] == ["completed", "completed"]
    ref = Run.start(load_config("composition", None, [*TINY_SETS, "train.steps=40",
                                                      "train.resume_every=20", "train.seed=1"]),
                    tmp_path / "ref")
    ref.train()
    resumed = (out / "points/seed=1/metrics.jsonl").read_text().splitlines()
    assert strip_time(map(json.loads, resumed)) == strip_time(ref.dir.read_metrics())


class DeadPool:
    """A process pool whose worker the OS killed: every future fails with BrokenProcessPool."""

    def __init__(self, *a, **kw):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, *a, **kw):
        f = Future()
        f.set_exception(BrokenProcessPool("A process in the process pool was terminated "
                                          "abruptly while the future was running or pending."))
        return f


def test_a_killed_worker_process_fails_its_points_not_the_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_runner, "ProcessPoolExecutor", DeadPool)
    out = tmp_path / "sweep"
    spec = parse_spec(tiny_spec(steps=10, **{"train.seed": [0, 1]}))
    rows = run_sweep(spec, out, workers=2, log=lambda s: None)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("worker process died" in r["error"] and "run the sweep again" in r["error"]
               for r in rows)
    monkeypatch.undo()
    rows = run_sweep(spec, out, log=lambda s: None)  # in process this time
    assert [r["status"] for r in rows] == ["completed", "completed"]


def test_a_diverged_member_of_a_batched_unit_keeps_its_reason(tmp_path, monkeypatch):
    from groklab.train.batched import StackedStep

    original = StackedStep.__call__

    def step(self):
        losses = original(self)
        if self.lead.step == 5:
            losses[1] = float("nan")
        return losses

    monkeypatch.setattr(StackedStep, "__call__", step)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(steps=20, **{"train.seed": [0, 1]})))
    res = cli.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "s"), "--batched",
                           "--no-progress"])
    assert res.exit_code == 1, res.output
    rows = {r["point"]: r for r in read_index(tmp_path / "s")}
    assert rows["seed=0"]["status"] == "completed"
    assert rows["seed=1"]["status"] == "diverged"
    assert rows["seed=1"]["error"].startswith("loss became NaN/Inf between step 5 and 6")
