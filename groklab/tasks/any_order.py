"""Training and scoring a sequence objective in an order other than left to right (sigma-GPT).

sigma-GPT (Pannatier et al. 2024) learns p(x) in a random order per row: each row's tokens are
read in a permutation ``sigma`` and step t predicts token ``sigma(t+1)`` (the model is told
that position: models/sigma_gpt.py). For a task with a prompt, the order is the reference's
``order_mask`` with ``random``: the prompt first (its own tokens shuffled, or kept in order with
``model.order_prompt=keep``), then the scored tokens in a random order, then the padding after
the last scored token, left in place so no step ever sees where a row ends. A scored token
is one the base objective scores: token j with ``targets[j - 1] != IGNORE``; every such target
must be the row's next token (``span`` and ``lm`` tasks as built here; checked).

:class:`AnyOrder` wraps the task's ``span`` or ``lm`` objective: the same loss and scores
(teacher-forced; a span's ``exact`` is greedy decoding's exact match in that order, by the
argument in objectives.py, which holds for any fixed order), with rows drawn in a fresh random
order at every training step (``model.order=random``; the torch RNG, so a seed reproduces
them and a resume continues them) and evaluated twice: left to right (the metrics under their
own names) and in one random order per row, drawn from a fixed seed so every evaluation sees
the same orders (the metrics with ``_random`` appended: ``exact_random/test``).
"""

from __future__ import annotations

import torch

from groklab.tasks.base import TaskData, TaskError
from groklab.tasks.objectives import IGNORE, Objective

EVAL_SEED = 0  # the random orders of every evaluation


def scored_tokens(targets: torch.Tensor) -> torch.Tensor:
    """[n, L] bool: token j is predicted and scored (``targets[j - 1] != IGNORE``)."""
    scored = torch.zeros_like(targets, dtype=torch.bool)
    scored[:, 1:] = targets[:, :-1] != IGNORE
    return scored


def make_order(targets: torch.Tensor, shuffle_prompt: bool, shuffle_answer: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, L] permutations: unscored tokens up to the last scored one (the prompt), then the
    scored ones, then the rest, each group shuffled or left to right. ``generator`` (a CPU
    one) draws the shuffles; without it the torch RNG of the targets' device does."""
    n, L = targets.shape
    j = torch.arange(L, device=targets.device)
    scored = scored_tokens(targets)
    last = torch.where(scored, j, 0).amax(1, keepdim=True)
    group = torch.where(scored, 1, torch.where(j > last, 2, 0))
    if generator is None:
        noise = torch.rand(n, L, device=targets.device)
    else:
        noise = torch.rand(n, L, generator=generator).to(targets.device)
    shuffled = ((group == 0) & shuffle_prompt) | ((group == 1) & shuffle_answer)
    key = 2 * group + torch.where(shuffled, noise, j / L)
    return key.argsort(1)


class AnyOrder(Objective):
    """The ``span`` or ``lm`` objective ``base``, trained in random orders, scored in both."""

    def __init__(self, base: Objective, order: str = "random", prompt: str = "shuffle"):
        self.base, self.order, self.prompt = base, order, prompt
        self.kind, self.headline = base.kind, base.headline
        self.metrics = (*base.metrics, *(f"{m}_random" for m in base.metrics))
        self._eval_generator: torch.Generator | None = None  # set while evaluating in random orders

    def describe(self):
        return {**self.base.describe(), "metrics": list(self.metrics),
                "order": self.order, "order_prompt": self.prompt}

    def forward(self, model, batch):
        if model.training:
            rand, gen = self.order == "random", None
        else:
            rand, gen = self._eval_generator is not None, self._eval_generator
        order = (make_order(batch.targets, self.prompt == "shuffle", True, gen) if rand
                 else None)
        return model(batch.inputs, order=order).float()

    def loss(self, out, batch, ce):
        return self.base.loss(out, batch, ce)

    def score(self, out, batch, ce):
        return self.base.score(out, batch, ce)

    def finish(self, values):
        return self.base.finish(values)

    @torch.no_grad()
    def evaluate(self, model, split, batch_size, ce, autocast):
        left = super().evaluate(model, split, batch_size, ce, autocast)
        self._eval_generator = torch.Generator().manual_seed(EVAL_SEED)
        try:
            rand = super().evaluate(model, split, batch_size, ce, autocast)
        finally:
            self._eval_generator = None
        return {**left, **{f"{k}_random": v for k, v in rand.items()}}


