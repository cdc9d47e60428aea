"""The ``groklab`` command line. Thin: each subcommand calls one library function.

Bad input (unknown task or key, wrong type, impossible sizes, an ``--out`` that holds another
run, a corrupt checkpoint) prints one line naming the problem and what is allowed, exits with
code 2, and writes nothing.

A family of subcommands lives in its own module here (``groklab/cli/<topic>.py``), decorating
``app`` from :mod:`groklab.cli._base`, and is imported at the bottom of this file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from groklab.cli._base import (  # noqa: F401  (re-exported for tests and plugins)
    BAD_INPUT,
    DEMO_MINUTES,
    _command_line,
    _default_out,
    _interactive,
    app,
    console,
    fail,
    out_console,
)
from groklab.config import load_config, preset_description, preset_names
from groklab.rundir import RunDir, RunDirError, RunWriteError
from groklab.tasks import TASKS


@app.command()
def train(
    name: Optional[str] = typer.Argument(None, help="a task (composition, comparison, ...) or "
                                         "a preset; optional when --config sets task.name"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with task/model/train"),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set train.lr=3e-3"),
    out: Optional[Path] = typer.Option(None, "--out", help="new run directory"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
    tensorboard: bool = typer.Option(False, "--tensorboard",
                                     help="also write TensorBoard event files into the run"),
    wandb: bool = typer.Option(False, "--wandb", help="also log to Weights & Biases"),
):
    """Train a model on a task or preset into a new run directory."""
    from groklab.train import Run

    set_ = [*set_, *(["train.tensorboard=true"] if tensorboard else []),
            *(["train.wandb=true"] if wandb else [])]
    try:
        cfg = load_config(name, config, set_)
        run = Run.start(cfg, out or _default_out(name or cfg.task.name), command=_command_line())
    except BAD_INPUT as e:
        fail(str(e))
    console.print(f"run directory: {run.dir.path}", highlight=False, soft_wrap=True)
    _train(run, progress)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
):
    """Continue a run from its last rolling checkpoint; the result equals an uninterrupted run."""
    import warnings

    from groklab.train import Run

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = Run.resume(run_dir)
    except BAD_INPUT as e:
        fail(str(e))
    for w in caught:
        console.print(f"[yellow]groklab: warning:[/] {w.message}", highlight=False)
    console.print(f"resuming {run_dir} at step {run.step}", highlight=False)
    _train(run, progress)


def _train(run, progress: Optional[bool]) -> None:
    """Train, then tell the story; a divergence, a failed write or an interrupt is one line."""
    from groklab.train import Interrupted, TrainingDiverged

    try:
        summary = run.train(progress=_interactive() if progress is None else progress)
    except (TrainingDiverged, RunWriteError) as e:
        fail(str(e), code=1)
    except Interrupted as e:
        fail(str(e), code=e.exit_code)
    _print_story(summary, run.dir.path)


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
    out: Optional[Path] = typer.Option(None, "--out", help="directory for the demo's runs"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
    tiny: bool = typer.Option(False, "--tiny", hidden=True, help="the test suite's sizes"),
):
    """Watch a model grok and open it up: modular addition memorizes, then generalizes 5-11x later
    (its Fourier circuit); composition forms its bridge-entity circuit (logit lens and causal
    tracing before and after); the criteria table and the reports."""
    from groklab.reproduce.base import StudyError
    from groklab.reproduce.table import demo_command

    out = out or _default_out("demo")
    console.print(f"groklab demo on the {'GPU' if _cuda() else 'CPU'} into {out}: two runs and "
                  f"their circuits, about {DEMO_MINUTES} minutes on 2 CPU cores", highlight=False)
    try:
        demo_command(out, tiny, _interactive() if progress is None else progress, out_console,
                     console)
    except (*BAD_INPUT, StudyError) as e:
        fail(str(e))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory")):
    """Write RUN/report.html: curves, config, summary and every analysis in the run."""
    from groklab.report import build_report

    try:
        path = build_report(run_dir)
    except BAD_INPUT as e:
        fail(str(e))
    out_console.print(f"report: {path}", highlight=False)


@app.command()
def compare(
    run_dirs: List[Path] = typer.Argument(..., help="two or more run directories"),
    out: Path = typer.Option(..., "--out", help="directory for report.html and figures/"),
):
    """Overlay several runs (a sweep, depths, accelerators) in one report."""
    from groklab.report import build_compare

    try:
        path = build_compare(run_dirs, out)
    except BAD_INPUT as e:
        fail(str(e))
    out_console.print(f"comparison: {path}", highlight=False)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    format: str = typer.Option("hf", "--format", help="hf: a Hugging Face transformers GPT-2"),
    out: Path = typer.Option(..., "--out", help="new directory"),
    step: Optional[int] = typer.Option(None, "--step", help="checkpoint step (default: last)"),
):
    """Export a run's model for other tools (--format hf: GPT-2 config, safetensors, tokenizer)."""
    from groklab.models.hf import ExportError, export_hf

    if format != "hf":
        fail(f"unknown --format '{format}'; formats: hf")
    try:
        path = export_hf(run_dir, out, step=step)
    except (*BAD_INPUT, ExportError) as e:
        fail(str(e))
    out_console.print(f"exported: {path} (AutoModelForCausalLM.from_pretrained('{path}'))",
                      highlight=False)


