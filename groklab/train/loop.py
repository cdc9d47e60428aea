"""The training loop: read it top to bottom.

A :class:`Run` binds a config, its task data, model, optimizer and run directory. What a step
computes belongs to the task's objective (groklab/tasks/objectives.py); how it is executed, to
a step object (groklab/train/steps.py: eager, a CUDA graph, or runs stacked into one batched
model). :func:`train_runs` is the one schedule loop that drives any of them: evaluations
(log-spaced plus linear) appended to ``metrics.jsonl``, safetensors snapshots, a rolling resume
state for bit-for-bit continuation, the NaN stop, Ctrl-C / SIGTERM, progress bar and loggers.
Data lives on the device; a batch is an index draw from the run's seeded generator.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from groklab.config import Config, ConfigError, build_config
from groklab.lock import RunLock
from groklab.models import build_model
from groklab.rundir import (
    RunDir,
    RunDirError,
    append_line,
    atomic_save_safetensors,
    atomic_write_text,
)
from groklab.tasks import Split, TaskData, make_task, objective_for
from groklab.train.accelerators import Accelerators
from groklab.train.curriculum import BatchSampler
from groklab.train.loggers import check_loggers, open_loggers
from groklab.train.progress import make_progress
from groklab.train.resume_state import load_run_state, run_state
from groklab.train.schedule import log_linear_steps, lr_at
from groklab.train.setup import (
    config_yaml,
    make_optimizer,
    param_norm,  # with rescale_to_norm: train.fixed_weight_norm
    prepare_out_dir,
    rescale_to_norm,
    resolve_device,
    train_probe,
    warn_if_environment_changed,
    weight_norm,
)
from groklab.train.signals import Interrupted, Interrupts
from groklab.train.summary import run_summary


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names the last good checkpoint."""


