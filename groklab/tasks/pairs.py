"""Minimal-pair probes for language models: which of two continuations does the model prefer?

A pair split holds ``inputs`` and ``targets`` of shape [n, 2, seq_len]: member 0 is a prefix
followed by the right continuation, member 1 the same prefix followed by a corrupted one of
the same length; ``targets`` is ``IGNORE`` except on the continuation's tokens. A row is right
when the right member's summed log-probability of its continuation is strictly higher (a tie
counts as wrong, so a model that has learned nothing scores 0, not 0.5 on identical logits).
This is the BLiMP-style score, and for a one-token continuation it is the cloze: does the
right token outrank the wrong one.

:class:`PairedLanguageModel` is the ``lm`` objective with this score added: the trainer and
evaluator call the same ``evaluate`` for every probe, and a pair split (3-D inputs) is scored
as pairs, giving ``acc/<probe>``; every other split is scored as ordinary language modelling.
"""

from __future__ import annotations

import torch

from groklab.tasks.objectives import IGNORE, LanguageModel, _fast_forward


class PairedLanguageModel(LanguageModel):
    def forward(self, model, batch):
        if batch.inputs.dim() == 3:
            # a causal model: positions after the last scored one change nothing, so they are
            # cut (evaluation only; one host sync per batch)
            scored = (batch.targets != IGNORE).flatten(0, 1).any(0).nonzero()
            end = int(scored.max()) + 1 if len(scored) else 1
            return _fast_forward(model, batch.inputs.flatten(0, 1)[:, :end]).float()
        return super().forward(model, batch)

    def score(self, out, batch, ce):
        if batch.inputs.dim() != 3:
            return super().score(out, batch, ce)
        targets = batch.targets.flatten(0, 1)[:, : out.shape[1]]
        nll = continuation_nll(out, targets, ce).view(-1, 2)
        return {"acc": ((nll[:, 0] < nll[:, 1]).sum(), len(batch))}

    def finish(self, values):
        return super().finish(values) if "loss" in values else values


def continuation_nll(logits: torch.Tensor, targets: torch.Tensor, ce) -> torch.Tensor:
    """Per row, the summed negative log-probability of the scored (non-IGNORE) tokens."""
    mask = targets != IGNORE
    per = ce(logits.reshape(-1, logits.shape[-1]), targets.clamp(min=0).reshape(-1),
             reduction="none").view(targets.shape)
    return (per * mask).sum(-1)


def pair_rows(prefixes: list[list[int]], good: list[list[int]], bad: list[list[int]],
              seq_len: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [n, 2, seq_len] from token-id prefixes and continuations."""
    n = len(prefixes)
    inputs = torch.full((n, 2, seq_len), pad, dtype=torch.long)
    targets = torch.full((n, 2, seq_len), IGNORE, dtype=torch.long)
    for i, (p, g, b) in enumerate(zip(prefixes, good, bad)):
        if len(g) != len(b) or len(p) + len(g) > seq_len or not p:
            raise ValueError("a pair needs a non-empty prefix and continuations of one length "
                             "that fit in seq_len")
        for m, cont in enumerate((g, b)):
            row = p + cont
            inputs[i, m, : len(row)] = torch.tensor(row)
            # the continuation's token j is predicted at position len(p) - 1 + j
            targets[i, m, len(p) - 1 : len(row) - 1] = torch.tensor(cont)
    return inputs, targets
