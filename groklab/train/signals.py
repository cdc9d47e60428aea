"""Ctrl-C and SIGTERM during training: stop at the next step boundary with a resumable
checkpoint and a summary whose status is ``interrupted``; exit 130 / 143 as shells report. A
second Ctrl-C aborts at once; the last checkpoint stays valid because every file is written
atomically."""

from __future__ import annotations

import os
import signal
import sys
import threading


class Interrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the run stopped at a step boundary with a resumable checkpoint."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as shells report
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; "
                         "continue with 'groklab resume'")


class Interrupts:
    """SIGINT / SIGTERM set a flag the loop reads at the next step boundary; a second SIGINT
    aborts at once (the last checkpoint stays valid: every file is written atomically)."""

    def __enter__(self):
        self.signum = None
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if os.environ.get("GROKLAB_QUIET_SIGNALS") is None:
            print(f"\ngroklab: {signal.Signals(signum).name}: stopping at the next step with a "
                  "checkpoint (Ctrl-C again to abort now)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        return False
