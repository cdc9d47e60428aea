"""``groklab export-prompts`` and ``groklab score-prompts``: the LLM bridge (groklab.bridge)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from groklab.cli._base import BAD_INPUT, app, fail, out_console


@app.command("export-prompts")
def export_prompts(
    task: str = typer.Argument(..., help="complex or family"),
    source: str = typer.Argument(..., help="a run directory, a preset or a task name"),
    out: Path = typer.Option(..., "--out", help="JSON Lines file to write"),
    style: str = typer.Option("age", "--style", help="complex: age or plain"),
    context: str = typer.Option("retrieval", "--context", help="complex: full, retrieval, none"),
    suffix: str = typer.Option("standard", "--suffix",
                               help="family: standard, thinking, restricted or all"),
    split: Optional[str] = typer.Option(None, "--split", help="default: test_hard (complex), "
                                        "test_pairs and test_types (family)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="at most this many per split"),
    set_: List[str] = typer.Option([], "--set", help="override, e.g. --set task.entities=100"),
):
    """Write a task's test questions as natural-language prompts with gold answers."""
    from groklab.bridge.prompts import PromptError, export, write_jsonl

    try:
        rows = export(task, source, style=style, context=context, suffix=suffix, split=split,
                      limit=limit, sets=set_)
    except (PromptError, *BAD_INPUT) as e:
        fail(str(e))
    if not out.parent.is_dir():
        fail(f"--out '{out}': directory '{out.parent}' does not exist")
    write_jsonl(rows, out)
    facts = [r["meta"].get("n_facts") for r in rows if "n_facts" in r["meta"]]
    extra = f", {sum(facts) / len(facts):.0f} facts per prompt on average" if facts else ""
    out_console.print(f"wrote {out}: {len(rows)} prompts{extra}", highlight=False)


@app.command("score-prompts")
def score_prompts(
    prompts: Path = typer.Argument(..., help="the file export-prompts wrote"),
    answers: Path = typer.Argument(..., help="JSON Lines: id and response (free text)"),
    run: Optional[Path] = typer.Option(None, "--run", help="a run directory: its model's "
                                       "accuracy on the same items"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the scores as JSON"),
):
    """Score an LLM's free-text answers the papers' way, beside a grokked model."""
    from groklab.bridge.prompts import PromptError
    from groklab.bridge.scoring import score, text

    try:
        result = score(prompts, answers, run)
    except (PromptError, *BAD_INPUT) as e:
        fail(str(e))
    for line in text(result):
        out_console.print(line, highlight=False, soft_wrap=True)
    if out is not None:
        out.write_text(json.dumps(result, indent=1))