@app.command()
def sweep(
    spec: str = typer.Argument(..., help="a sweep spec YAML or a shipped sweep (composition-phi)"),
    out: Path = typer.Option(..., "--out", help="sweep directory (run again to resume)"),
    batched: bool = typer.Option(False, "--batched",
                                 help="train points that share shapes as one batched model"),
    max_batch: int = typer.Option(64, "--max-batch", help="members per batched model"),
    workers: int = typer.Option(1, "--workers", help="local processes (backend local)"),
    backend: str = typer.Option("local", "--backend", help="local or ray"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Ray cluster: auto, ray://host:10001, ..."),
    ray_cpus: float = typer.Option(1.0, "--ray-cpus", help="CPUs per Ray task"),
    ray_gpus: float = typer.Option(0.0, "--ray-gpus", help="GPUs per Ray task (0.25: 4 a GPU)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the points, train nothing"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
):
    """Train every point of a sweep (a base preset plus axes) into DIR/points/<slug>/."""
    from groklab.sweep import SweepError, load_spec, run_sweep
    from groklab.sweep.runner import plan_units, prepare_sweep_dir, sweep_summary

    try:
        s = load_spec(spec)
        if backend not in ("local", "ray"):
            raise SweepError(f"unknown --backend '{backend}'; backends: local, ray")
        if dry_run:
            prepare_sweep_dir(s, out)
            units = plan_units(s, out, batched, max_batch)
            for unit in units:
                out_console.print("  ".join(p.slug for p in unit), highlight=False)
            out_console.print(f"{len(s.points)} points, {sum(map(len, units))} to train in "
                              f"{len(units)} unit(s); varying {', '.join(s.varying) or 'nothing'}",
                              highlight=False)
            return
        console.print(f"sweep directory: {out} ({len(s.points)} points)", highlight=False)
        rows = run_sweep(s, out, backend=backend, workers=workers, batched=batched,
                         max_batch=max_batch, ray_address=ray_address, ray_cpus=ray_cpus,
                         ray_gpus=ray_gpus,
                         progress=_interactive() if progress is None else progress,
                         command=_command_line(),
                         log=lambda line: console.print(line, highlight=False))
    except (*BAD_INPUT, SweepError) as e:
        fail(str(e))
    out_console.print(f"sweep {out}: {sweep_summary(rows)}; index {out / 'sweep.jsonl'}; "
                      f"phase diagrams: groklab phase {out}", highlight=False, soft_wrap=True)
    if any(r["status"] in ("failed", "diverged") for r in rows):
        raise typer.Exit(1)  # as `groklab train` does for a diverged run


@app.command()
def phase(
    sweep_dir: Path = typer.Argument(..., help="a sweep directory"),
    split: Optional[str] = typer.Option(None, "--split", help="split (default: the ID split)"),
    threshold: float = typer.Option(0.95, "--threshold", help="accuracy that counts as reached"),
    x: Optional[str] = typer.Option(None, "--x", help="swept key on the x axis (task.phi)"),
    y: Optional[str] = typer.Option(None, "--y", help="swept key on the y axis"),
    unit: str = typer.Option("steps", "--unit", help="steps or epochs"),
):
    """Phase diagrams of a sweep: steps to threshold and final accuracy over the swept keys."""
    import numpy as np

    from groklab.sweep import SweepError
    from groklab.sweep.phase import run as phase_run

    try:
        result = phase_run(sweep_dir, split=split, threshold=threshold, x=x, y=y, unit=unit)
        paths = result.save(sweep_dir)
    except (*BAD_INPUT, SweepError) as e:
        fail(str(e))
    med = result.median_steps
    for j, yv in enumerate(result.y_values):
        cells = ", ".join(f"{xv}: {'never' if np.isinf(v) else '-' if np.isnan(v) else f'{v:.0f}'}"
                          for xv, v in zip(result.x_values, med[j]))
        head = f"{result.y_key}={yv}  " if result.y_key else ""
        out_console.print(f"{head}{unit} until {result.split} >= {threshold:g} by "
                          f"{result.x_key}: {cells}", highlight=False, soft_wrap=True)
    out_console.print("wrote " + ", ".join(str(p) for p in paths) + f", "
                      f"{sweep_dir / 'analysis' / 'phase.npz'}", highlight=False, soft_wrap=True)


@app.command()
def reproduce(
    study: Optional[str] = typer.Argument(None, help="a study (groklab reproduce --list)"),
    scale: str = typer.Option("cpu", "--scale", help="cpu (minutes on 2 cores) or gpu (paper)"),
    seeds: int = typer.Option(1, "--seeds", help="seeds per seeded run"),
    out: Optional[Path] = typer.Option(None, "--out", help="directory (run again to resume)"),
    list_: bool = typer.Option(False, "--list", help="every study, its claims and its time"),
):
    """Check a published finding: train the study's runs, evaluate its claims, write the table
    (terminal, DIR/reproduction.json, DIR/report.html)."""
    from groklab.reproduce.base import StudyError
    from groklab.reproduce.table import command

    try:
        command(study, scale, seeds, out or _default_out(f"reproduce-{study}"), list_,
                out_console, console)
    except (*BAD_INPUT, StudyError) as e:
        fail(str(e))


def analyze(run_dir: Path, checkpoints: Optional[str], rome: str, examples: int,
            opt: List[str], **chosen: bool):
    """Open a run up: each flag runs one analysis over the run's checkpoints and writes
    RUN/analysis/<name>.npz and RUN/figures/<name>*.png (nothing is written on an error)."""
    from groklab.analysis.registry import ANALYSES
    from groklab.analysis.sources import AnalysisError

    names = [n for n, on in chosen.items() if on]
    if not names:
        fail(f"name at least one analysis: {', '.join(a.flag for a in ANALYSES.values())}")
    try:
        RunDir(run_dir).require_run()
    except RunDirError as e:
        fail(str(e))
    if rome not in ("ends", "all", "none"):
        fail(f"--rome '{rome}' is not one of: ends, all, none")
    from groklab.cli.analysis_options import parse_opts

    try:
        settings = parse_opts(opt, names)
    except ValueError as e:
        fail(str(e))
    shared = {"checkpoints": checkpoints, "n_examples": examples,
              "rome": False if rome == "none" else rome}
    results = []  # every analysis is computed before anything is written
    try:
        for name in names:
            a = ANALYSES[name]
            if not a.reads:
                own = {k: shared[k] for k in a.options if shared[k] is not None}
                results.append((a, a.run(run_dir, **own, **settings.get(name, {}))))
        ran = {a.name for a, _ in results}
        for a in ANALYSES.values():  # a summary that will read saved results: refuse bad ones now
            if a.reads and (a.name in names or ran & set(a.reads)):
                for dep in set(a.reads) - ran:
                    if (run_dir / "analysis" / f"{dep}.npz").exists():
                        d = ANALYSES[dep]
                        getattr(d.load(), d.result_type).load(run_dir)
    except (*BAD_INPUT, AnalysisError) as e:
        fail(str(e))
    paths = []
    for _, result in results:
        paths += result.save(run_dir)
        out_console.print(result.text(), highlight=False, soft_wrap=True)
    for a in ANALYSES.values():  # analyses that read saved results, once those are there
        if a.reads and (a.name in names or ran & set(a.reads)):
            try:
                result = a.run(run_dir)
            except (*BAD_INPUT, AnalysisError) as e:
                if a.name in names:
                    fail(str(e))
                continue
            paths += result.save(run_dir)
            out_console.print(result.text(), highlight=False, soft_wrap=True)
    out_console.print(f"wrote {len(paths)} files under {run_dir}/analysis and {run_dir}/figures",
                      highlight=False)


def _register_analyze() -> None:
    """``groklab analyze`` gets one flag per analysis in the registry."""
    import inspect

    from groklab.analysis.registry import ANALYSES

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                          default=typer.Argument(..., help="a run directory")),
        inspect.Parameter("checkpoints", kw, annotation=Optional[str], default=typer.Option(
            None, "--checkpoints", help="all, last, or a list of steps (early: the memorization "
            "regime), e.g. early,last (default: all; sae: last)")),
        inspect.Parameter("rome", kw, annotation=str, default=typer.Option(
            "ends", "--rome", help="causal tracing: ROME's noise variant at ends (early + "
            "final checkpoint), all, none")),
        inspect.Parameter("examples", kw, annotation=int, default=typer.Option(
            300, "--examples", min=1, help="rows drawn from each split (fixed seed)")),
        inspect.Parameter("opt", kw, annotation=List[str], default=typer.Option(
            [], "--opt", help="an analysis setting NAME.KEY=VALUE, e.g. sae.k=8, "
            "sae.hooks=blocks.1.hook_resid_post, sae.kind=jumprelu, llc.nbeta=30")),
    ] + [inspect.Parameter(a.name, kw, annotation=bool,
                           default=typer.Option(False, a.flag, help=a.description))
         for a in ANALYSES.values()]

    def command(**kwargs):
        analyze(**kwargs)

    command.__signature__ = inspect.Signature(params)
    command.__doc__ = analyze.__doc__
    app.command("analyze")(command)


_register_analyze()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _print_story(summary: dict, run_dir: Path) -> None:
    """Memorization step, ID and OOD generalization, in words (the report's opening lines)."""
    from groklab.report.story import story

    for line in story(summary):
        out_console.print(line, highlight=False)
    out_console.print(f"run directory: {run_dir} (metrics.jsonl, summary.json, checkpoints/)",
                      highlight=False)


def main() -> None:
    try:
        app()
    except BAD_INPUT as e:  # raised outside a command's own handler
        console.print(f"[bold red]groklab: error:[/] {e}", highlight=False)
        sys.exit(2)


# families of subcommands, each in its own module (they decorate `app` on import)
from groklab.cli import inject, prompts, sample  # noqa: E402,F401

if __name__ == "__main__":
    main()