class Run:
    """A training run bound to its directory. ``Run.start`` or ``Run.resume``, then ``.train()``."""

    def __init__(self, cfg: Config, run_dir: Path, data: TaskData | None = None):
        self.cfg = cfg
        tc = cfg.train
        self.dir = RunDir(run_dir)
        self.device = resolve_device(tc.device)
        self.data = data if data is not None else make_task(cfg.task)
        self.objective = objective_for(self.data, cfg.model)  # sigma_gpt: AnyOrder
        try:
            self.model_cfg = cfg.model.for_task(self.data)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        torch.manual_seed(tc.seed)
        self.model = build_model(self.model_cfg).to(self.device)
        self.optimizer = make_optimizer(tc, self.model, self.device)
        # the initial norm (a resumed run rebuilds the same initial model before loading state)
        self.norm0 = param_norm(self.model) if tc.fixed_weight_norm else None
        self.accel = Accelerators(tc, self.model, self.optimizer)  # all no-ops by default
        check_loggers(tc)  # a missing tensorboard / wandb fails before the run directory exists
        self.generator = torch.Generator(device=self.device).manual_seed(tc.seed)
        self.loss_dtype = torch.float64 if tc.loss_dtype == "fp64" else torch.float32
        self.train_split = self.data.train.to(self.device)
        self.full_batch = tc.batch_size == 0 or tc.batch_size >= len(self.train_split)
        self.sampler = BatchSampler(tc, self.train_split, self.device, f"task {self.data.name}")
        self.probes = {"train": train_probe(self.data, tc.train_probe_size).to(self.device)}
        self.probes.update({k: v.to(self.device) for k, v in self.data.probes.items()})
        self.eval_steps = set(log_linear_steps(tc.steps, tc.eval_every, tc.eval_per_decade))
        self.ckpt_steps = set(log_linear_steps(tc.steps, tc.checkpoint_every,
                                               tc.checkpoint_per_decade))
        self.step = 0
        self.elapsed = 0.0  # wall seconds spent in earlier sessions of this run
        self.session_start: float | None = None
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        self.last_good = self.last_check = 0
        self.diverged: str | None = None  # the message, when a batched member's loss was NaN
        self.lock: RunLock | None = None  # one writer per run directory, held while writing

    # ------------------------------------------------------------------ construction

    @classmethod
    def start(cls, cfg: Config, out: Path, command: str | None = None,
              data: TaskData | None = None) -> "Run":
        """Validate everything, then create the directory and write config.yaml before step 0."""
        prepare_out_dir(out)
        run = cls(cfg, out, data=data)
        run.lock = RunLock(out).acquire()
        resolved = cfg.model_copy(update={"model": run.model_cfg})
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.dir.config_path, config_yaml(resolved, run.device))
        atomic_write_text(run.dir.path / "command.txt", (command or "") + "\n")
        run.dir.ckpt_dir.mkdir(exist_ok=True)
        return run

    @classmethod
    def resume(cls, run_dir: Path, data: TaskData | None = None) -> "Run":
        rd = RunDir(run_dir).require_resumable()
        cfg = build_config(rd.read_config_tree())
        recorded = rd.read_environment()
        state = rd.load_resume_state()
        run = cls(cfg, run_dir, data=data)
        run.lock = RunLock(run_dir).acquire()  # refused if another live process writes it
        try:
            run.load_state(state)
        except Exception as e:  # readable, but not this run's (edited config.yaml, say)
            run.lock = run.lock.release()
            raise RunDirError(
                f"cannot resume '{run_dir}': checkpoints/resume.pt does not fit this run's "
                f"config ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        warn_if_environment_changed(recorded, run.device)
        rd.remove_partial_writes()  # a kill mid-write leaves a temp file next to the target
        # Drop rows written after the checkpoint (and a torn last line): they are recomputed.
        rd.rewrite_metrics([r for r in rd.read_metrics() if r["step"] <= run.step])
        return run

    def state(self) -> dict:
        """Everything a resumed run needs to continue bit-for-bit (groklab/train/resume_state.py)."""
        return run_state(self)

    def load_state(self, state: dict) -> None:
        load_run_state(self, state)

    # ------------------------------------------------------------------ one step's parts

    def elapsed_now(self) -> float:
        return self.elapsed + (0.0 if self.session_start is None
                               else time.perf_counter() - self.session_start)

    def autocast(self):
        if self.cfg.train.precision == "bf16":
            # a captured CUDA graph needs the autocast weight-cast cache off
            return torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  cache_enabled=not self.cfg.train.cuda_graph)
        return nullcontext()

    def lr(self) -> float:
        tc = self.cfg.train
        return lr_at(self.step, lr=tc.lr, warmup_steps=tc.warmup_steps, schedule=tc.lr_schedule,
                     total=tc.steps, min_lr_ratio=tc.min_lr_ratio)

    def set_lr(self, lr: float) -> None:
        self.accel.set_weight_decay(self.step)
        for group in self.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)  # a kernel launch, not a host sync
            else:
                group["lr"] = lr

    def draw_batch(self) -> Split:
        """The next training batch: the whole set, or an index draw (train/curriculum.py)."""
        if self.full_batch:
            return self.train_split
        return self.train_split.rows(self.sampler(self.step, self.generator))

    def train_ce(self, logits, targets, reduction: str = "mean"):
        if self.accel.loss is not None:
            return self.accel.loss(logits, targets, reduction=reduction)
        return F.cross_entropy(logits.to(self.loss_dtype), targets, reduction=reduction)

    def eval_ce(self, logits, targets, reduction: str = "mean"):
        return (self.accel.loss or F.cross_entropy)(logits, targets, reduction=reduction)

    def loss(self, batch: Split) -> torch.Tensor:
        with self.autocast():
            out = self.objective.forward(self.model, batch)
        return self.objective.loss(out, batch, self.train_ce)

    def optimizer_step(self, zero_grad: bool = True) -> None:
        """After backward: gradient filters, clipping, the optimizer, cleared gradients (a
        captured step keeps its gradient buffers: each replay overwrites them)."""
        self.accel.filter_gradients()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        if self.norm0 is not None:
            rescale_to_norm(self.model, self.norm0)
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ bookkeeping

    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        out = {}
        for name, split in self.probes.items():
            values = self.objective.evaluate(self.model, split, self.cfg.train.eval_batch_size,
                                             self.eval_ce, self.autocast)
            out.update({f"{k}/{name}": round(v, 6) for k, v in values.items()})
        self.model.train(was_training)
        return out

    def log_eval(self, loggers=()) -> dict:
        row = {"step": self.step, "time": round(self.elapsed_now(), 3), "lr": self.lr()}
        if self.loss_count:
            row["train_loss"] = round(float(self.loss_sum) / self.loss_count, 6)
        row["weight_norm"] = round(weight_norm(self.model), 4)
        row.update(self.evaluate())
        self.loss_sum.zero_()
        self.loss_count = 0
        append_line(self.dir.metrics_path, json.dumps(row))
        for logger in loggers:
            logger.log(row)
        return row

    def check_finite(self) -> None:
        if not torch.isfinite(self.loss_sum):
            self.write_summary(status="diverged")
            raise TrainingDiverged(
                f"loss became NaN/Inf between step {self.last_check} and {self.step}; the last "
                f"good checkpoint is step {self.last_good} (checkpoints/resume.pt). Lower "
                "train.lr or raise train.warmup_steps, then train again")
        self.last_check = self.step

    def snapshot(self) -> None:
        atomic_save_safetensors(self.dir.checkpoint_path(self.step),
                                self.model.unique_state_dict(), {"step": str(self.step)})

    def save_resume(self, status: str = "running") -> None:
        self.dir.save_resume_state(self.state())
        self.last_good = self.step
        self.write_summary(status=status)

    def write_summary(self, status: str) -> dict:
        summary = run_summary(self, self.dir.read_metrics(), status)
        atomic_write_text(self.dir.summary_path, json.dumps(summary, indent=1) + "\n")
        return summary

    def train(self, progress: bool = False) -> dict:
        from groklab.train.steps import make_step

        return train_runs([self], make_step(self), progress=progress)[0]


