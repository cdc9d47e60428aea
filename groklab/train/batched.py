"""Many small runs trained side by side as one batched model.

Question: a seed or hyperparameter sweep of tiny models leaves a GPU almost idle (a step of
composition-small is launch-bound: docs/anchors.md, "GPU throughput"), and on a CPU every op pays
a fixed overhead. Can M runs share one forward and backward and still be M ordinary runs?

Method: each member is a real :class:`groklab.train.loop.Run` with its own directory, model,
generator, optimizer and accelerators. A step draws every member's batch from its own generator
(the batches a solo run draws), stacks the members' parameters along a new leading dimension
(``torch.stack``: the gradient flows back to each member's own parameters) and computes all
losses in one ``torch.func.vmap`` of ``functional_call`` over the objective's own forward and
loss: one forward and one backward for all M. The members' losses are summed, so each member's
gradient is exactly the gradient of its own mean loss; then every member runs its own
``Run.optimizer_step`` (its gradient filters, clipping and torch AdamW). Evaluation, checkpoints,
the resume state and summaries are each member's own, written by the one schedule loop.

So a member's directory is an ordinary run directory (``groklab resume`` continues it alone) and
its metrics and checkpoints equal those of the same run trained alone up to float rounding
(batched matmuls sum in another order; tests/test_batched.py bounds the difference).

What must be equal inside a batch (:func:`batch_key`): the model's shapes and architecture, the
task's shapes (vocabulary, sequence length; the training set may differ, e.g. ``task.phi``), the
step count, batch size and evaluation schedule, the loss, precision and device. Dropout must be
0 (``vmap`` draws one dropout mask for all members, which no solo run would draw), and GRUs
train alone (``vmap`` has no batching rule for ``aten::gru``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.func import functional_call, vmap

from groklab.config import Config, build_config
from groklab.models.fast import math_attention
from groklab.rundir import RunDir, RunDirError
from groklab.tasks import Split, TaskData, make_task
from groklab.train.loop import Run, prepare_out_dir, train_runs

# train.* keys that must be equal inside one batch: they set shapes, the schedule loop or the
# loss function every member's loss goes through.
SHARED_TRAIN = ("steps", "batch_size", "precision", "device", "eval_every", "eval_per_decade",
                "checkpoint_every", "checkpoint_per_decade", "resume_every", "loss", "loss_dtype",
                "cuda_graph")
# model.* keys that only set initial values may differ.
PER_MEMBER_MODEL = ("initializer_range", "init_scale", "init_mode")


def batch_key(cfg: Config, data: TaskData) -> str | None:
    """A string equal for configs that can train in one batch; None if ``cfg`` cannot batch."""
    if cfg.model.dropout != 0.0:
        return None
    if cfg.model.architecture == "gru":  # vmap has no batching rule for aten::gru
        return None
    if cfg.model.architecture == "sigma_gpt":  # its orders: one torch RNG draw per run and step
        return None
    if cfg.model.positional == "abacus" and cfg.model.abacus_max_offset > 0:
        return None  # one offset per forward pass: vmap would draw one for all members
    try:
        model = cfg.model.for_task(data).model_dump(mode="json")
    except ValueError:
        return None
    train = cfg.train.model_dump(mode="json")
    full = cfg.train.batch_size == 0 or cfg.train.batch_size >= len(data.train)
    key = {"model": {k: v for k, v in model.items() if k not in PER_MEMBER_MODEL},
           "train": {k: train[k] for k in SHARED_TRAIN},
           "objective": data.objective.describe(), "input_shape": list(data.input_shape),
           "full_batch_rows": len(data.train) if full else None}
    return json.dumps(key, sort_keys=True)


class StackedStep:
    """One step of M runs: one vmapped forward and backward, then each run's optimizer."""

    def __init__(self, runs: list[Run]):
        keys = {batch_key(r.cfg, r.data) for r in runs}
        if None in keys or len(keys) != 1:
            raise ValueError("members of a batched run must share one batch_key (see batch_key)")
        if len({r.step for r in runs}) != 1:
            raise ValueError(f"members of a batched run must be at the same step, got "
                             f"{sorted({r.step for r in runs})}")
        self.runs = runs
        self.lead = runs[0]
        self.names = [n for n, _ in self.lead.model.named_parameters()]
        self.params = [dict(r.model.named_parameters()) for r in runs]
        self.member_loss = _MemberLoss(self.lead)

    def _member_loss(self, params, *batch):
        return functional_call(self.member_loss, {f"model.{n}": p for n, p in params.items()},
                               batch)

    def __call__(self) -> torch.Tensor:
        batches = [r.draw_batch() for r in self.runs]
        args = [torch.stack([b.inputs for b in batches]), torch.stack([b.targets for b in batches])]
        if batches[0].answer_pos is not None:
            args.append(torch.stack([b.answer_pos for b in batches]))
        stacked = {n: torch.stack([p[n] for p in self.params]) for n in self.names}
        with math_attention(), self.lead.autocast():
            losses = vmap(self._member_loss, randomness="same")(stacked, *args)
        losses.sum().backward()
        for r in self.runs:
            r.optimizer_step()
        return losses.detach()


