"""``groklab inject``: teach a composition run new facts through an adapter (groklab/train/inject.py)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from groklab.cli._base import BAD_INPUT, _command_line, app, console, fail, out_console


@app.command()
def inject(
    run_dir: Path = typer.Argument(..., help="a trained composition run"),
    facts: str = typer.Option("new-relations", "--facts",
                              help="new-relations, new-entities, or a file of 'head relation "
                                   "tail' lines"),
    n_facts: int = typer.Option(200, "--n-facts", help="how many new facts to make"),
    adapter: str = typer.Option("lora", "--adapter", help="lora, mora, full or last"),
    rank: int = typer.Option(8, "--rank", help="LoRA rank; MoRA spends the same parameters"),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="LoRA alpha (default: rank)"),
    dropout: float = typer.Option(0.0, "--dropout", help="LoRA dropout"),
    mora_type: int = typer.Option(1, "--mora-type", help="1: sharing, 6: rotation"),
    target: List[str] = typer.Option([], "--target",
                                     help="maps to adapt (globs), e.g. 'blocks.*.mlp.W_in'; "
                                          "default: every attention and MLP matrix"),
    last_layers: int = typer.Option(1, "--last-layers", help="--adapter last: blocks trained"),
    adapter_path: str = typer.Option("auto", "--adapter-path",
                                     help="LoRA/MoRA as one weight W0 + dW ('weight'), on "
                                          "activations ('activation'), or 'auto': activations "
                                          "from d_model 256 up (the faster form by size)"),
    replay: float = typer.Option(0.0, "--replay", help="old training rows per new fact"),
    steps: int = typer.Option(300, "--steps"),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", help="new output directory"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
):
    """Inject new atomic facts into a grokked composition run; score memorization, retention
    and two-hop composition through the new facts."""
    from groklab.models.adapters import DEFAULT_TARGETS, AdapterError
    from groklab.train.inject import InjectConfig, start_injection

    ic = InjectConfig(facts=facts, n_facts=n_facts, adapter=adapter, rank=rank, alpha=alpha,
                      dropout=dropout, mora_type=mora_type,
                      targets=tuple(target) or DEFAULT_TARGETS, last_layers=last_layers,
                      adapter_path=adapter_path,
                      replay=replay, steps=steps, lr=lr, seed=seed)
    try:
        run = start_injection(run_dir, out, ic, command=_command_line())
    except (*BAD_INPUT, AdapterError) as e:
        fail(str(e))
    console.print(f"output: {run.dir.path}", highlight=False, soft_wrap=True)
    summary = run.train(progress=bool(progress))
    run.save_adapter()
    f = summary["final"]
    out_console.print(
        f"{ic.adapter} ({run.extra['n_params']:,} trainable): new facts "
        f"{f.get('new', 0):.3f} (0.99 at step {summary['memorization_step']}), retention "
        f"atomic_id {f.get('atomic_id', 0):.3f}, test_id {f.get('test_id', 0):.3f}; composition "
        f"first-hop-new {f.get('compose_first', 0):.3f}, second-hop-new "
        f"{f.get('compose_second', 0):.3f}", highlight=False)
