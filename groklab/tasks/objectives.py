"""How a task is trained and scored. The trainer, evaluator, summary and report call these and
know nothing task-specific.

    answer    one target token predicted at ``answer_pos`` (knowledge graphs, modular, parity)
    span      a target token sequence after a prompt: teacher-forced loss on the target tokens
              only; scored by per-token accuracy (``acc``) and exact match of greedy decoding
              (``exact``)
    lm        next-token loss on every position whose target is not ``IGNORE``; scored by loss,
              perplexity (``ppl``) and next-token accuracy; greedy or sampled generation
    classify  continuous inputs ([n, features] or [n, channels, length] floats) to a class, with
              cross-entropy or MSE on one-hot targets (Omnigrok trains with MSE)

Sequence targets (``span``, ``lm``) are ``[n, seq_len]`` aligned with the inputs: ``targets[i,
t]`` is the token that must follow ``inputs[i, :t + 1]``, or ``IGNORE``.

Exact match without a decoding loop: greedy decoding reproduces a target span exactly if and
only if the teacher-forced argmax is right at every target position (if it is right up to
position k, greedy decoding has seen exactly the teacher-forced prefix, so its next token is the
teacher-forced argmax; the first wrong argmax is therefore also greedy's first wrong token). So
``exact`` is computed from the one forward pass that also gives the loss; :func:`greedy_decode`
produces the tokens themselves (batched over rows, one forward per answer token) and
tests/test_objectives.py checks the two agree.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

IGNORE = -100  # target id that is not scored (the prompt of a span, padding)

# ce(logits [N, V], targets [N], reduction) -> loss: softmax cross-entropy, or the run's
# replacement (StableMax) so training and evaluation losses stay comparable.
LossFn = Callable[..., torch.Tensor]


def _fast_forward(model, inputs, answer_pos=None):
    from groklab.models.fast import forward  # models depend on nothing here; import on use

    return forward(model, inputs, answer_pos)


class Objective:
    """One objective. ``forward`` gives the model output the loss and scores need (through the
    models' speed paths); ``loss`` is the mean training loss; ``score`` returns per-metric
    (sum, count) tensors for a batch so evaluation can chunk rows and sync once."""

    kind = "objective"
    metrics: tuple[str, ...] = ("loss",)  # logged per split as "<metric>/<split>"
    headline = "acc"  # what thresholds, memorization and generalization are read from

    def forward(self, model, batch) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, out, batch, ce: LossFn) -> torch.Tensor:
        raise NotImplementedError

    def score(self, out, batch, ce: LossFn) -> dict[str, tuple[torch.Tensor, int | torch.Tensor]]:
        raise NotImplementedError

    def finish(self, values: dict[str, float]) -> dict[str, float]:
        """Derived metrics from the averaged ones (perplexity from loss)."""
        return values

    def describe(self) -> dict:
        return {"kind": self.kind, "headline": self.headline, "metrics": list(self.metrics)}

    @torch.no_grad()
    def evaluate(self, model, split, batch_size: int, ce: LossFn, autocast) -> dict[str, float]:
        """Every metric on ``split``, averaged over rows (or tokens), one host sync at the end."""
        sums: dict[str, list] = {}
        for i in range(0, len(split), batch_size):
            batch = split.rows(slice(i, i + batch_size))
            with autocast():
                out = self.forward(model, batch)
            for name, (s, n) in self.score(out, batch, ce).items():
                acc = sums.setdefault(name, [torch.zeros((), device=s.device), 0])
                acc[0] += s
                acc[1] = acc[1] + n
        if not sums:
            return {}
        # per metric: sum / count (rows or scored tokens), then one host sync for all
        values = torch.stack([s / (c.clamp(min=1) if torch.is_tensor(c) else max(c, 1))
                              for s, c in sums.values()])
        return self.finish(dict(zip(sums, values.tolist())))


class Answer(Objective):
    """One token at ``answer_pos`` per row (the model unembeds only there)."""

    kind = "answer"
    metrics = ("loss", "acc")
    headline = "acc"

    def forward(self, model, batch):
        return _fast_forward(model, batch.inputs, batch.answer_pos).float()

    def loss(self, out, batch, ce):
        return ce(out, batch.targets)

    def score(self, out, batch, ce):
        n = len(batch)
        return {"loss": (ce(out, batch.targets, reduction="sum"), n),
                "acc": ((out.argmax(-1) == batch.targets).sum(), n)}


class _Sequence(Objective):
    def forward(self, model, batch):
        return _fast_forward(model, batch.inputs).float()

    @staticmethod
    def token_loss(out, targets, ce, reduction="mean"):
        """Loss over the scored tokens. Unscored positions are weighted out rather than indexed
        away, so shapes never depend on the data (the batched trainer's vmap needs that)."""
        mask = targets != IGNORE
        per = ce(out.reshape(-1, out.shape[-1]), targets.clamp(min=0).reshape(-1),
                 reduction="none").view(targets.shape)
        total = (per * mask).sum()
        return total if reduction == "sum" else total / mask.sum().clamp(min=1)

    def loss(self, out, batch, ce):
        return self.token_loss(out, batch.targets, ce)

    def token_scores(self, out, batch, ce):
        """Loss and accuracy per scored token, with the [n, pos] right-token and scored masks."""
        mask = batch.targets != IGNORE
        tokens = mask.sum()
        right = (out.argmax(-1) == batch.targets) & mask
        scores = {"loss": (self.token_loss(out, batch.targets, ce, "sum"), tokens),
                  "acc": (right.sum(), tokens)}
        return scores, right, mask

    def score(self, out, batch, ce):
        return self.token_scores(out, batch, ce)[0]


class Span(_Sequence):
    """A target span after a prompt; ``exact`` is greedy decoding's exact match (see above)."""

    kind = "span"
    metrics = ("loss", "acc", "exact")
    headline = "exact"

    def score(self, out, batch, ce):
        scores, right, mask = self.token_scores(out, batch, ce)
        scores["exact"] = ((right.sum(-1) == mask.sum(-1)).sum(), len(batch))
        return scores


class LanguageModel(_Sequence):
    """Next-token prediction on every scored position; perplexity = exp(mean token loss)."""

    kind = "lm"
    metrics = ("loss", "acc", "ppl")
    headline = "acc"

    def finish(self, values):
        import math

        return {**values, "ppl": math.exp(min(values["loss"], 50.0))}


class Classify(Objective):
    """Continuous inputs to one of ``n_classes``; ``loss='mse'`` regresses one-hot targets."""

    kind = "classify"
    metrics = ("loss", "acc")
    headline = "acc"

    def __init__(self, n_classes: int, loss: str = "cross_entropy"):
        if loss not in ("cross_entropy", "mse"):
            raise ValueError(f"classify loss must be cross_entropy or mse, got {loss!r}")
        self.n_classes = n_classes
        self.loss_kind = loss

    def describe(self):
        return {**super().describe(), "loss": self.loss_kind, "n_classes": self.n_classes}

    def forward(self, model, batch):
        return model(batch.inputs).float()

    def _loss(self, out, y, ce, reduction):
        if self.loss_kind == "mse":
            # Omnigrok: squared error to the one-hot target, summed over classes, mean over rows.
            err = (out - F.one_hot(y, self.n_classes).to(out.dtype)).pow(2).sum(-1)
            return err.sum() if reduction == "sum" else err.mean()
        return ce(out, y, reduction=reduction)

    def loss(self, out, batch, ce):
        return self._loss(out, batch.targets, ce, "mean")

    def score(self, out, batch, ce):
        n = len(batch)
        return {"loss": (self._loss(out, batch.targets, ce, "sum"), n),
                "acc": ((out.argmax(-1) == batch.targets).sum(), n)}


# ----------------------------------------------------------------------------- decoding


@torch.no_grad()
def greedy_decode(model, inputs: torch.Tensor, start: torch.Tensor, length: torch.Tensor,
                  stop: int | None = None) -> torch.Tensor:
    """Greedy decoding of every row at once: row i keeps ``inputs[i, :start[i]]`` as its prompt
    and writes up to ``length[i]`` generated tokens from position ``start[i]`` on, stopping after
    it writes ``stop`` (an end-of-sequence id) if given. Rows of different prompt and answer
    lengths decode together: one forward pass per generated token (``max(length)`` at most,
    fewer once every row has stopped), batched over rows, each over the columns up to the
    furthest position still being written (the model is causal, so later columns cannot change
    it). Returns the filled [n, seq_len] tokens (positions past a row's answer keep their
    input tokens). An unhooked transformer in eval mode decodes with a key/value cache
    (``groklab.models.decode``: one new column per forward, the same tokens)."""
    from groklab.models import decode  # models depend on nothing here; import on use

    if decode.supported(model):
        return decode.cached_greedy(model, inputs, start, length, stop)
    tokens = inputs.clone()
    rows = torch.arange(len(tokens), device=tokens.device)
    done = torch.zeros(len(tokens), dtype=torch.bool, device=tokens.device)
    for j in range(int(length.max()) if len(length) else 0):
        pos = start + j
        active = (j < length) & ~done
        if not bool(active.any()):
            break
        width = int(pos[active].max())
        logits = _fast_forward(model, tokens[:, :width])
        nxt = logits[rows, (pos - 1).clamp(min=0, max=width - 1)].argmax(-1)
        tokens[rows[active], pos[active]] = nxt[active]
        if stop is not None:
            done |= active & (nxt == stop)
    return tokens


def span_bounds(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, length) of each row's answer span: the first position written and how many
    tokens (``targets[i, t]`` is the token at position t + 1)."""
    mask = targets != IGNORE
    first = mask.float().argmax(-1)
    return first + 1, mask.sum(-1)


@torch.no_grad()
def generate(model, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, generator: torch.Generator | None = None,
             n_ctx: int | None = None) -> torch.Tensor:
    """Continue ``prompt`` [n, pos] by ``max_new_tokens``; temperature 0 is greedy, otherwise
    sampling (optionally from the ``top_k`` logits) with ``generator`` for reproducibility."""
    tokens = prompt
    for _ in range(max_new_tokens):
        ctx = tokens if n_ctx is None else tokens[:, -n_ctx:]
        logits = _fast_forward(model, ctx)[:, -1].float()
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
        tokens = torch.cat([tokens, nxt], 1)
    return tokens


OBJECTIVES = {"answer": Answer, "span": Span, "lm": LanguageModel, "classify": Classify}
