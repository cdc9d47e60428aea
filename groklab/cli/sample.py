"""``groklab sample``: text from any language-model run (groklab/sampling.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from groklab.cli._base import BAD_INPUT, app, fail, out_console


@app.command()
def sample(
    run_dir: Path = typer.Argument(..., help="a run directory of an lm task (stories, markov)"),
    prompt: str = typer.Option("", "--prompt", help="text to continue (default: a new story)"),
    temperature: float = typer.Option(1.0, "--temperature", help="0: greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k best tokens"),
    n: int = typer.Option(1, "--n", help="number of samples"),
    seed: int = typer.Option(0, "--seed", help="the same seed gives the same samples"),
    max_tokens: int = typer.Option(200, "--max-tokens", help="tokens generated per sample"),
    step: Optional[int] = typer.Option(None, "--step", help="checkpoint step (default: last)"),
):
    """Continue a prompt with a trained language model, reproducibly with --seed."""
    from groklab.sampling import SampleError
    from groklab.sampling import sample as sample_run

    try:
        texts = sample_run(run_dir, prompt, n=n, temperature=temperature, top_k=top_k,
                           seed=seed, max_tokens=max_tokens, step=step)
    except (SampleError, *BAD_INPUT) as e:
        fail(str(e))
    for i, text in enumerate(texts):
        if i:
            out_console.print()
        out_console.print(text, highlight=False, soft_wrap=True, markup=False)