def objective_for(data: TaskData, model_cfg) -> Objective:
    """The objective a run trains: the task's own, or for ``sigma_gpt`` the task's wrapped in
    :class:`AnyOrder` (after checking that every scored target is in its row)."""
    if getattr(model_cfg, "architecture", None) != "sigma_gpt":
        return data.objective
    if data.objective.kind not in ("span", "lm"):
        raise TaskError(f"model.architecture=sigma_gpt needs a span or lm task; task "
                        f"'{data.name}' is scored as '{data.objective.kind}'")
    x, t = data.train.inputs, data.train.targets
    if (t[:, -1] != IGNORE).any() or (scored_tokens(t)[:, 1:] & (t[:, :-1] != x[:, 1:])).any():
        raise TaskError(f"task '{data.name}' scores targets that are not the next token of "
                        "their row; sigma_gpt reorders rows, so every scored target must be in it")
    return AnyOrder(data.objective, model_cfg.order, model_cfg.order_prompt)


@torch.no_grad()
def decode_in_order(model, inputs: torch.Tensor, targets: torch.Tensor, order: torch.Tensor
                    ) -> torch.Tensor:
    """Greedy decoding of every scored token of every row, in ``order`` (as :func:`make_order`
    gives): the scored tokens are blanked, then filled one step of the order at a time, each
    from the model's prediction given the tokens before it in the order. One forward pass per
    step; returns the filled rows (what ``exact`` counts without decoding, objectives.py)."""
    tokens = inputs.clone()
    scored = scored_tokens(targets)
    tokens[scored] = 0  # never read: a step sees only the tokens before it in the order
    rows = torch.arange(len(tokens), device=tokens.device)
    for t in range(tokens.shape[1] - 1):
        j = order[:, t + 1]  # the token that step t predicts
        todo = scored[rows, j]
        if todo.any():
            nxt = model(tokens, order=order)[rows, j - 1].argmax(-1)
            tokens[rows[todo], j[todo]] = nxt[todo]
    return tokens


@torch.no_grad()
def burst_decode(model, inputs: torch.Tensor, targets: torch.Tensor, order: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding in ``order`` with as many tokens per forward pass as the model allows:
    a deterministic form of sigma-GPT's burst sampling (Jacobi iteration along the order).
    Each pass reads the current guesses of every scored token and predicts them all; a
    prediction whose predecessors in the order were all final is final too, so each pass fixes
    the first token that changed and every token before it, at least one per row. The tokens
    equal :func:`decode_in_order`'s; returns (tokens, forward passes per row), against
    ``decode_in_order``'s one pass per scored token."""
    tokens = inputs.clone()
    scored = scored_tokens(targets)
    tokens[scored] = 0
    n = len(tokens)
    by_step = scored.gather(1, order)  # [n, L]: step t reads a scored token
    rank = torch.full_like(tokens, -1).scatter(1, order, torch.where(
        by_step, by_step.long().cumsum(1) - 1, -1))  # k-th scored token in the order, by position
    total = scored.sum(1)
    width = int(total.max()) if n else 0
    fixed = torch.zeros_like(total)  # per row: its first `fixed` scored tokens are final
    passes = torch.zeros_like(total)
    slot = torch.where(scored, rank, width)  # column `width` collects the unscored
    while bool((fixed < total).any()):
        active = fixed < total
        pred = tokens.clone()
        pred[:, 1:] = model(tokens, order=order)[:, :-1].argmax(-1)  # slot j - 1 is token j
        open_ = scored & (rank >= fixed[:, None])
        changed = torch.zeros(n, width + 1, dtype=torch.bool, device=tokens.device)
        changed.scatter_(1, slot, open_ & (pred != tokens))
        changed = changed[:, :width]
        first = torch.where(changed.any(1), changed.float().argmax(1), total)
        tokens = torch.where(open_ & active[:, None], pred, tokens)
        fixed = torch.where(active, torch.minimum(first + 1, total), fixed)
        passes += active.long()
    return tokens, passes
