"""Task registry: a task name maps to its config class and its generator.

A config class is a strict pydantic model with a ``name`` field (a Literal of the task's name),
``seed`` (the data seed, separate from the model/training seed), and the task's parameters with
their defaults. The generator is a pure function ``build(cfg) -> TaskData``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, ConfigDict, field_validator

from groklab.tasks.base import TaskData, TaskError
from groklab.validation import no_bool_numbers


class TaskConfig(BaseModel):
    """Base of every task's parameters; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str
    seed: int = 0  # data seed: same config + seed -> the same data, whatever the training seed

    _no_bools = field_validator("*", mode="before")(no_bool_numbers)

    def check(self) -> None:
        """Raise :class:`TaskError` for limits that need no generated data; the config loader
        calls it so bad values fail before any data is built (``build`` checks them too)."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    config_cls: type[TaskConfig]
    build: Callable[[TaskConfig], TaskData]
    description: str


TASKS: dict[str, TaskSpec] = {}


def register(name: str, config_cls: type[TaskConfig], description: str):
    def deco(build: Callable[[TaskConfig], TaskData]):
        TASKS[name] = TaskSpec(name, config_cls, build, description)
        return build

    return deco


def task_spec(name: str) -> TaskSpec:
    if not isinstance(name, str) or name not in TASKS:  # a YAML list or mapping is unhashable
        raise TaskError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def make_task(cfg: TaskConfig | str | dict, **overrides) -> TaskData:
    """Build a task from a config object, a task name, or a dict with a ``name`` key.

    >>> data = make_task("composition", entities=50, relations=8, out_degree=4, phi=3.0)
    """
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    if isinstance(cfg, dict):
        d = {**cfg, **overrides}
        spec = task_spec(d.get("name", ""))
        cfg = spec.config_cls(**d)
    elif overrides:
        cfg = cfg.model_copy(update=overrides)
        cfg = type(cfg)(**cfg.model_dump())  # re-validate
    return task_spec(cfg.name).build(cfg)
