"""What every task hands to the model and trainer: a typed vocabulary and named splits.

A task is a pure, seeded function of its config. It returns a :class:`TaskData`: the training
split, named evaluation probes (``atomic_id``, ``train_inferred``, ``test_id``, ``test_ood``, ...),
a vocabulary whose every token has a type (entity, relation, attribute, value, label, number,
special, ...) and the task's objective (how it is trained and scored: one answer token, an
answer span, language modelling, or classification of continuous inputs). Analyses rely on the
types: a causal-tracing counterfactual swaps a token for another token of the same type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from groklab.tasks.objectives import Answer, Objective

TOKEN_TYPES = (
    "entity",
    "relation",
    "attribute",
    "value",
    "label",
    "number",
    "operator",
    "bit",
    "special",
)


class TaskError(ValueError):
    """Raised for impossible task parameters. The message is one line naming the limit."""


@dataclass
class Vocab:
    """Token strings and their types; token id = index in ``tokens``."""

    tokens: list[str]
    types: list[str]

    def __post_init__(self) -> None:
        assert len(self.tokens) == len(self.types), "one type per token"
        unknown = set(self.types) - set(TOKEN_TYPES)
        assert not unknown, f"unknown token types {unknown}"
        self._index = {t: i for i, t in enumerate(self.tokens)}
        assert len(self._index) == len(self.tokens), "token strings must be unique"

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        return self._index[token]

    def ids_of_type(self, type_: str) -> np.ndarray:
        """Token ids of one type, in id order (the candidates for a same-type replacement)."""
        return np.array([i for i, t in enumerate(self.types) if t == type_], dtype=np.int64)

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "types": self.types}

    @classmethod
    def from_json(cls, d: dict) -> "Vocab":
        return cls(tokens=list(d["tokens"]), types=list(d["types"]))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))


@dataclass
class Split:
    """Rows of one split.

    ``inputs`` is [n, seq_len] int64 token ids, right-padded with the task's pad token (a causal
    model never lets padding after the answer reach it), or [n, ...] floats for continuous
    tasks. ``targets`` is what the task's objective scores: [n] for one answer per row
    (``answer_pos`` [n] is then the position whose next-token prediction must be it; None for
    continuous inputs), or [n, seq_len] next tokens with ``IGNORE`` where nothing is scored
    (``span``, ``lm``). ``meta`` holds optional per-row numpy arrays that analyses use (for
    composition: ``bridge`` [n], the bridge entity of an inferred fact, -1 for atomic facts).
    """

    inputs: torch.Tensor
    answer_pos: torch.Tensor | None
    targets: torch.Tensor
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def rows(self, idx) -> "Split":
        """The rows ``idx`` (a slice or an index tensor on the split's device), meta left out:
        what the trainer draws as a batch."""
        ap = None if self.answer_pos is None else self.answer_pos[idx]
        return Split(self.inputs[idx], ap, self.targets[idx])

    def subset(self, idx) -> "Split":
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        idx_np = np.asarray(idx, dtype=np.int64)
        ap = None if self.answer_pos is None else self.answer_pos[idx_t]
        return Split(self.inputs[idx_t], ap, self.targets[idx_t],
                     {k: v[idx_np] for k, v in self.meta.items()})

    def to(self, device) -> "Split":
        ap = None if self.answer_pos is None else self.answer_pos.to(device)
        return Split(self.inputs.to(device), ap, self.targets.to(device), self.meta)


@dataclass
class TaskData:
    """Everything a task generator produces.

    ``probes`` are evaluated on the trainer's schedule; ``id_split`` / ``ood_split`` name the
    probes the summary calls in-distribution and out-of-distribution generalization;
    ``memorization_split`` the probe whose accuracy >= 0.99 marks memorization ("train", or the
    trained inferred facts alone where the paper measures it so).
    ``info`` holds sizes and realised parameters (e.g. realised phi, its feasible maximum) as
    plain, JSON-serialisable Python values. ``arrays`` holds task-level numpy arrays that are too
    big for ``info`` but that analyses need, e.g. the knowledge graph a causal-tracing
    counterfactual is built from (composition: ``tails`` [entities, relations], ``ood``).
    """

    name: str
    vocab: Vocab
    train: Split
    probes: dict[str, Split]
    id_split: str | None = "test_id"
    ood_split: str | None = None
    memorization_split: str = "train"
    info: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    objective: Objective = field(default_factory=Answer)

    @property
    def seq_len(self) -> int:
        """Tokens per row (for continuous inputs: the trailing length, 1 for flat features).
        A token task may pad its splits to different widths (addition pads its training rows
        only to the longest training row): the model's context is the widest split's."""
        shape = self.train.inputs.shape
        if len(shape) == 2 and not self.continuous:
            return max(int(s.inputs.shape[1]) for s in (self.train, *self.probes.values()))
        return int(shape[-1])

    @property
    def continuous(self) -> bool:
        return self.train.inputs.is_floating_point()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One row's input shape: (seq_len,) for tokens, (features,) or (channels, length)."""
        return tuple(self.train.inputs.shape[1:])
