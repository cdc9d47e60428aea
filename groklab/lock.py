"""One writer per run directory.

    with RunLock(run_dir):
        ...  # only this process writes run_dir

The lock is the file ``RUN/.lock`` holding ``{"pid", "host", "since"}``. It is created with
``O_CREAT | O_EXCL``, so of two processes starting at once exactly one creates it. A lock whose
process is gone (same host, ``os.kill(pid, 0)`` says no such process) is taken over; a lock from
another host cannot be checked from here and is refused with the way out (delete the file).

Only the standard library is imported: subprocesses and the CLI can lock without importing torch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import tempfile
import time
from pathlib import Path

LOCK_NAME = ".lock"


class LockError(ValueError):
    """The run directory is held by another writer (or its lock is unreadable); one line."""


def _host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _since_text(since: str) -> str:
    # The stored value keeps microseconds (it is part of the owner's identity); people read seconds.
    try:
        return _dt.datetime.fromisoformat(since).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return str(since)


@contextlib.contextmanager
def _takeover_mutex(run_dir: Path):
    """Serialise stale-lock takeovers on this host.

    Without it, two processes that both saw the same dead pid could each rename their lock over
    it, each re-read its own lock before the other's rename, and both believe they own the run.
    flock on the directory itself adds no file and is released by the kernel if we die.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; takeovers there are best effort
        yield
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a filesystem without flock (some network mounts): best effort
            pass
        yield
    finally:
        os.close(fd)  # also drops the flock


class RunLock:
    """Exclusive writer lock on ``run_dir`` (a context manager, or ``acquire()``/``release()``).

    ``acquire()`` creates ``run_dir`` if missing (and ``release()`` removes it again if it is
    still empty, so a refused or failed start leaves nothing behind). Not re-entrant: a second
    ``RunLock`` on the same directory in the same process is refused like any other writer.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._record: dict | None = None
        self._made_dir = False

    # ------------------------------------------------------------------ public

    @property
    def held(self) -> bool:
        return self._record is not None

    def acquire(self) -> "RunLock":
        if self._record is not None:
            raise RuntimeError(f"RunLock on '{self.run_dir}' is already held by this object")
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._made_dir = True
        try:
            self._acquire()
        except BaseException:
            self._drop_made_dir()
            raise
        return self

    def release(self) -> None:
        """Remove the lock if it is still ours; someone else's lock is left alone."""
        mine, self._record = self._record, None
        if mine is None:
            return
        if self._read_once() == mine:
            # Nobody can replace our lock between this read and the unlink: a takeover needs
            # our pid to be dead, and we are running.
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._drop_made_dir()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ internals

    def _new_record(self) -> dict:
        return {"pid": os.getpid(), "host": _host(),
                "since": _dt.datetime.now().astimezone().isoformat(timespec="microseconds")}

    def _acquire(self) -> None:
        # A few rounds: a holder may release, or a rival take over, between our steps.
        for _ in range(20):
            record = self._new_record()
            if self._create_exclusive(record):
                self._record = record
                return
            holder = self._read_settled()
            if holder is None:
                continue  # released between our create and our read: try again
            self._refuse_unless_stale(holder)
            with _takeover_mutex(self.run_dir):
                if self._read_once() != holder:
                    continue  # released or taken over meanwhile: judge the new state
                self._replace(record)
                if self._read_once() == record:
                    self._record = record
                    return
        raise LockError(f"could not lock '{self.run_dir}': its {LOCK_NAME} kept changing; "
                        "another process is starting on it, try again")

    def _refuse_unless_stale(self, holder: dict) -> None:
        pid, host, since = holder["pid"], holder["host"], _since_text(holder["since"])
        if host == _host() and pid == os.getpid():
            return  # this process already writes the run (started it, now trains it): ours
        if host != _host():
            raise LockError(
                f"'{self.run_dir}' is locked by pid {pid} on host {host} since {since}, which "
                f"cannot be checked from {_host()}; if that process is gone, delete {self.path}")
        if _pid_alive(pid):
            raise LockError(
                f"'{self.run_dir}' is being written by pid {pid} on {host} since {since}; "
                f"wait for it to finish or stop it (kill {pid})")

    def _create_exclusive(self, record: dict) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record))
            f.flush()
            os.fsync(f.fileno())
        return True

    def _replace(self, record: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.run_dir, prefix=f"{LOCK_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _read_once(self) -> dict | None | bool:
        """The record; None if there is no lock file; False if it does not parse."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            d = json.loads(text)
        except ValueError:
            return False
        ok = (isinstance(d, dict) and isinstance(d.get("pid"), int)
              and not isinstance(d["pid"], bool) and d["pid"] > 0
              and isinstance(d.get("host"), str) and isinstance(d.get("since"), str))
        # pid must be a positive int: os.kill(0, 0) or a negative pid would probe a whole
        # process group and call a lock alive that no process holds.
        return {k: d[k] for k in ("pid", "host", "since")} if ok else False

    def _read_settled(self) -> dict | None:
        # O_EXCL creates the file before its JSON is written: an empty or torn read may be a
        # rival mid-write, so give it a moment before calling the file corrupt.
        for _ in range(40):
            got = self._read_once()
            if got is not False:
                return got
            time.sleep(0.025)
        raise LockError(
            f"{self.path} is not a groklab lock (expected JSON with pid, host, since); "
            f"if no groklab process is writing '{self.run_dir}', delete {self.path}")

    def _drop_made_dir(self) -> None:
        if self._made_dir:
            self._made_dir = False
            with contextlib.suppress(OSError):  # not empty: the run wrote files, keep them
                self.run_dir.rmdir()
