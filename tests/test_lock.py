import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from groklab.lock import LockError, RunLock

LOCK_PY = Path(__file__).resolve().parents[1] / "groklab" / "lock.py"

# Load groklab/lock.py by path: importing the groklab package would pull in torch and make each
# child take seconds to start, stretching the windows these tests race in.
HOLDER = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", {str(LOCK_PY)!r})
lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
try:
    held = lock.RunLock(sys.argv[1]).acquire()
except lock.LockError as e:
    print("refused", e, flush=True)
    sys.exit(0)
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
"""


def spawn_holder(run_dir, hold=60.0, start=0.0):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(start), str(hold)],
                            stdout=subprocess.PIPE, text=True)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # reaped: the pid names no process now
    return p.pid


def write_lock(run_dir: Path, pid: int, host: str | None = None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ".lock").write_text(json.dumps(
        {"pid": pid, "host": host or socket.gethostname(), "since": "2024-05-01T12:00:00"}))


def test_second_writer_is_refused_while_the_first_runs(tmp_path):
    run = tmp_path / "run"
    holder = spawn_holder(run)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError) as err:
            RunLock(run).acquire()
        msg = str(err.value)
        assert "\n" not in msg
        assert f"being written by pid {holder.pid} on {socket.gethostname()} since " in msg
        assert "wait for it to finish or stop it" in msg
        assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # untouched
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL left the lock behind; its pid is dead now, so the next writer takes over.
    assert (run / ".lock").exists()
    with RunLock(run) as lock:
        assert lock.held
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert not (run / ".lock").exists()


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path):
    run = tmp_path / "run"
    pid = dead_pid()
    write_lock(run, pid)
    lock = RunLock(run).acquire()
    rec = json.loads((run / ".lock").read_text())
    assert rec["pid"] == os.getpid() and rec["host"] == socket.gethostname()
    assert list(run.iterdir()) == [run / ".lock"]  # no temp file left from the takeover
    lock.release()
    assert list(run.iterdir()) == []


def test_release_leaves_no_file_and_removes_a_directory_it_made(tmp_path):
    run = tmp_path / "new" / "run"
    with RunLock(run):
        assert (run / ".lock").is_file()
    assert not run.exists()  # a start that wrote nothing leaves nothing

    kept = tmp_path / "kept"
    kept.mkdir()
    lock = RunLock(kept).acquire()
    (kept / "config.yaml").write_text("x: 1\n")
    lock.release()
    assert sorted(p.name for p in kept.iterdir()) == ["config.yaml"]
    lock.release()  # twice is harmless


def test_release_keeps_a_lock_that_is_no_longer_ours(tmp_path):
    run = tmp_path / "run"
    lock = RunLock(run).acquire()
    other = {"pid": 1, "host": "elsewhere", "since": "2024-05-01T12:00:00"}
    (run / ".lock").write_text(json.dumps(other))
    lock.release()
    assert json.loads((run / ".lock").read_text()) == other


def test_the_writing_process_may_lock_again(tmp_path):
    """One writer per run means one process: a run started in this process and then resumed in
    it (a notebook, a test) is still written by one process."""
    with RunLock(tmp_path):
        again = RunLock(tmp_path).acquire()
        assert again.held and json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        again.release()


def test_lock_from_another_host_is_refused_with_the_way_out(tmp_path):
    write_lock(tmp_path, dead_pid(), host="gpu-node-7")
    before = (tmp_path / ".lock").read_text()
    with pytest.raises(LockError) as err:
        RunLock(tmp_path).acquire()
    msg = str(err.value)
    assert "\n" not in msg
    assert "host gpu-node-7" in msg and "if that process is gone, delete" in msg
    assert str(tmp_path / ".lock") in msg
    assert (tmp_path / ".lock").read_text() == before


@pytest.mark.parametrize("content", ["", "{not json", '{"pid": 0, "host": "h", "since": "s"}',
                                     '{"pid": -1, "host": "h", "since": "s"}', "[1, 2]"])
def test_unreadable_lock_is_refused_not_broken(tmp_path, content):
    # pid 0 / -1 matter: os.kill(0, 0) probes our own process group and would read as "alive",
    # os.kill(-1, 0) every process we may signal.
    (tmp_path / ".lock").write_text(content)
    with pytest.raises(LockError, match="is not a groklab lock"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text() == content


def test_concurrent_takeover_of_a_stale_lock_has_one_winner(tmp_path):
    write_lock(tmp_path, dead_pid())
    start = time.time() + 1.5  # every child is past its imports before the race starts
    kids = [spawn_holder(tmp_path, hold=3.0, start=start) for _ in range(4)]
    outs = []
    for k in kids:
        out, _ = k.communicate(timeout=60)
        outs.append(out.strip())
    assert sum(o == "locked" for o in outs) == 1, outs
    assert all(o == "locked" or "being written by pid" in o for o in outs), outs


def test_lock_module_needs_no_torch():
    # The CLI and sweep workers lock before anything heavy is imported.
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location("
            f"'lock', {str(LOCK_PY)!r}); m = importlib.util.module_from_spec(spec); "
            "spec.loader.exec_module(m); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)

