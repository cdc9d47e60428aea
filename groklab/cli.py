"""The ``groklab`` command line. Thin: each subcommand calls one library function.

Bad input (unknown task or key, wrong type, impossible sizes, an ``--out`` that holds another
run, a corrupt checkpoint) prints one line naming the problem and what is allowed, exits with
code 2, and writes nothing.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from groklab.config import ConfigError, load_config, preset_description, preset_names
from groklab.tasks import TASKS, TaskError
from groklab.train.rundir import RunDirError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train small models far past memorization, watch them grok, open them up.")
console = Console(stderr=True)
out_console = Console()

DEFAULT_PRESET = "composition-small"
BAD_INPUT = (ConfigError, TaskError, RunDirError)


def fail(msg: str, code: int = 2):
    console.print(f"[bold red]groklab: error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _command_line() -> str:
    return "groklab " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _interactive() -> bool:
    return sys.stderr.isatty()


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.command()
def train(
    name: str = typer.Argument(..., help="a task (composition, comparison, ...) or a preset"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with task/model/train"),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set train.lr=3e-3"),
    out: Optional[Path] = typer.Option(None, "--out", help="new run directory"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
):
    """Train a model on a task or preset into a new run directory."""
    from groklab.train import Run, TrainingDiverged

    try:
        cfg = load_config(name, config, set_)
        run = Run.start(cfg, out or _default_out(name), command=_command_line())
    except BAD_INPUT as e:
        fail(str(e))
    console.print(f"run directory: {run.dir.path}", highlight=False)
    try:
        summary = run.train(progress=_interactive() if progress is None else progress)
    except TrainingDiverged as e:
        fail(str(e), code=1)
    _print_story(summary, run.dir.path)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
):
    """Continue a run from its last rolling checkpoint; the result equals an uninterrupted run."""
    from groklab.train import Run, TrainingDiverged
    from groklab.train.rundir import RunDir

    try:
        if not RunDir(run_dir).is_run():
            raise RunDirError(f"'{run_dir}' is not a groklab run directory (no config.yaml)")
        run = Run.resume(run_dir)
    except BAD_INPUT as e:
        fail(str(e))
    console.print(f"resuming {run_dir} at step {run.step}", highlight=False)
    try:
        summary = run.train(progress=_interactive() if progress is None else progress)
    except TrainingDiverged as e:
        fail(str(e), code=1)
    _print_story(summary, run_dir)


@app.command()
def tasks():
    """List tasks with their parameters, and the presets."""
    t = Table(title="tasks", show_lines=False)
    t.add_column("task", style="bold")
    t.add_column("parameters (default)")
    t.add_column("description")
    for name, spec in sorted(TASKS.items()):
        params = ", ".join(
            f"{k}={f.default}" for k, f in spec.config_cls.model_fields.items() if k != "name"
        )
        t.add_row(name, params, spec.description)
    out_console.print(t)
    p = Table(title="presets")
    p.add_column("preset", style="bold")
    p.add_column("description")
    for name in preset_names():
        p.add_row(name, preset_description(name))
    out_console.print(p)
    out_console.print("usage: groklab train PRESET_OR_TASK [--set group.key=value ...] --out DIR")


@app.command()
def data(
    name: str = typer.Argument(..., help="a task or preset"),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set task.phi=5.4"),
    out: Path = typer.Option(..., "--out", help="new directory for the JSON Lines files"),
):
    """Write every split of a task as JSON Lines plus vocab.json."""
    from groklab.tasks import make_task
    from groklab.tasks.export import export_task

    try:
        cfg = load_config(name, None, set_)
        d = make_task(cfg.task)
        export_task(d, out)
    except BAD_INPUT as e:
        fail(str(e))
    sizes = ", ".join(f"{k} {len(v)}" for k, v in [("train", d.train), *d.probes.items()])
    out_console.print(f"wrote {out}: {sizes}", highlight=False)


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="run directory"),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set train.steps=2000"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
):
    """Train the default preset and say where the model memorized and where it generalized."""
    console.print(f"groklab demo: training '{DEFAULT_PRESET}' on the "
                  f"{'GPU' if _cuda() else 'CPU'}; about 10 minutes on 2 CPU cores", highlight=False)
    train(DEFAULT_PRESET, None, set_, out or _default_out("demo"), progress)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _print_story(summary: dict, run_dir: Path) -> None:
    """Memorization step, ID and OOD generalization, in words."""
    mem = summary.get("memorization_step")
    lines = []
    if mem is None:
        lines.append(f"did not memorize: train accuracy peaked at {summary['best']['train']:.3f}")
    else:
        lines.append(f"memorized (train accuracy >= 0.99) at step {mem}")
    for label, split in (("in-distribution", summary.get("id_split")),
                         ("out-of-distribution", summary.get("ood_split"))):
        if not split:
            continue
        step = summary["thresholds"][split]["0.95"]
        final, best = summary["final"][split], summary["best"][split]
        if step is None:
            lines.append(f"{label} ({split}): did not generalize; best {best:.3f}, final {final:.3f}")
        else:
            later = f", {step / mem:.1f}x the memorization step" if mem else ""
            lines.append(f"{label} ({split}): generalized (>= 0.95) at step {step}{later}; "
                         f"final {final:.3f}")
    lines.append(f"{summary['steps']} steps in {summary['wall_time_s']:.0f} s "
                 f"({summary.get('steps_per_s') or 0:.1f} steps/s) on {summary.get('device')}")
    lines.append(f"run directory: {run_dir} (metrics.jsonl, summary.json, checkpoints/)")
    for line in lines:
        out_console.print(line, highlight=False)


def main() -> None:
    try:
        app()
    except BAD_INPUT as e:  # raised outside a command's own handler
        console.print(f"[bold red]groklab: error:[/] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
