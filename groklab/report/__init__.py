"""Reports: ``report.html`` of a run (curves, config, summary, every analysis present) and of a
comparison of runs. Self-contained pages: figures embedded, inline CSS, no scripts, no network.

    groklab report RUN                   -> RUN/report.html, RUN/figures/report_*.png
    groklab compare RUN RUN ... --out D  -> D/report.html, D/figures/compare_*.png

This package imports nothing heavy: matplotlib loads when a report is built.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path


def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html`` (and its PNGs); returns its path."""
    from groklab.report.html import build_report as build

    return build(run_dir)


def build_compare(run_dirs: list[str | Path], out_dir: str | Path) -> Path:
    """Write ``OUT/report.html`` overlaying several runs; returns its path."""
    from groklab.report.html import build_compare as build

    return build(run_dirs, out_dir)


def report(run) -> Path:
    """``groklab.report(run)``: a run directory or :class:`groklab.rundir.LoadedRun` -> the path of
    its freshly written ``report.html``."""
    return build_report(getattr(run, "path", run))


class _CallableModule(types.ModuleType):
    """``groklab.report`` is this package and the API function at once: ``groklab.report(run)``
    writes a report, ``groklab.report.html`` etc. are its modules. (A plain function named
    ``report`` in ``groklab/__init__`` would hide the package's modules from
    ``import groklab.report.html as h``.)"""

    def __call__(self, run) -> Path:
        return report(run)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["build_compare", "build_report", "report"]
