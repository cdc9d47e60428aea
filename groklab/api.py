"""The Python API, as short as the CLI: ``make_task``, ``train``, ``load_run``, ``analyze``,
``report``."""

from __future__ import annotations

from pathlib import Path

from groklab.config import Config, build_config, load_config
from groklab.rundir import LoadedRun, load_run
from groklab.tasks import make_task


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


def analyses() -> list[str]:
    """Names of the analyses :func:`analyze` can run (groklab/analysis/registry.py)."""
    from groklab.analysis.registry import ANALYSES

    return list(ANALYSES)


def analyze(run: str | Path | LoadedRun, name: str, *, save: bool = True, **kwargs):
    """Run one analysis of the registry on ``run``; with ``save`` its arrays and figures go to
    RUN/analysis and RUN/figures, where ``report`` finds them. Returns the result.

    >>> lens = groklab.analyze("runs/c1", "logit_lens", checkpoints="last")
    """
    from groklab.analysis.registry import get

    analysis = get(name)
    source = run if isinstance(run, LoadedRun) else Path(run)
    result = analysis.run(source, **kwargs)
    if save:
        result.save(source.path if isinstance(source, LoadedRun) else source)
    return result


def report(run: str | Path | LoadedRun) -> Path:
    """Write RUN/report.html (curves, config, summary, every analysis present); returns its path."""
    from groklab.report import build_report

    return build_report(run.path if isinstance(run, LoadedRun) else run)  # = groklab.report(run)


__all__ = ["analyses", "analyze", "load_config", "load_run", "make_task", "report", "train"]
