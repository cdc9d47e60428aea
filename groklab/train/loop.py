"""The training recipe for token tasks: read it top to bottom.

Data lives on the device and a batch is an index draw from a seeded ``torch.Generator``; the only
host synchronisation is at evaluations and checkpoints. Every probe split is evaluated on a
log-spaced plus linear schedule and appended to ``metrics.jsonl``; weights are snapshotted as
safetensors on a similar schedule; a rolling ``resume.pt`` holds everything needed to continue
bit-for-bit (model, optimizer, generator and global RNG states, the running loss), so a run
killed at any moment and resumed ends with the same metrics as one that never stopped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from groklab.config import Config, ConfigError, build_config
from groklab.models import build_model
from groklab.tasks import Split, TaskData, make_task
from groklab.train.accelerators import Accelerators
from groklab.train.cuda_graph import make_graphed_step
from groklab.train.forecast import summary_forecast
from groklab.train.loggers import check_loggers, open_loggers
from groklab.train.progress import make_progress
from groklab.train.rundir import (
    RunDir,
    RunDirError,
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_text,
)
from groklab.train.schedule import log_linear_steps, lr_at
from groklab.train.summary import summarize


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names the last good checkpoint."""


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def train_probe(data: TaskData, size: int) -> Split:
    """A fixed sample of training rows, the "train" split (same rows whatever the run seed)."""
    n = len(data.train)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(n, generator=g)[: min(size, n)]
    return data.train.subset(idx.sort().values)


@torch.no_grad()
def evaluate(model, probes: dict[str, Split], batch_size: int, autocast,
             loss_fn=None) -> dict[str, float]:
    """Loss and accuracy at the answer position for every probe; one host sync at the end.

    ``loss_fn(logits, targets, reduction="sum")`` replaces softmax cross-entropy (the run's
    training loss, e.g. StableMax, so train and test losses stay comparable)."""
    was_training = model.training
    model.eval()
    sums = []
    for split in probes.values():
        loss = torch.zeros((), device=split.targets.device)
        correct = torch.zeros((), device=split.targets.device)
        for i in range(0, len(split), batch_size):
            x, ap, y = (t[i : i + batch_size] for t in (split.inputs, split.answer_pos, split.targets))
            with autocast():
                logits = model(x, ap).float()
            loss += (loss_fn or F.cross_entropy)(logits, y, reduction="sum")
            correct += (logits.argmax(-1) == y).sum()
        sums.append(torch.stack([loss, correct]) / max(len(split), 1))
    values = torch.stack(sums).tolist() if sums else []
    model.train(was_training)
    out = {}
    for name, (loss, acc) in zip(probes, values):
        out[f"loss/{name}"] = round(loss, 6)
        out[f"acc/{name}"] = round(acc, 6)
    return out


def weight_norm(model) -> float:
    return math.sqrt(sum(float(p.detach().float().pow(2).sum()) for p in model.parameters()))


