"""``score-prompts``: free-text answers scored the way the papers score them.

Complex reasoning (Wang et al. 2024, App. F): the text after the last "final answer" (the whole
text without one) must name exactly one of the three relations; "cannot decide" and anything
unreadable count as wrong. Family (Nezhurina et al. 2024): the number after "### Answer:";
no number is wrong. Accuracy comes with a 95% Wilson interval, per label (complex: < = >;
family: question type) and per variant, beside the grokked model's accuracy on the same token
rows when a run is given.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from groklab.bridge import complex_prompts, family_prompts
from groklab.bridge.prompts import PromptError, read_jsonl, read_prompts
from groklab.models.fast import forward
from groklab.rundir import LoadedRun

RESPONSE_KEYS = ("response", "output", "text", "completion", "answer")
CHANCE = {"complex": 1 / 3}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n trials ((0, 1) for n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def parse(item: dict, text: str) -> tuple[str, bool]:
    """(parsed answer, correct) for one item and one free-text response."""
    meta = item["meta"]
    if meta["task"] == "complex":
        got = complex_prompts.parse_answer(text, meta["style"])
        return got, got == complex_prompts.gold(item["answer"], meta["style"])
    got = family_prompts.parse_answer(text)
    return got, got == item["answer"]


def _responses(path: Path) -> dict[str, str]:
    out = {}
    for n, row in enumerate(read_jsonl(path, "answers"), 1):
        key = next((k for k in RESPONSE_KEYS if isinstance(row.get(k), str)), None)
        if key is None:
            raise PromptError(f"answers file '{path}' line {n} has no text under any of "
                              f"{', '.join(RESPONSE_KEYS)}")
        out[str(row["id"])] = row[key]
    return out


@torch.no_grad()
def model_correct(items: list[dict], run_dir: Path) -> np.ndarray:
    """Whether the run's final model answers each item's token row."""
    run = LoadedRun(run_dir)
    conf = run.config.task.model_dump()
    if any(it["meta"].get("task_config") != conf for it in items):
        raise PromptError(f"run '{run_dir}' was trained on other data than these prompts "
                          "(task config differs); export the prompts from that run")
    model = run.model()
    tokens = torch.tensor([it["meta"]["input_ids"] for it in items])
    pos = torch.tensor([it["meta"]["answer_pos"] for it in items])
    target = torch.tensor([it["meta"]["target_id"] for it in items])
    pred = torch.cat([forward(model, tokens[i:i + 1024], pos[i:i + 1024]).argmax(-1)
                      for i in range(0, len(items), 1024)])
    return (pred == target).numpy()


def score(prompts: Path, answers: Path, run: Path | None = None) -> dict:
    items = read_prompts(prompts)
    if not items:
        raise PromptError(f"prompts file '{prompts}' holds no items")
    resp = _responses(answers)
    unknown = sorted(set(resp) - {it["id"] for it in items})
    if unknown:
        raise PromptError(f"answers file '{answers}' has ids not in the prompts, e.g. "
                          f"'{unknown[0]}'")
    rows = []
    for it in items:
        text = resp.get(it["id"])
        got, ok = ("missing", False) if text is None else parse(it, text)
        rows.append({"id": it["id"], "label": it["meta"]["label"],
                     "variant": it["meta"]["variant"], "parsed": got, "correct": ok})
    model = model_correct(items, run) if run is not None else None
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[("all", "all")].append(i)
        groups[("label", r["label"])].append(i)
        groups[("variant", r["variant"])].append(i)
    table = []
    order = {"all": 0, "label": 1, "variant": 2}
    for (kind, name), idx in sorted(groups.items(), key=lambda g: (order[g[0][0]], g[0][1])):
        k = sum(rows[i]["correct"] for i in idx)
        lo, hi = wilson(k, len(idx))
        entry = {"group": kind, "name": name, "n": len(idx), "accuracy": k / len(idx),
                 "ci95": [lo, hi],
                 "undecided": sum(rows[i]["parsed"] == "undecided" for i in idx),
                 "unparseable": sum(rows[i]["parsed"] in ("unparseable", "missing")
                                    for i in idx)}
        if model is not None:
            entry["model_accuracy"] = float(model[idx].mean())
        table.append(entry)
    task = items[0]["meta"]["task"]
    return {"task": task, "chance": CHANCE.get(task), "n": len(items),
            "missing": sum(r["parsed"] == "missing" for r in rows), "table": table, "rows": rows}


def text(result: dict) -> list[str]:
    has_model = "model_accuracy" in result["table"][0]
    head = f"{'group':<8} {'name':<28} {'n':>5} {'LLM acc':>8} {'95% CI':>15} " \
           f"{'undecided':>9} {'unparsed':>8}" + (f" {'grokked':>8}" if has_model else "")
    lines = [f"{result['task']}: {result['n']} items, {result['missing']} without an answer"
             + (f"; chance {result['chance']:.3f}" if result["chance"] else ""), head]
    for e in result["table"]:
        ci = f"[{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]"
        lines.append(f"{e['group']:<8} {e['name']:<28} {e['n']:>5} {e['accuracy']:>8.3f} "
                     f"{ci:>15} {e['undecided']:>9} {e['unparseable']:>8}"
                     + (f" {e['model_accuracy']:>8.3f}" if has_model else ""))
    return lines
