"""The complex-reasoning task as natural-language prompts (Wang et al. 2024, App. F).

Each test query concerns one attribute, rendered as **age** ("The age of Dapo is 7.",
"Dapo is younger than Begil.") in style ``age`` or as a numbered attribute ("The value of
attribute 3 for Dapo is 7.", "Dapo has a lower value of attribute 3 than Begil.") in style
``plain``. The context holds the training facts of that attribute, shuffled: ``full`` all of
them (ID atomic facts and trained comparisons, both orders, as the model saw them),
``retrieval`` the two-hop neighbourhood of the two query entities (facts that mention a query
entity or an entity that a training comparison links to one), ``none`` nothing. OOD atomic
facts are never in the context, as they were never trained. Entities get distinct generated
names (:func:`groklab.bridge.names.names`).
"""

from __future__ import annotations

import re

import numpy as np

from groklab.bridge.names import names
from groklab.tasks.base import TaskData

WORDS = {  # style -> words for <, =, >
    "age": ("younger", "same age", "older"),
    "plain": ("lower", "same", "higher"),
}
CONTEXTS = ("full", "retrieval", "none")


def _atomic(style: str, k: int, a: str, v: int) -> str:
    return f"The age of {a} is {v}." if style == "age" else \
        f"The value of attribute {k} for {a} is {v}."


def _comparison(style: str, k: int, a: str, b: str, label: int) -> str:
    if style == "age":
        rel = ("younger than", "in the same age as", "older than")[label]
        return f"{a} is {rel} {b}."
    rel = ("a lower value of", "the same value of", "a higher value of")[label]
    return f"{a} has {rel} attribute {k} {'as' if label == 1 else 'than'} {b}."


def question(style: str, k: int, a: str, b: str) -> str:
    if style == "age":
        q = f"Is {a} younger than, older than, or in the same age as {b}?"
        opts = '"younger", "older" or "same age"'
    else:
        q = f"Is the value of attribute {k} for {a} lower than, higher than, or the same as for {b}?"
        opts = '"lower", "higher" or "same"'
    return f"Question: {q} Give your final answer ({opts}) after \"final answer:\"."


_Q = {
    "age": re.compile(r"Question: Is (\w+) younger than, older than, or in the same age as (\w+)\?"),
    "plain": re.compile(r"Question: Is the value of attribute (\d+) for (\w+) lower than, "
                        r"higher than, or the same as for (\w+)\?"),
}


def parse_question(prompt: str, style: str) -> tuple[int | None, str, str]:
    """(attribute or None for style age, first name, second name) of a prompt's question."""
    m = _Q[style].search(prompt)
    if m is None:
        raise ValueError("no complex-reasoning question found in the prompt")
    return (None, *m.groups()) if style == "age" else (int(m[1]), m[2], m[3])


def items(task: TaskData, split: str, style: str, context: str, name_seed: int,
          limit: int | None, seed: int) -> list[dict]:
    ex = task.probes[split]
    kind = ex.meta["kind"]
    rows = np.flatnonzero(kind == 1)
    rng = np.random.default_rng(seed)
    if limit is not None and rows.size > limit:
        rows = np.sort(rng.choice(rows, size=limit, replace=False))
    n_ent = task.arrays["values"].shape[0]
    nm = names(n_ent, name_seed)
    tm = task.train.meta
    t_attr, t_e1, t_e2, t_v1, t_v2 = (tm[k] for k in ("attribute", "e1", "e2", "v1", "v2"))
    labels = WORDS[style]
    out = []
    for i in rows:
        k, e1, e2 = (int(ex.meta[c][i]) for c in ("attribute", "e1", "e2"))
        label = int(np.sign(ex.meta["v1"][i] - ex.meta["v2"][i]) + 1)
        facts = np.flatnonzero(t_attr == k) if context != "none" else np.zeros(0, np.int64)
        if context == "retrieval":
            touch = np.zeros(n_ent, dtype=bool)
            touch[[e1, e2]] = True
            cmp = t_e2[facts] >= 0
            near = touch[t_e1[facts]] | (touch[np.maximum(t_e2[facts], 0)] & cmp)
            hop = np.zeros(n_ent, dtype=bool)
            hop[t_e1[facts][near]] = True
            hop[t_e2[facts][near & cmp]] = True
            hop |= touch
            facts = facts[hop[t_e1[facts]] | (hop[np.maximum(t_e2[facts], 0)] & cmp)]
        facts = rng.permutation(facts)
        lines = [_atomic(style, k, nm[t_e1[f]], int(t_v1[f])) if t_e2[f] < 0 else
                 _comparison(style, k, nm[t_e1[f]], nm[t_e2[f]],
                             int(np.sign(t_v1[f] - t_v2[f]) + 1)) for f in facts]
        prompt = "\n".join([*lines, question(style, k, nm[e1], nm[e2])])
        out.append({
            "id": f"complex-{split}-{i}",
            "prompt": prompt,
            "answer": labels[label],
            "meta": {"task": "complex", "split": split, "label": "<=>"[label],
                     "variant": f"{style}/{context}", "style": style, "context": context,
                     "attribute": k, "e1": e1, "e2": e2, "names": [nm[e1], nm[e2]],
                     "name_seed": name_seed, "n_facts": int(facts.size),
                     "input_ids": ex.inputs[i].tolist(), "answer_pos": int(ex.answer_pos[i]),
                     "target_id": int(ex.targets[i])},
        })
    return out


_UNDECIDED = re.compile(r"cannot|can't|can not|unable to|not possible|undetermin|insufficient|"
                        r"not enough|unknown|impossible to")


def parse_answer(text: str, style: str) -> str:
    """'<', '=', '>', 'undecided' or 'unparseable'. The text after the last "final answer"
    counts when there is one; exactly one of the three words must appear in it."""
    low = text.lower()
    cut = low.rfind("final answer")
    if cut >= 0:
        low = low[cut + len("final answer"):]
    if _UNDECIDED.search(low):
        return "undecided"
    lt, eq, gt = WORDS[style]
    found = {sym for sym, w in (("<", lt), ("=", eq.split()[0]), (">", gt))
             if re.search(rf"\b{w}\b", low)}
    return found.pop() if len(found) == 1 else "unparseable"


def gold(answer: str, style: str) -> str:
    return "<=>"[WORDS[style].index(answer)]