def train_runs(runs: list[Run], step, progress: bool = False) -> list[dict]:
    """The schedule loop for runs that advance together (one run, or a batched group sharing
    steps and schedules); ``step()`` trains every live run by one step and returns its losses
    [len(runs)]. Returns each run's summary."""
    lead = runs[0]
    tc = lead.cfg.train
    resumed_at = lead.step
    alive = [True] * len(runs)
    loggers = [open_loggers(r.cfg, r.dir.path, start_step=r.step) for r in runs]
    bar = make_progress(progress, total=tc.steps, start=lead.step, metric=lead.objective.headline,
                        id_split=lead.data.id_split, ood_split=lead.data.ood_split)
    for r in runs:
        r.lock = r.lock or RunLock(r.dir.path).acquire()
        r.session_start = time.perf_counter()
        r.model.train()
    try:
        with bar, Interrupts() as interrupts:
            while True:
                s = lead.step
                fresh = s > resumed_at or resumed_at == 0  # a resumed row is already logged
                for i, r in enumerate(runs):
                    if not alive[i]:
                        continue
                    try:
                        if s in r.eval_steps and fresh:
                            r.check_finite()
                            row = r.log_eval(loggers[i])
                            if i == 0:
                                bar.metrics(row)
                        if s in r.ckpt_steps:
                            r.check_finite()
                            r.snapshot()
                        if s > resumed_at and (s % tc.resume_every == 0 or s == tc.steps):
                            r.check_finite()
                            r.save_resume()
                    except TrainingDiverged as e:
                        if len(runs) == 1:
                            raise
                        alive[i], r.diverged = False, str(e)  # a member stops; others go on
                if interrupts.signum is not None:
                    for i, r in enumerate(runs):
                        if not alive[i]:
                            continue
                        if r.last_good != s:
                            r.check_finite()
                            r.save_resume(status="interrupted")
                        else:  # this step's state is saved already
                            r.write_summary(status="interrupted")
                    raise Interrupted(interrupts.signum, s)
                if s >= tc.steps:
                    break
                for r in runs:
                    r.set_lr(r.lr())
                losses = step()
                for i, r in enumerate(runs):
                    r.loss_sum += losses[i]
                    r.loss_count += 1
                    r.step += 1
                bar.advance(lead.step)
    finally:
        for r in runs:
            r.elapsed, r.session_start = r.elapsed_now(), None
            r.lock = r.lock.release()
        for logger in (lg for group in loggers for lg in group):
            logger.close()
    return [r.write_summary(status="completed") if alive[i] else r.dir.read_summary()
            for i, r in enumerate(runs)]


def train(cfg: Config, out: str | Path, *, progress: bool = False, command: str | None = None):
    """Train a run from a config into a new directory; returns the summary dict."""
    return Run.start(cfg, Path(out), command=command).train(progress=progress)


def resume(run_dir: str | Path, *, progress: bool = False) -> dict:
    """Continue a killed or finished run from its rolling checkpoint; returns the summary."""
    return Run.resume(Path(run_dir)).train(progress=progress)
