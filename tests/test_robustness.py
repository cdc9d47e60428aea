"""Same seed, same numbers; nothing lost; no code from a shared run (real processes where a
signal or a second writer is involved)."""

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import load_config
from groklab.rundir import load_run
from groklab.train.loop import Run
from tests.conftest import TINY_SETS

runner = CliRunner()


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def sets(*items):
    return [a for s in items for a in ("--set", s)]


def _cli(*args, threads: int = 1):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GROKLAB_QUIET_SIGNALS": "1"}
    return subprocess.Popen([sys.executable, "-m", "groklab.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_at_two_threads_are_identical(tmp_path):
    """The repeated-token embedding gradient was summed in a thread-dependent order (indexing's
    backward); at 2 threads two runs of one config must still agree bit for bit. At the
    composition-small preset's batch (512 rows): smaller batches stay under the kernel's
    parallel grain and could not show the difference."""
    cfg = load_config("composition-small", None, [
        "train.steps=8", "train.eval_every=4", "train.eval_per_decade=0", "train.device=cpu",
        "train.checkpoint_every=8", "train.checkpoint_per_decade=0", "train.train_probe_size=500"])
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = Run.start(cfg, tmp_path / "a")
        a.train()
        b = Run.start(cfg, tmp_path / "b")
        b.train()
    finally:
        torch.set_num_threads(old)
    assert strip_time(a.dir.read_metrics()) == strip_time(b.dir.read_metrics())
    wa, wb = a.dir.load_weights(8), b.dir.load_weights(8)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    env = load_run(tmp_path / "a").dir.read_environment()
    assert env["threads"] == 2 and env["device"] == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_checkpoints_and_resumes_exactly(tmp_path, sig, code):
    args = sets(*TINY_SETS, "train.steps=400", "train.resume_every=1000")
    ref = _cli("train", "composition", *args, "--out", str(tmp_path / "ref"), "--no-progress",
               threads=2)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    victim = _cli("train", "composition", *args, "--out", str(tmp_path / "v"), "--no-progress",
                  threads=2)
    metrics = tmp_path / "v" / "metrics.jsonl"
    deadline = time.time() + 120
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 4) \
            and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(sig)
    assert victim.wait(timeout=60) == code
    err = victim.stderr.read().strip().splitlines()
    assert err and "interrupted by" in err[-1] and "groklab resume" in err[-1]
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["steps"] < 400
    res = _cli("resume", str(tmp_path / "v"), "--no-progress", threads=2)
    assert res.wait(timeout=300) == 0, res.stderr.read()
    assert strip_time(load_run(tmp_path / "ref").metrics) == \
        strip_time(load_run(tmp_path / "v").metrics)


class _Pwn:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_planted_pickle_in_resume_pt_runs_nothing(tmp_path):
    out = tmp_path / "run"
    ok = runner.invoke(app, ["train", "composition", *sets(*TINY_SETS, "train.steps=45"),
                             "--out", str(out), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    pwned = tmp_path / "PWNED"
    (out / "checkpoints" / "resume.pt").write_bytes(pickle.dumps({"step": _Pwn(pwned)}))
    torch.save({"step": _Pwn(pwned)}, out / "checkpoints" / "resume.pt")
    before = (out / "metrics.jsonl").read_text()
    result = runner.invoke(app, ["resume", str(out), "--no-progress"])
    assert not pwned.exists()
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "resume.pt is corrupt or not a groklab resume state" in result.output
    assert (out / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("what", ["empty directory", "config only", "no directory"])
def test_resume_refuses_what_is_not_a_resumable_run(tmp_path, what):
    d = tmp_path / "someone-elses"
    if what != "no directory":
        d.mkdir()
    if what == "config only":
        (d / "config.yaml").write_text("task: {name: composition}\n")
    before = sorted(p.name for p in d.rglob("*")) if d.exists() else None
    result = runner.invoke(app, ["resume", str(d), "--no-progress"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert ("no checkpoints/resume.pt" if what == "config only" else "not a groklab run") \
        in result.output
    assert (sorted(p.name for p in d.rglob("*")) if d.exists() else None) == before


def test_disk_full_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """ENOSPC during a checkpoint write: one line, exit 1, earlier files intact, resumable."""
    import groklab.rundir as rundir

    out = tmp_path / "run"
    args = ["train", "composition", *sets(*TINY_SETS, "train.steps=120", "train.resume_every=40"),
            "--out", str(out), "--no-progress"]
    real = rundir.torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second resume state, at step 80
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(rundir.torch, "save", full_disk)
    result = runner.invoke(app, args)
    monkeypatch.undo()
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 2  # "run directory: ..." and the error
    assert "No space left on device" in result.output and "resume.pt" in result.output
    assert not list(out.rglob("*.tmp"))
    assert Run.resume(out).step == 40  # the previous checkpoint is intact
    Run.resume(out).train()
    ref = Run.start(load_config("composition", None, [*TINY_SETS, "train.steps=120",
                                                      "train.resume_every=40"]), tmp_path / "r")
    ref.train()
    assert strip_time(load_run(out).metrics) == strip_time(ref.dir.read_metrics())


def test_a_torn_last_metrics_line_is_repaired_on_resume(tiny_cfg, tmp_path):
    Run.start(tiny_cfg(steps=80), tmp_path / "r").train()
    m = tmp_path / "r" / "metrics.jsonl"
    m.write_text(m.read_text() + '{"step": 81, "lo')
    Run.resume(tmp_path / "r")
    rows = [json.loads(line) for line in m.read_text().splitlines()]  # every line parses
    assert rows[-1]["step"] == 80


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    args = sets(*TINY_SETS, "train.steps=100000", "train.resume_every=20")
    first = _cli("train", "composition", *args, "--out", str(tmp_path / "r"), "--no-progress")
    resume_pt = tmp_path / "r" / "checkpoints" / "resume.pt"
    deadline = time.time() + 120
    while not resume_pt.exists() and time.time() < deadline:
        time.sleep(0.05)
    try:
        second = _cli("resume", str(tmp_path / "r"), "--no-progress")
        assert second.wait(timeout=120) == 2
        err = second.stderr.read().strip().splitlines()
        assert len(err) == 1 and f"being written by pid {first.pid}" in err[0]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed writer's lock is stale: a resume takes it over
    third = _cli("resume", str(tmp_path / "r"), "--no-progress")
    time.sleep(0.5)
    third.send_signal(signal.SIGKILL)
    third.wait()
    assert "being written" not in third.stderr.read()
