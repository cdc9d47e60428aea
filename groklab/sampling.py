"""Text from a trained language model: ``groklab sample RUN --prompt ...`` (any ``lm`` run).

The prompt is split on whitespace into the run's vocabulary tokens; a word that is not a token
is tried lower-cased and with punctuation tokens split off its ends ("Lily." -> lily .), so
plain text works for the word-level stories task and token strings for any other task. A
vocabulary with ``<s>`` gets it prepended when the prompt lacks it (training rows start with
it), and a sample stops at ``</s>``. Sampling draws from one ``torch.Generator`` seeded with
``seed``, all ``n`` samples in one batch: the same run, checkpoint, prompt and seed give the
same text.
"""

from __future__ import annotations

from pathlib import Path

import torch

from groklab.tasks.objectives import generate


class SampleError(ValueError):
    """Bad sampling input; the message is one line naming the problem and what is allowed."""


def encode_prompt(prompt: str, tokens: list[str]) -> list[int]:
    index = {t: i for i, t in enumerate(tokens)}
    punct = [t for t in tokens if len(t) == 1 and not t.isalnum()]
    ids, unknown = [], []
    for word in prompt.split():
        if word in index:
            ids.append(index[word])
            continue
        w, tail = word.lower(), []
        head = []
        while w and w[0] in punct and w not in index:
            head.append(w[0])
            w = w[1:]
        while w and w[-1] in punct and w not in index:
            tail.insert(0, w[-1])
            w = w[:-1]
        parts = [*head, *([w] if w else []), *tail]
        if all(p in index for p in parts):
            ids.extend(index[p] for p in parts)
        else:
            unknown.append(word)
    if unknown:
        shown = ", ".join(repr(u) for u in dict.fromkeys(unknown))
        words = [t for t in tokens if t.isalnum()][:5] or tokens[:5]
        raise SampleError(f"words not in the run's vocabulary: {shown}; the run knows "
                          f"{len(tokens)} tokens (e.g. {', '.join(words)})")
    return ids


def sample(run_dir: str | Path, prompt: str = "", *, n: int = 1, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0, max_tokens: int = 200,
           step: int | None = None) -> list[str]:
    """``n`` continuations of ``prompt`` from the run's checkpoint at ``step`` (last: None),
    each as space-separated tokens (the prompt included, ``<s>`` / ``</s>`` left out)."""
    from groklab.rundir import load_run

    if not (temperature >= 0 and temperature < float("inf")):
        raise SampleError(f"--temperature must be >= 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise SampleError(f"--top-k must be >= 1, got {top_k}")
    if not 1 <= n <= 1000 or max_tokens < 1:
        raise SampleError(f"--n must be in 1..1000 and --max-tokens >= 1, got {n} and "
                          f"{max_tokens}")
    run = load_run(run_dir)
    task = run.task
    if task.objective.kind != "lm":
        raise SampleError(f"'{run_dir}' trains task {task.name} with objective "
                          f"{task.objective.kind}; sampling needs an lm run (markov, stories)")
    tokens = task.vocab.tokens
    ids = encode_prompt(prompt, tokens)
    if "<s>" in tokens and (not ids or ids[0] != tokens.index("<s>")):
        ids.insert(0, tokens.index("<s>"))
    if not ids:
        raise SampleError("--prompt is empty and the run's vocabulary has no <s> to start from")
    model = run.model(step)
    n_ctx = run.config.model.n_ctx
    g = torch.Generator().manual_seed(seed)
    out = generate(model, torch.tensor([ids] * n), max_tokens, temperature=temperature,
                   top_k=top_k, generator=g, n_ctx=n_ctx if n_ctx > 0 else None)
    texts = []
    for row in out.tolist():
        words = [tokens[i] for i in row]
        if "</s>" in words[len(ids):]:
            words = words[: words.index("</s>", len(ids))]
        texts.append(" ".join(w for w in words if w not in ("<s>", "<pad>")))
    return texts
