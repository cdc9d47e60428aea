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
    from groklab.train import Run, TrainingDiverged

    set_ = [*set_, *(["train.tensorboard=true"] if tensorboard else []),
            *(["train.wandb=true"] if wandb else [])]
    try:
        cfg = load_config(name, config, set_)
        run = Run.start(cfg, out or _default_out(name or cfg.task.name), command=_command_line())
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
    """Train the default preset, say where the model memorized and generalized, write its report."""
    console.print(f"groklab demo: training '{DEFAULT_PRESET}' on the "
                  f"{'GPU' if _cuda() else 'CPU'}; about 5 minutes on 2 CPU cores", highlight=False)
    run_dir = out or _default_out("demo")
    train(DEFAULT_PRESET, None, set_, run_dir, progress, tensorboard=False, wandb=False)
    report(run_dir)


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
def analyze(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    fourier: bool = typer.Option(False, "--fourier",
                                 help="Fourier progress measures of a modular-arithmetic run: "
                                 "key frequencies, Gini, restricted/excluded loss (Nanda et al.)"),
    checkpoints: str = typer.Option("all", "--checkpoints",
                                    help="all, last, or a comma-separated list of steps"),
    logit_lens: bool = typer.Option(False, "--logit-lens",
                                    help="rank of the bridge / values / answer decoded from "
                                    "every layer x position (Wang et al. 2024)"),
    causal_tracing: bool = typer.Option(False, "--causal-tracing",
                                        help="same-type counterfactual noising per layer x "
                                        "position, and ROME's noise variant"),
    rome: str = typer.Option("ends", "--rome",
                             help="ROME tracing at: ends (early + final checkpoint), all, none"),
    examples: int = typer.Option(300, "--examples", min=1,
                                 help="rows drawn from each split (fixed seed)"),
):
    """Open a run up: each flag runs one analysis over the run's checkpoints and writes
    RUN/analysis/<name>.npz and RUN/figures/<name>*.png (nothing is written on an error)."""
    from groklab.analysis.sources import AnalysisError
    from groklab.train.rundir import RunDir

    chosen = {"--fourier": fourier, "--logit-lens": logit_lens,
              "--causal-tracing": causal_tracing}
    if not any(chosen.values()):
        fail(f"name at least one analysis: {', '.join(chosen)}")
    if not RunDir(run_dir).is_run():
        fail(f"'{run_dir}' is not a groklab run directory (no config.yaml)")
    if rome not in ("ends", "all", "none"):
        fail(f"--rome '{rome}' is not one of: ends, all, none")
    circuit_results = []  # computed before anything is written; saved after the others
    try:
        if causal_tracing and not logit_lens and (run_dir / "analysis/logit_lens.npz").exists():
            from groklab.analysis.logit_lens import LogitLensResult

            LogitLensResult.load(run_dir)  # the circuit summary reads it: refuse a bad one now
        if logit_lens:
            from groklab.analysis import logit_lens as lens_mod

            circuit_results.append(lens_mod.run(run_dir, checkpoints=checkpoints,
                                                n_examples=examples))
        if causal_tracing:
            from groklab.analysis import causal_tracing as tracing_mod

            circuit_results.append(tracing_mod.run(
                run_dir, checkpoints=checkpoints, n_examples=examples,
                rome=False if rome == "none" else rome))
    except (*BAD_INPUT, AnalysisError) as e:
        fail(str(e))
    if fourier:
        from groklab.analysis import fourier as fourier_analysis

        try:
            result = fourier_analysis.run(run_dir, checkpoints=checkpoints)
        except (*BAD_INPUT, AnalysisError) as e:
            fail(str(e))
        paths = result.save(run_dir)
        _print_fourier(result.summary(), paths)
    if circuit_results:
        _save_circuit(circuit_results, run_dir)


def _save_circuit(results: list, run_dir: Path) -> None:
    """Save logit lens / causal tracing results and, with the lens, the circuit summary."""
    from groklab.analysis import circuit

    paths = []
    for r in results:
        paths += r.save(run_dir)
    if (run_dir / "analysis" / "logit_lens.npz").exists():
        summary = circuit.run(run_dir)
        paths += summary.save(run_dir)
        out_console.print(summary.text(), highlight=False, soft_wrap=True)
    out_console.print(f"wrote {len(paths)} files under {run_dir}/analysis and {run_dir}/figures",
                      highlight=False)


def _print_fourier(s: dict, paths: list[Path]) -> None:
    f = s["final"]
    lines = [
        f"fourier ({s['op']} mod {s['p']}, {s['n_checkpoints']} checkpoints): key frequencies "
        f"{s['key_freqs']}; at step {s['steps'][1]}: test acc {f['test_acc']:.3f}, "
        f"{f['embed_n_freq_90']} frequencies carry 90% of W_E's squared norm "
        f"({f['embed_key_fraction']:.2f} in the key ones), Gini W_E {f['gini_embed']:.2f}",
        f"phases: memorized {s['step_memorized']}, cleanup from {s['step_cleanup']}, "
        f"test acc 0.99 at {s['step_generalized']}; below 0.1 ln p: restricted loss at "
        f"{s['step_restricted_drop']}, test loss at {s['step_test_drop']}",
        "wrote " + ", ".join(str(p) for p in paths),
    ]
    for line in lines:
        out_console.print(line, highlight=False)


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


if __name__ == "__main__":
    main()