class _MemberLoss(torch.nn.Module):
    """One member's loss as a module (what ``functional_call`` swaps parameters into): the
    lead run's objective and loss function on its model, whose parameters are the member's."""

    def __init__(self, lead: Run):
        super().__init__()
        self.model = lead.model
        self.lead = [lead]  # in a list: not a submodule, its parameters are not ours

    def forward(self, inputs, targets, answer_pos=None):
        lead = self.lead[0]
        batch = Split(inputs, answer_pos, targets)
        out = lead.objective.forward(self.model, batch)
        return lead.objective.loss(out, batch, lead.train_ce)


class BatchedRun:
    """M runs trained as one batched model; each keeps its own directory.

    ``BatchedRun.start(cfgs, outs)`` or ``BatchedRun.resume(dirs)``, then ``.train()``, which
    returns the M summaries. A member whose loss becomes NaN/Inf stops logging (its summary says
    ``diverged``, as a run alone would) while the others go on.
    """

    def __init__(self, members: list[Run]):
        if not members:
            raise ValueError("a batched run needs at least one member")
        self.members = members
        self.step_fn = StackedStep(members)

    @property
    def step(self) -> int:
        return self.members[0].step

    @property
    def errors(self) -> list[str | None]:
        """Per member: why it stopped early (its loss became NaN/Inf), or None."""
        return [r.diverged for r in self.members]

    @classmethod
    def start(cls, cfgs: list[Config], outs: list[Path], command: str | None = None,
              data: dict[str, TaskData] | None = None) -> "BatchedRun":
        """Check every directory first, then start each member exactly as ``Run.start`` does."""
        if len(cfgs) != len(outs):
            raise ValueError("one output directory per config")
        if len({str(Path(o).resolve()) for o in outs}) != len(outs):
            raise RunDirError("two members of a batched run share an output directory")
        for out in outs:
            prepare_out_dir(Path(out))
        data = {} if data is None else data
        return cls([Run.start(c, Path(o), command=command, data=_task_data(c, data))
                    for c, o in zip(cfgs, outs)])

    @classmethod
    def resume(cls, dirs: list[Path], data: dict[str, TaskData] | None = None) -> "BatchedRun":
        data = {} if data is None else data
        members = []
        for d in dirs:
            cfg = build_config(RunDir(Path(d)).read_config_tree())
            members.append(Run.resume(Path(d), data=_task_data(cfg, data)))
        return cls(members)

    def train(self, progress: bool = False) -> list[dict]:
        return train_runs(self.members, self.step_fn, progress=progress)


def _task_data(cfg: Config, cache: dict[str, TaskData]) -> TaskData:
    """One TaskData per distinct task config, shared by the members that train on it."""
    key = json.dumps(cfg.task.model_dump(mode="json"), sort_keys=True)
    if key not in cache:
        cache[key] = make_task(cfg.task)
    return cache[key]


def group_for_batching(items: list, key_of, max_members: int = 64) -> list[list]:
    """Items with equal keys in groups of at most ``max_members`` (None keys stay alone)."""
    groups: dict[str, list] = {}
    singles = []
    for it in items:
        k = key_of(it)
        if k is None:
            singles.append([it])
        else:
            groups.setdefault(k, []).append(it)
    out = []
    for members in groups.values():
        for i in range(0, len(members), max_members):
            out.append(members[i : i + max_members])
    return out + singles
