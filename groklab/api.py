"""The Python API, as short as the CLI: ``make_task``, ``train``, ``load_run``, ``analyze``,
``report``."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from groklab.config import Config, build_config, load_config
from groklab.models import build_model
from groklab.tasks import TaskData, make_task
from groklab.train.rundir import RunDir


def train(
    config: str | Config,
    out: str | Path,
    *,
    set: dict | list[str] | None = None,  # noqa: A002 - mirrors the CLI's --set
    progress: bool = False,
    **train_overrides,
) -> dict:
    """Train a preset, task name or :class:`Config` into ``out``; returns the summary.

    >>> groklab.train("composition-small", "runs/c1", steps=2000, set={"task.phi": 5.4})
    """
    from groklab.train.loop import Run

    sets = [f"{k}={v}" for k, v in set.items()] if isinstance(set, dict) else list(set or [])
    sets += [f"train.{k}={v}" for k, v in train_overrides.items()]
    if isinstance(config, Config):
        tree = config.to_dict()
        cfg = build_config(tree) if not sets else _apply(tree, sets)
    else:
        cfg = load_config(config, None, sets)
    return Run.start(cfg, Path(out), command=f"groklab.train({config!r})").train(progress=progress)


def _apply(tree: dict, sets: list[str]) -> Config:
    from groklab.config import _merge, parse_set

    return build_config(_merge(tree, parse_set(sets)))


class LoadedRun:
    """A run directory, read back: config, metrics, summary, task data and models by step."""

    def __init__(self, path: str | Path):
        self.dir = RunDir(Path(path))
        self.config: Config = build_config(self.dir.read_config_tree())

    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def metrics(self) -> list[dict]:
        return self.dir.read_metrics()

    @property
    def summary(self) -> dict:
        return self.dir.read_summary()

    @property
    def checkpoint_steps(self) -> list[int]:
        return self.dir.checkpoint_steps()

    @cached_property
    def task(self) -> TaskData:
        """The run's data, regenerated from its config (generators are deterministic)."""
        return make_task(self.config.task)

    def model(self, step: int | None = None, device: str = "cpu"):
        """The model at a checkpoint step (default: the last one), in eval mode."""
        steps = self.checkpoint_steps
        if not steps:
            raise FileNotFoundError(f"no checkpoints in {self.path}")
        step = steps[-1] if step is None else step
        model = build_model(self.config.model)
        model.load_unique_state_dict(self.dir.load_weights(step))
        return model.to(torch.device(device)).eval()

    def __repr__(self) -> str:
        return f"LoadedRun({str(self.path)!r}, task={self.config.task.name})"


def load_run(path: str | Path) -> LoadedRun:
    return LoadedRun(path)


def analyses() -> list[str]:
    """Names of the analyses :func:`analyze` can run: modules of :mod:`groklab.analysis` with a
    ``run`` function (found by name, so a new module is available without registering it)."""
    import importlib
    import pkgutil

    import groklab.analysis as pkg

    names = []
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module(f"groklab.analysis.{m.name}")
        except ImportError:  # an optional dependency missing: not available here
            continue
        if callable(getattr(mod, "run", None)):
            names.append(m.name)
    return sorted(names)


def analyze(run: str | Path | LoadedRun, name: str, *, save: bool = True, **kwargs):
    """Run ``groklab.analysis.<name>.run(run, **kwargs)``; with ``save`` its arrays and figures
    go to RUN/analysis and RUN/figures, where ``report`` finds them. Returns the result.

    >>> lens = groklab.analyze("runs/c1", "logit_lens", checkpoints="last")
    """
    import importlib

    module_name = name.replace("-", "_")
    available = analyses()
    if module_name not in available:
        import difflib

        close = difflib.get_close_matches(module_name, available, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown analysis '{name}'{hint} available: "
                         f"{', '.join(available) or 'none'}")
    module = importlib.import_module(f"groklab.analysis.{module_name}")
    source = run if isinstance(run, LoadedRun) else Path(run)
    result = module.run(source, **kwargs)
    if save and hasattr(result, "save"):
        result.save(source.path if isinstance(source, LoadedRun) else source)
    return result


def report(run: str | Path | LoadedRun) -> Path:
    """Write RUN/report.html (curves, config, summary, every analysis present); returns its path."""
    from groklab.report import build_report

    return build_report(run.path if isinstance(run, LoadedRun) else run)  # = groklab.report(run)


__all__ = ["analyses", "analyze", "load_config", "load_run", "make_task", "report", "train"]
