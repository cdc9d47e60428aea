"""The family (Alice in Wonderland) task as natural-language prompts (Nezhurina et al. 2024).

"Alice has 3 brothers and she also has 6 sisters. How many sisters does Alice's brother have?"
followed by one of the paper's answer-format suffixes (``SUFFIXES``: standard, thinking,
restricted; all ask for the answer as "### Answer: "). Cousin questions add "Alice's only cousins
are the children of her aunt, who has P sons and Q daughters."; two-step questions ask about
"the sister of Alice's brother". A male subject is Bob (he/his).
"""

from __future__ import annotations

import re

import numpy as np

from groklab.tasks.base import TaskData
from groklab.tasks.family import SUBJECTS, split_type

SUFFIXES = {
    "standard": 'Provide the final answer in following form: "### Answer: ".',
    "thinking": ("Before providing answer, think carefully and double check the path to the "
                 'correct solution for any mistakes. Provide then the final answer in following '
                 'form: "### Answer: ".'),
    "restricted": ("To answer the question, DO NOT OUTPUT ANY TEXT EXCEPT following format that "
                   'contains final answer: "### Answer: ".'),
}
_HOP = {"brother": "brother", "sister": "sister", "mcousin": "male cousin",
        "fcousin": "female cousin"}
_ASK = {"brothers": "brothers", "sisters": "sisters", "mcousins": "male cousins",
        "fcousins": "female cousins"}


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def render(male: bool, n: int, m: int, p: int, q: int, qtype: str) -> str:
    """The question (no suffix) for one row."""
    s = SUBJECTS[int(male)]
    pron, poss = ("he", "his") if male else ("she", "her")
    hops, ask = split_type(qtype)
    text = [f"{s} has {_count(n, 'brother')} and {pron} also has {_count(m, 'sister')}."]
    if any("cousin" in h for h in hops) or "cousin" in ask:
        text.append(f"{s}'s only cousins are the children of {poss} aunt, who has "
                    f"{_count(p, 'son')} and {_count(q, 'daughter')}.")
    who = s
    for j, h in enumerate(hops):
        who = f"{s}'s {_HOP[h]}" if j == 0 else f"the {_HOP[h]} of {who}"
    text.append(f"How many {_ASK[ask]} does {who} have?")
    return " ".join(text)


_FACTS = re.compile(r"(\w+) has (\d+) brothers? and (she|he) also has (\d+) sisters?\.")
_COUSINS = re.compile(r"only cousins are the children of (?:her|his) aunt, who has (\d+) sons? "
                      r"and (\d+) daughters?\.")
_QUESTION = re.compile(r"How many (brothers|sisters|male cousins|female cousins) does (.+?) "
                       r"have\?")


def parse_question(prompt: str) -> dict:
    """subject, n, m, p and q (None when the prompt has no cousins) and the question type."""
    f, c, qm = _FACTS.search(prompt), _COUSINS.search(prompt), _QUESTION.search(prompt)
    if f is None or qm is None:
        raise ValueError("no family question found in the prompt")
    subject = f[1]
    who, hops = qm[2], []
    inverse = {v: k for k, v in _HOP.items()}
    while who != subject:
        head = re.fullmatch(rf"the ({'|'.join(_HOP.values())}) of (.+)", who)
        if head:
            hops.insert(0, inverse[head[1]])
            who = head[2]
            continue
        last = re.fullmatch(rf"{subject}'s ({'|'.join(_HOP.values())})", who)
        if last is None:
            raise ValueError(f"cannot read the relative '{qm[2]}'")
        hops.insert(0, inverse[last[1]])
        who = subject
    ask = {v: k for k, v in _ASK.items()}[qm[1]]
    return {"subject": subject, "n": int(f[2]), "m": int(f[4]),
            "p": int(c[1]) if c else None, "q": int(c[2]) if c else None,
            "qtype": ".".join([*hops, ask])}


def items(task: TaskData, split: str, suffixes: list[str], limit: int | None,
          seed: int) -> list[dict]:
    ex = task.probes[split]
    types = task.info["question_types"]
    rows = np.arange(len(ex))
    if limit is not None and rows.size > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))
    out = []
    for i in rows:
        male, n, m, p, q = (int(ex.meta[c][i]) for c in ("male", "n", "m", "p", "q"))
        qtype = types[int(ex.meta["qtype"][i])]
        text = render(bool(male), n, m, p, q, qtype)
        for suf in suffixes:
            out.append({
                "id": f"family-{split}-{i}-{suf}",
                "prompt": f"{text} {SUFFIXES[suf]}",
                "answer": str(int(ex.meta["answer"][i])),
                "meta": {"task": "family", "split": split, "label": qtype, "variant": suf,
                         "subject": SUBJECTS[male], "n": n, "m": m, "p": p, "q": q,
                         "input_ids": ex.inputs[i].tolist(),
                         "answer_pos": int(ex.answer_pos[i]), "target_id": int(ex.targets[i])},
            })
    return out


def parse_answer(text: str) -> str:
    """The number after the last "### Answer:" (or a bare number, or "answer is N");
    'unparseable' otherwise."""
    hits = re.findall(r"###\s*answer\s*:?\s*\**\s*(\d+)", text, flags=re.I)
    if hits:
        return str(int(hits[-1]))
    if re.fullmatch(r"\s*(\d+)\s*\.?\s*", text):
        return str(int(text.strip().rstrip(".")))
    hits = re.findall(r"answer\s*(?:is|:)\s*\**\s*(\d+)", text, flags=re.I)
    return str(int(hits[-1])) if hits else "unparseable"