def prepare_out_dir(out: Path) -> None:
    """Refuse a directory that holds another run or other files; nothing is written here."""
    out = Path(out)
    if (out / "config.yaml").exists():
        raise RunDirError(
            f"--out '{out}' already holds a run; resume it with 'groklab resume {out}' "
            "or choose a new --out"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(f"--out '{out}' exists and is not an empty directory; choose a new --out")


def _check_answer_vocab(data: TaskData, d_vocab_out: int) -> None:
    """Every target must be a logit the model has (d_vocab_out may cut the vocabulary short)."""
    top = max(int(s.targets.max()) for s in (data.train, *data.probes.values()) if len(s))
    if top >= d_vocab_out:
        raise ConfigError(
            f"model.d_vocab_out {d_vocab_out} leaves out answer token {top} of task "
            f"'{data.name}'; set model.d_vocab_out >= {top + 1} (or -1 for the whole vocabulary)"
        )


class Run:
    """A training run bound to its directory. ``Run.start`` or ``Run.resume``, then ``.train()``."""

    def __init__(self, cfg: Config, run_dir: Path, data: TaskData | None = None):
        self.cfg = cfg
        self.dir = RunDir(run_dir)
        self.device = resolve_device(cfg.train.device)
        self.data = data if data is not None else make_task(cfg.task)
        self.model_cfg = cfg.model.resolved(len(self.data.vocab), self.data.seq_len)
        _check_answer_vocab(self.data, self.model_cfg.d_vocab_out)
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(self.model_cfg).to(self.device)
        tc = cfg.train
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.model.parameter_groups(tc.weight_decay),
            lr=tc.lr, betas=tuple(tc.betas), eps=tc.eps, fused=fused,
        )
        self.accel = Accelerators(tc, self.model, self.optimizer)  # all no-ops by default
        check_loggers(tc)  # a missing tensorboard / wandb fails before the run directory exists
        self.loggers: list = []  # opened by train(): TensorBoard, W&B copies of metrics rows
        self.generator = torch.Generator(device=self.device).manual_seed(tc.seed)
        self.loss_dtype = torch.float64 if tc.loss_dtype == "fp64" else torch.float32
        self.train_split = self.data.train.to(self.device)
        self.probes = {"train": train_probe(self.data, tc.train_probe_size).to(self.device)}
        self.probes.update({k: v.to(self.device) for k, v in self.data.probes.items()})
        self.eval_steps = set(log_linear_steps(tc.steps, tc.eval_every, tc.eval_per_decade))
        self.ckpt_steps = set(
            log_linear_steps(tc.steps, tc.checkpoint_every, tc.checkpoint_per_decade)
        )
        self.step = 0
        self.elapsed = 0.0  # wall seconds spent in earlier sessions of this run
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def start(cls, cfg: Config, out: Path, command: str | None = None,
              data: TaskData | None = None) -> "Run":
        """Validate everything, then create the directory and write config.yaml before step 0."""
        prepare_out_dir(out)
        run = cls(cfg, out, data=data)
        resolved = cfg.model_copy(update={"model": run.model_cfg})
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.dir.config_path, resolved.to_yaml())
        atomic_write_text(run.dir.path / "command.txt", (command or "") + "\n")
        run.dir.ckpt_dir.mkdir(exist_ok=True)
        return run

    @classmethod
    def resume(cls, run_dir: Path, data: TaskData | None = None) -> "Run":
        rd = RunDir(run_dir)
        cfg = build_config(rd.read_config_tree())
        run = cls(cfg, run_dir, data=data)
        if rd.resume_path.exists():
            try:
                # On the CPU first: RNG states must stay CPU byte tensors (set_rng_state refuses
                # CUDA ones); the optimizer and model loaders move the rest to the device.
                state = torch.load(rd.resume_path, map_location="cpu", weights_only=False)
            except Exception as e:  # a torn or foreign file: say so, change nothing
                raise RunDirError(
                    f"cannot resume '{run_dir}': checkpoints/resume.pt is corrupt "
                    f"({type(e).__name__}); delete it to restart the run from step 0"
                ) from None
            try:
                run.load_state(state)
            except Exception as e:  # readable, but not this run's (edited config.yaml, say)
                raise RunDirError(
                    f"cannot resume '{run_dir}': checkpoints/resume.pt does not fit this run's "
                    f"config ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                ) from None
        rd.remove_partial_writes()  # a kill mid-write leaves a temp file next to the target
        # Drop rows written after the checkpoint: they are recomputed identically.
        rows = [r for r in rd.read_metrics() if r["step"] <= run.step]
        if run.step == 0:
            rows = []
        atomic_write_text(rd.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        return run

    def state(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.unique_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "elapsed": self.elapsed_now(),
            "accelerators": self.accel.state_dict(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_unique_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.loss_sum = state["loss_sum"].to(self.device)
        self.loss_count = state["loss_count"]
        self.step = state["step"]
        self.elapsed = state["elapsed"]
        self.accel.load_state_dict(state.get("accelerators"))

    # ------------------------------------------------------------------ the loop

    def elapsed_now(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0)

    def autocast(self):
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, lr: float) -> torch.Tensor:
        tc = self.cfg.train
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.accel.set_weight_decay(self.step)
        split = self.train_split
        if tc.batch_size == 0 or tc.batch_size >= len(split):
            x, ap, y = split.inputs, split.answer_pos, split.targets
        else:
            idx = torch.randint(len(split), (tc.batch_size,), device=self.device,
                                generator=self.generator)
            x, ap, y = split.inputs[idx], split.answer_pos[idx], split.targets[idx]
        with self.autocast():
            logits = self.model(x, ap)
        if self.accel.loss is not None:
            loss = self.accel.loss(logits, y)
        else:
            loss = F.cross_entropy(logits.to(self.loss_dtype), y)
        loss.backward()
        self.accel.filter_gradients()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def log_eval(self, lr: float) -> dict:
        row = {"step": self.step, "time": round(self.elapsed_now(), 3), "lr": lr}
        if self.loss_count:
            row["train_loss"] = round(float(self.loss_sum) / self.loss_count, 6)
        row["weight_norm"] = round(weight_norm(self.model), 4)
        row.update(evaluate(self.model, self.probes, self.cfg.train.eval_batch_size, self.autocast,
                            loss_fn=self.accel.loss))
        self.loss_sum.zero_()
        self.loss_count = 0
        with open(self.dir.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for logger in self.loggers:
            logger.log(row)
        return row

    def check_finite(self, since: int) -> None:
        if not torch.isfinite(self.loss_sum):
            good = self.last_good
            self.write_summary(status="diverged")
            raise TrainingDiverged(
                f"loss became NaN/Inf between step {since} and {self.step}; the last good "
                f"checkpoint is step {good} (checkpoints/resume.pt). Lower train.lr or raise "
                "train.warmup_steps, then train again"
            )

    def write_summary(self, status: str) -> dict:
        rows = self.dir.read_metrics()
        summary = summarize(rows, list(self.probes), self.data.id_split, self.data.ood_split)
        summary["status"] = status
        summary["task"] = self.data.name
        summary["task_info"] = {k: v for k, v in self.data.info.items()
                                if isinstance(v, (int, float, str))}
        summary["steps_per_s"] = (
            round(summary["steps"] / summary["wall_time_s"], 3) if summary.get("wall_time_s") else None
        )
        summary["device"] = str(self.device)
        summary["forecast"] = summary_forecast(rows, self.data.id_split, self.cfg.train.steps)
        atomic_write_text(self.dir.summary_path, json.dumps(summary, indent=1) + "\n")
        return summary

    def train(self, progress: bool = False) -> dict:
        tc = self.cfg.train
        self._t0 = time.perf_counter()
        self.loggers = open_loggers(self.cfg, self.dir.path, start_step=self.step)
        graphed = make_graphed_step(self)  # None unless train.cuda_graph on a CUDA device
        self.model.train()
        self.last_good = self.step
        last_check = self.step
        bar = make_progress(progress, total=tc.steps, start=self.step,
                            id_split=self.data.id_split, ood_split=self.data.ood_split)
        resumed_at = self.step
        with bar:
            while True:
                lr = lr_at(self.step, lr=tc.lr, warmup_steps=tc.warmup_steps,
                           schedule=tc.lr_schedule, total=tc.steps, min_lr_ratio=tc.min_lr_ratio)
                # After a resume, the row for the checkpoint's own step is already logged.
                fresh = self.step > resumed_at or resumed_at == 0
                if self.step in self.eval_steps and fresh:
                    self.check_finite(last_check)
                    last_check = self.step
                    bar.metrics(self.log_eval(lr))
                if self.step in self.ckpt_steps:
                    self.check_finite(last_check)
                    atomic_save_safetensors(self.dir.checkpoint_path(self.step),
                                            self.model.unique_state_dict(),
                                            {"step": str(self.step)})
                if self.step > resumed_at and (self.step % tc.resume_every == 0
                                               or self.step == tc.steps):
                    self.check_finite(last_check)
                    atomic_torch_save(self.dir.resume_path, self.state())
                    self.last_good = self.step
                    self.write_summary(status="running")
                if self.step >= tc.steps:
                    break
                self.loss_sum += graphed(lr) if graphed else self.train_step(lr)
                self.loss_count += 1
                self.step += 1
                bar.advance(self.step)
        for logger in self.loggers:
            logger.close()
        return self.write_summary(status="completed")


def train(cfg: Config, out: str | Path, *, progress: bool = False, command: str | None = None):
    """Train a run from a config into a new directory; returns the summary dict."""
    return Run.start(cfg, Path(out), command=command).train(progress=progress)


def resume(run_dir: str | Path, *, progress: bool = False) -> dict:
    """Continue a killed or finished run from its rolling checkpoint; returns the summary."""
    rd = RunDir(Path(run_dir))
    if not rd.is_run():
        raise RunDirError(f"'{run_dir}' is not a groklab run directory (no config.yaml)")
    return Run.resume(Path(run_dir)).train(progress=progress)


if __name__ == "__main__":  # pragma: no cover
    print("use the CLI: groklab train ...", file=sys.stderr)
