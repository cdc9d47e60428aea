"""One config tree with three groups: ``task.*``, ``model.*``, ``train.*``.

A run's config is built in layers: defaults, then a preset (a YAML file shipped in
``groklab/presets/``) or a bare task name, then ``--config FILE.yaml``, then ``--set key=value``
overrides. Every key is checked against the group's fields; a typo gets the nearest valid key.
Errors are :class:`ConfigError` with a one-line message.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from groklab.models.config import ModelConfig
from groklab.tasks import TASKS, TaskConfig, TaskError, task_spec
from groklab.validation import finite, no_bool_numbers


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the problem and what is allowed."""


_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    steps: int = 5000
    batch_size: int = 512  # 0 = full batch (every training row every step)
    lr: float = 1e-3
    weight_decay: float = 1.0  # grokking speed hinges on this; the paper's 0.1 is slow at CPU scale
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast is ~14x slower on CPU: GPU only
    cuda_graph: bool = False  # whole step as one CUDA graph (train/cuda_graph.py); eager on CPU
    loss_dtype: Literal["fp32", "fp64"] = "fp32"  # fp64: Nanda et al.'s training loss (tiny losses)
    seed: int = 0  # model init, batch draws, dropout (the data seed is task.seed)
    device: str = "auto"  # auto: cuda when available, else cpu
    eval_every: int = 250  # linear evaluation schedule ...
    eval_per_decade: int = 10  # ... plus this many log-spaced evaluations per decade of steps
    eval_batch_size: int = 4096
    train_probe_size: int = 3000  # training rows evaluated as the "train" split
    checkpoint_every: int = 1000  # weights-only snapshots for analysis over time ...
    checkpoint_per_decade: int = 4  # ... plus log-spaced ones
    resume_every: int = 500  # rolling resumable checkpoint: a kill loses at most this many steps
    tensorboard: bool = False  # also write TensorBoard event files into the run directory
    wandb: bool = False  # also log every metrics row to Weights & Biases (train/loggers.py)
    # Accelerators (groklab/train/accelerators.py); the defaults leave plain AdamW + softmax CE.
    optimizer: Literal["adamw", "ortho_adamw"] = "adamw"  # ortho_adamw: AdamW on ⊥Grad
    loss: Literal["cross_entropy", "stablemax"] = "cross_entropy"  # stablemax: in float64
    grokfast: Literal["none", "ema", "ma"] = "none"  # slow-gradient amplifier (Lee et al. 2024)
    grokfast_alpha: float = 0.98  # EMA momentum
    grokfast_lamb: float | None = None  # amplification; None: published default (EMA 2.0, MA 5.0)
    grokfast_window: int = 100  # MA window; no-op until it fills
    weight_decay_warmup_steps: int = 0  # ramp weight decay linearly from 0 over these steps
    # Omnigrok's constrained runs: after every optimizer step, rescale all parameters so their
    # total L2 norm stays at its initial value (train/setup.py : rescale_to_norm)
    fixed_weight_norm: bool = False
    # Data schedule (train/curriculum.py): "difficulty" draws batches from the easiest rows
    # (the task's meta['difficulty']), a fraction growing from curriculum_start to all rows
    curriculum: Literal["none", "difficulty"] = "none"
    curriculum_steps: int = 1000  # the ramp's length in steps
    curriculum_start: float = 0.1  # the fraction of rows (easiest first) drawn from at step 0

    _no_bools = field_validator("*", mode="before")(no_bool_numbers)

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        positive = ("steps", "eval_every", "eval_batch_size", "train_probe_size", "resume_every")
        for f in positive:
            if getattr(self, f) <= 0:
                raise ValueError(f"train.{f} must be a positive integer, got {getattr(self, f)}")
        for f in ("batch_size", "warmup_steps", "checkpoint_every", "eval_per_decade",
                  "checkpoint_per_decade"):
            if getattr(self, f) < 0:
                raise ValueError(f"train.{f} must be >= 0, got {getattr(self, f)}")
        # finite() first: NaN fails every comparison, so a bare `lr <= 0` let NaN through.
        if not (finite(self.lr) and self.lr > 0):
            raise ValueError(f"train.lr must be > 0 and finite, got {self.lr}")
        if not (finite(self.eps) and self.eps > 0):  # eps 0 divides 0 by 0 for unused weights
            raise ValueError(f"train.eps must be > 0 and finite, got {self.eps}")
        for f in ("weight_decay", "grad_clip"):
            if not (finite(getattr(self, f)) and getattr(self, f) >= 0):
                raise ValueError(f"train.{f} must be >= 0 and finite, got {getattr(self, f)}")
        if not (finite(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"train.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.seed < 2**63:  # torch seeds overflow past 64 bits
            raise ValueError(f"train.seed must be an integer in [0, 2**63), got {self.seed}")
        if not _DEVICE_RE.fullmatch(self.device):
            raise ValueError(f"train.device must be auto, cpu, cuda, cuda:N or mps, "
                             f"got {self.device!r}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"train.betas must lie in [0, 1), got {list(self.betas)}")
        if not 0 <= self.grokfast_alpha < 1:
            raise ValueError(f"train.grokfast_alpha must lie in [0, 1), got {self.grokfast_alpha}")
        if self.grokfast_lamb is not None and not (finite(self.grokfast_lamb)
                                                   and self.grokfast_lamb >= 0):
            raise ValueError(f"train.grokfast_lamb must be >= 0 and finite (or null), got "
                             f"{self.grokfast_lamb}")
        if self.grokfast_window <= 0:
            raise ValueError(f"train.grokfast_window must be a positive integer, got "
                             f"{self.grokfast_window}")
        if self.weight_decay_warmup_steps < 0:
            raise ValueError(f"train.weight_decay_warmup_steps must be >= 0, got "
                             f"{self.weight_decay_warmup_steps}")
        if self.curriculum_steps <= 0 or not 0 < self.curriculum_start <= 1:
            raise ValueError(f"train.curriculum_steps must be > 0 and train.curriculum_start in "
                             f"(0, 1], got {self.curriculum_steps} and {self.curriculum_start}")
        if self.cuda_graph and (self.grokfast == "ma" or self.weight_decay_warmup_steps > 0):
            raise ValueError("train.cuda_graph cannot capture train.grokfast=ma (its ring "
                             "buffer index moves every step) or train.weight_decay_warmup_steps "
                             "(a host number the optimizer reads); turn one of them off")
        return self


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    task: TaskConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, v: Any) -> TaskConfig:
        if isinstance(v, TaskConfig):
            return v
        if not isinstance(v, dict) or "name" not in v:
            raise ValueError(f"task needs a name; known tasks: {', '.join(sorted(TASKS))}")
        return task_spec(v["name"]).config_cls(**v)

    def to_dict(self) -> dict:
        return {
            "task": self.task.model_dump(mode="json"),
            "model": self.model.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------- presets


PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_preset(name: str) -> dict:
    tree = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    tree.pop("description", None)
    return tree


def preset_description(name: str) -> str:
    tree = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    return " ".join(str(tree.get("description", "")).split())


# ----------------------------------------------------------------------------- overrides


def _merge(base: dict, over: dict) -> dict:
    """Deep merge; a new task.name starts from that task's defaults, not the old task's keys."""
    new_name = over.get("task", {}).get("name") if isinstance(over.get("task"), dict) else None
    if new_name is not None and base.get("task", {}).get("name") not in (None, new_name):
        base = {**base, "task": {}}
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _group_fields(tree: dict, group: str) -> list[str]:
    if group == "model":
        return list(ModelConfig.model_fields)
    if group == "train":
        return list(TrainConfig.model_fields)
    # Which task.* keys exist depends on the task: without a (known) name the honest error is
    # the missing or unknown name, not "unknown key task.entities".
    name = tree.get("task", {}).get("name")
    if name is None:
        raise ConfigError(f"task.name is required; known tasks: {', '.join(sorted(TASKS))}")
    try:
        return list(task_spec(name).config_cls.model_fields)
    except TaskError as e:
        raise ConfigError(str(e)) from None


def _check_keys(tree: dict, where: str) -> None:
    groups = ("task", "model", "train")
    for group, sub in tree.items():
        if group not in groups:
            raise ConfigError(f"unknown config group '{group}' in {where}; groups: {', '.join(groups)}")
        if not isinstance(sub, dict):
            raise ConfigError(f"'{group}' in {where} must be a mapping of keys to values")
        fields = _group_fields(tree, group)
        for key in sub:
            if key not in fields:
                raise ConfigError(_unknown_key(f"{group}.{key}", group, fields, where))


def _unknown_key(full: str, group: str, fields: list[str], where: str) -> str:
    key = full.split(".", 1)[1]
    close = difflib.get_close_matches(key, fields, n=1)
    hint = f"; did you mean '{group}.{close[0]}'?" if close else ""
    return f"unknown key '{full}' in {where}{hint} allowed {group}.* keys: {', '.join(fields)}"


def parse_set(items: list[str]) -> dict:
    """``["model.n_layers=2", "train.lr=3e-3"]`` -> nested dict with YAML-typed values."""
    tree: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set '{item}' is not key=value (e.g. --set train.lr=3e-3)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"--set key '{key}' must be group.key with group task, model or train "
                "(e.g. model.n_layers=2)"
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        tree.setdefault(parts[0], {})[parts[1]] = value
    return tree


def _format_validation(err: ValidationError, group: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"] if not isinstance(x, int))
    msg = e["msg"].removeprefix("Value error, ")
    if loc and "must" not in msg:
        return f"invalid {group}.{loc} ({e.get('input')!r}): {msg}"
    return msg


def build_config(tree: dict) -> Config:
    """Validate a raw tree into a :class:`Config`, raising one-line :class:`ConfigError`."""
    _check_keys(tree, "config")
    task_tree = tree.get("task", {})
    if "name" not in task_tree:
        raise ConfigError(f"task.name is required; known tasks: {', '.join(sorted(TASKS))}")
    try:
        task = task_spec(task_tree["name"]).config_cls(**task_tree)
        task.check()  # the task's data-free limits, before any data is generated
    except TaskError as e:
        raise ConfigError(str(e)) from None
    except ValidationError as e:
        raise ConfigError(_format_validation(e, "task")) from None
    try:
        model = ModelConfig(**tree.get("model", {}))
    except ValidationError as e:
        raise ConfigError(_format_validation(e, "model")) from None
    try:
        train = TrainConfig(**tree.get("train", {}))
    except ValidationError as e:
        raise ConfigError(_format_validation(e, "train")) from None
    return Config(task=task, model=model, train=train)


def load_config(
    name: str | None = None,
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Preset or task name -> file -> ``--set`` overrides -> validated :class:`Config`."""
    tree: dict = {}
    if name is not None:
        if name in preset_names():
            tree = read_preset(name)
        elif name in TASKS:
            tree = {"task": {"name": name}}
        else:
            choices = sorted(TASKS) + preset_names()
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown task or preset '{name}'{hint} tasks: {', '.join(sorted(TASKS))}; "
                f"presets: {', '.join(preset_names())}"
            )
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            file_tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"config file '{path}' is not valid YAML: {first}") from None
        if not isinstance(file_tree, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping with task/model/train")
        file_tree.pop("description", None)
        tree = _merge(tree, file_tree)
        _check_keys(tree, str(path))
    if sets:
        set_tree = parse_set(sets)
        merged = _merge(tree, set_tree)
        for group, sub in set_tree.items():
            if group not in ("task", "model", "train"):
                raise ConfigError(
                    f"unknown config group '{group}' in --set; groups: task, model, train"
                )
            fields = _group_fields(merged, group)
            for key in sub:
                if key not in fields:
                    raise ConfigError(_unknown_key(f"{group}.{key}", group, fields, "--set"))
        tree = merged
    if "task" not in tree:
        raise ConfigError("no task given: name a task or preset, or set task.name in the config "
                          f"file or with --set; tasks: {', '.join(sorted(TASKS))}; "
                          f"presets: {', '.join(preset_names())}")
    return build_config(tree)
