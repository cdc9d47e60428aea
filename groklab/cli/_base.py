"""What every ``groklab`` subcommand module shares: the app, the consoles, the bad-input rule."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from groklab.config import ConfigError
from groklab.lock import LockError
from groklab.rundir import RunDirError
from groklab.tasks import TaskError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train small models far past memorization, watch them grok, open them up.")
console = Console(stderr=True)
out_console = Console()

DEMO_MINUTES = 5
BAD_INPUT = (ConfigError, TaskError, RunDirError, LockError)


def fail(msg: str, code: int = 2):
    console.print(f"[bold red]groklab: error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _command_line() -> str:
    return "groklab " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _interactive() -> bool:
    return sys.stderr.isatty()


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
