import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from groklab.api import load_run
from groklab.train.loop import Run, TrainingDiverged, train_runs
from groklab.train.schedule import log_linear_steps, lr_at
from groklab.train.steps import EagerStep
from tests.conftest import TINY_SETS, train_until_killed


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_eval_schedule_is_log_spaced_plus_linear():
    steps = log_linear_steps(1000, 250, 4)
    assert steps[:6] == [0, 1, 2, 3, 6, 10]
    assert {250, 500, 750, 1000} <= set(steps)
    assert steps == sorted(set(steps)) and steps[-1] == 1000


def test_lr_schedule_warmup_then_cosine():
    kw = dict(lr=1.0, warmup_steps=10, total=110)
    assert lr_at(0, schedule="constant", **kw) == pytest.approx(0.1)
    assert lr_at(9, schedule="constant", **kw) == pytest.approx(1.0)
    assert lr_at(50, schedule="constant", **kw) == 1.0
    assert lr_at(10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(60, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_at(110, schedule="cosine", **kw) == pytest.approx(0.0, abs=1e-12)


def test_tiny_run_learns_and_writes_its_directory(tiny_cfg, tmp_path):
    summary = Run.start(tiny_cfg("train.weight_decay=0.1", steps=500), tmp_path / "run").train()
    run = load_run(tmp_path / "run")
    rows = run.metrics
    # It learned: training facts go from chance (1/40) to memorized.
    assert rows[0]["acc/train"] < 0.1
    assert summary["final"]["train"] >= 0.9, summary["final"]
    assert summary["final"]["atomic_id"] >= 0.9
    assert summary["memorization_step"] is not None
    assert summary["status"] == "completed" and summary["steps"] == 500
    # Files of the run directory.
    for name in ("config.yaml", "command.txt", "metrics.jsonl", "summary.json"):
        assert (tmp_path / "run" / name).exists()
    assert run.checkpoint_steps[0] == 0 and run.checkpoint_steps[-1] == 500
    assert run.config.model.d_vocab == len(run.task.vocab)  # config.yaml is resolved
    # Every row has every split; weight norm and lr are logged.
    keys = {f"acc/{s}" for s in ["train", "atomic_id", "atomic_ood", "train_inferred",
                                 "test_id", "test_ood"]}
    assert all(keys <= set(r) and "weight_norm" in r and "lr" in r for r in rows)
    # The last checkpoint reproduces the logged final accuracy.
    model = run.model()
    probe = run.task.probes["atomic_id"]
    acc = (model(probe.inputs, probe.answer_pos).argmax(-1) == probe.targets).float().mean()
    assert float(acc) == pytest.approx(rows[-1]["acc/atomic_id"], abs=1e-6)


def test_same_seed_same_metrics_different_seed_different(tiny_cfg, tmp_path):
    a = Run.start(tiny_cfg(steps=60), tmp_path / "a")
    a.train()
    b = Run.start(tiny_cfg(steps=60), tmp_path / "b")
    b.train()
    c = Run.start(tiny_cfg("train.seed=1", steps=60), tmp_path / "c")
    c.train()
    ra, rb, rc = (strip_time(r.dir.read_metrics()) for r in (a, b, c))
    assert ra == rb
    assert ra != rc


def test_resume_in_process_equals_uninterrupted(tiny_cfg, tmp_path):
    full = Run.start(tiny_cfg(steps=120), tmp_path / "full")
    full.train()
    # Same run stopped after 80 steps (the rolling checkpoint is every 40), then resumed.
    part = Run.start(tiny_cfg(steps=120), tmp_path / "part")
    part.cfg.train.steps = 120
    stop_at = 95

    train_until_killed(part, stop_at)
    resumed = Run.resume(tmp_path / "part")
    assert resumed.step == 80
    resumed.train()
    assert strip_time(full.dir.read_metrics()) == strip_time(resumed.dir.read_metrics())
    wa = full.dir.load_weights(120)
    wb = resumed.dir.load_weights(120)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "groklab.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    sets = [a for s in [*TINY_SETS, "train.steps=240", "train.resume_every=30"]
            for a in ("--set", s)]
    ref = _cli("train", "composition", *sets, "--out", str(tmp_path / "ref"), "--no-progress")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    victim = _cli("train", "composition", *sets, "--out", str(tmp_path / "v"), "--no-progress")
    resume_pt = tmp_path / "v" / "checkpoints" / "resume.pt"
    deadline = time.time() + 120
    while not resume_pt.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere past the first checkpoint, mid-step or mid-write
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert summary["status"] == "running" and summary["steps"] < 240
    res = _cli("resume", str(tmp_path / "v"), "--no-progress")
    assert res.wait(timeout=300) == 0, res.stderr.read()
    ref_rows = strip_time(load_run(tmp_path / "ref").metrics)
    assert ref_rows == strip_time(load_run(tmp_path / "v").metrics)
    assert len(ref_rows) > 10
    leftovers = [p for p in (tmp_path / "v").rglob("*.tmp")]
    assert not leftovers


def test_resume_removes_the_temp_files_of_a_write_cut_short(tiny_cfg, tmp_path):
    Run.start(tiny_cfg(steps=60), tmp_path / "r").train()
    stale = [tmp_path / "r" / "checkpoints" / ".resume.pt.abc123.tmp",
             tmp_path / "r" / ".metrics.jsonl.xyz.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    keep = tmp_path / "r" / "checkpoints" / "notes.tmp"  # not an atomic writer's temp name
    keep.write_text("mine")
    Run.resume(tmp_path / "r")
    assert not any(p.exists() for p in stale) and keep.exists()


def test_nan_loss_stops_with_a_clear_message(tiny_cfg, tmp_path):
    run = Run.start(tiny_cfg("train.grad_clip=0", steps=100), tmp_path / "run")
    step = EagerStep(run)

    def poisoned():
        loss = step()
        return loss * float("nan") if run.step >= 45 else loss

    with pytest.raises(TrainingDiverged, match=r"NaN/Inf between step 40 and 50.*last good checkpoint is step 40"):
        train_runs([run], poisoned)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    state = torch.load(tmp_path / "run" / "checkpoints" / "resume.pt", weights_only=False)
    assert state["step"] == 40
