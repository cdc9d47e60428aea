"""``export-prompts``: a task's test questions as JSON Lines prompts with gold answers.

One object per line: ``{"id", "prompt", "answer", "meta"}``; ``meta`` holds the task, split,
``label`` (complex: < = >; family: the question type), ``variant`` (complex: style/context;
family: the answer-format suffix), the token row the grokked model answers (``input_ids``,
``answer_pos``, ``target_id``) and ``task_config``, so ``score-prompts --run`` can check that a
run was trained on the same data.
"""

from __future__ import annotations

import json
from pathlib import Path

from groklab.bridge import complex_prompts, family_prompts
from groklab.config import load_config
from groklab.rundir import LoadedRun, RunDir
from groklab.tasks import TaskError, make_task

TASKS = ("complex", "family")
STYLES = tuple(complex_prompts.WORDS)
CONTEXTS = complex_prompts.CONTEXTS
SUFFIXES = (*family_prompts.SUFFIXES, "all")


class PromptError(ValueError):
    """Bad input to the bridge; the message is one line naming the problem."""


def task_config(source: str, sets: list[str] | None = None):
    """A run directory's task config, or a preset's / task's (with ``--set`` overrides)."""
    if Path(source).is_dir() and RunDir(Path(source)).is_run():
        if sets:
            raise PromptError("--set cannot change a run's task; pass a preset or task name")
        return LoadedRun(source).config.task
    return load_config(source, None, sets).task


def export(task: str, source: str, *, style: str = "age", context: str = "retrieval",
           suffix: str = "standard", split: str | None = None, limit: int | None = None,
           sets: list[str] | None = None, seed: int = 0) -> list[dict]:
    if task not in TASKS:
        raise PromptError(f"task '{task}' has no prompts; tasks: {', '.join(TASKS)}")
    if style not in STYLES:
        raise PromptError(f"--style {style!r}; use one of {', '.join(STYLES)}")
    if context not in CONTEXTS:
        raise PromptError(f"--context {context!r}; use one of {', '.join(CONTEXTS)}")
    if suffix not in SUFFIXES:
        raise PromptError(f"--suffix {suffix!r}; use one of {', '.join(SUFFIXES)}")
    if limit is not None and limit < 1:
        raise PromptError(f"--limit {limit}; it must be >= 1")
    cfg = task_config(source, sets)
    if cfg.name != task:
        raise PromptError(f"'{source}' is a {cfg.name} task, not {task}")
    data = make_task(cfg)
    splits = [split] if split else ([data.ood_split] if task == "complex" else
                                    [s for s in ("test_pairs", "test_types") if s in data.probes])
    for s in splits:
        if s not in data.probes:
            raise PromptError(f"split '{s}' is not in the task; splits: {', '.join(data.probes)}")
    out = []
    for s in splits:
        if task == "complex":
            out += complex_prompts.items(data, s, style, context, cfg.seed, limit, seed)
        else:
            sufs = list(family_prompts.SUFFIXES) if suffix == "all" else [suffix]
            out += family_prompts.items(data, s, sufs, limit, seed)
    conf = cfg.model_dump()
    for it in out:
        it["meta"]["task_config"] = conf
    return out


def write_jsonl(rows: list[dict], path: Path) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path, what: str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"{what} file '{path}' does not exist")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise PromptError(f"{what} file '{path}' line {n} is not JSON") from None
        if not isinstance(row, dict) or "id" not in row:
            raise PromptError(f"{what} file '{path}' line {n} is not an object with an 'id'")
        rows.append(row)
    return rows


def read_prompts(path: Path) -> list[dict]:
    rows = read_jsonl(path, "prompts")
    for n, r in enumerate(rows, 1):
        if not {"prompt", "answer", "meta"} <= set(r) or r["meta"].get("task") not in TASKS:
            raise PromptError(f"prompts file '{path}' item {n} lacks prompt/answer/meta.task "
                              f"(write it with groklab export-prompts)")
    return rows


def parse_back(item: dict) -> dict:
    """The question a prompt asks, read from its text (what a reader of the prompt sees)."""
    meta = item["meta"]
    if meta["task"] == "complex":
        k, a, b = complex_prompts.parse_question(item["prompt"], meta["style"])
        return {"attribute": k, "names": [a, b]}
    return family_prompts.parse_question(item["prompt"])


def answer_with(items: list[dict], generate) -> list[dict]:
    """ANSWERS rows from any callable prompt -> text (an offline model, a stub, ...)."""
    return [{"id": it["id"], "response": str(generate(it["prompt"]))} for it in items]


__all__ = ["PromptError", "TaskError", "answer_with", "export", "parse_back", "read_jsonl",
           "read_prompts", "write_jsonl"]
