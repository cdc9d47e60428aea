"""What analyses left in a run directory, grouped for the report.

Analyses write figures to ``RUN/figures/<name>*.png`` and arrays to ``RUN/analysis/<name>.npz``
(plus ``<name>*.json`` where a short text summary helps). The report knows no analysis in
advance: it groups every figure by the longest analysis name its file name starts with (names
come from the modules in :mod:`groklab.analysis` and the files in ``RUN/analysis/``), and
otherwise by the first word of the file name. Known analyses get a title and a sentence saying
what they measure; new ones are shown all the same, titled after their name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# Figures the report itself writes; never shown as an analysis.
OWN_PREFIXES = ("report_", "compare_")
# JSON summaries larger than this are listed by name, not tabulated.
MAX_JSON_BYTES = 24_000
MAX_JSON_ROWS = 40

def _known() -> dict[str, tuple[str, str]]:
    from groklab.analysis.registry import titles

    return titles()


KNOWN = _known()  # name -> (title, description), from the analysis registry


@dataclass
class FigureFile:
    path: Path
    caption: str
    width: int = 0  # pixels, from the PNG header
    height: int = 0

    @property
    def wide(self) -> bool:
        """Multi-panel figures read better across the whole page."""
        return self.height > 0 and self.width / self.height > 3.0


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; (0, 0) if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return 0, 0
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@dataclass
class AnalysisGroup:
    name: str
    title: str
    description: str
    figures: list[FigureFile] = field(default_factory=list)
    summaries: dict[str, object] = field(default_factory=dict)  # json file name -> content
    large: list[str] = field(default_factory=list)  # json files too large to tabulate
    arrays: list[str] = field(default_factory=list)  # npz files


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def analysis_module_names() -> list[str]:
    """Analyses in the registry (what a figure's file name may start with)."""
    from groklab.analysis.registry import ANALYSES

    return list(ANALYSES)


def _group_of(stem: str, names: list[str]) -> str:
    for name in sorted(names, key=len, reverse=True):
        if stem == name or re.match(rf"{re.escape(name)}[_\-.]", stem):
            return name
    return re.split(r"[_\-.]", stem, maxsplit=1)[0] or stem


def _rest(stem: str, group: str) -> str:
    return stem[len(group):].strip("_-.") if stem.startswith(group) else stem


def caption_for(stem: str, group: str, splits: tuple[str, ...] = ()) -> str:
    """``causal_tracing_step_00002000`` -> ``step 2,000``; ``logit_lens_over_training_test_id``
    -> ``over training \u00b7 test_id`` (a split name at the end is kept whole)."""
    rest = _rest(stem, group)
    if not rest:
        return KNOWN.get(group, (group.replace("_", " "),))[0]
    tail = ""
    for sp in sorted(splits, key=len, reverse=True):
        if rest == sp or rest.endswith("_" + sp):
            rest, tail = rest[: -len(sp)].rstrip("_-"), sp
            break
    words = [f"{int(t):,}" if t.isdigit() else t for t in re.split(r"[_\-]+", rest) if t]
    return " \u00b7 ".join(x for x in (" ".join(words), tail) if x)


def _figure_order(stem: str, group: str):
    """Main figures first (shortest names: ``logit_lens_test_id``), then variants, in natural
    order within each."""
    return (len(re.split(r"[_\-]+", _rest(stem, group))), _natural_key(stem))


def collect(run_dir: Path, splits: tuple[str, ...] = ()) -> list[AnalysisGroup]:
    """Every analysis figure and summary in ``run_dir``, grouped, known analyses first;
    ``splits`` (probe names) make better captions."""
    run_dir = Path(run_dir)
    fig_dir, ana_dir = run_dir / "figures", run_dir / "analysis"
    pngs = [p for p in fig_dir.glob("*.png") if not p.name.startswith(OWN_PREFIXES)] \
        if fig_dir.is_dir() else []
    data = sorted(p for p in ana_dir.iterdir() if p.suffix in (".json", ".npz")) \
        if ana_dir.is_dir() else []
    names = set(analysis_module_names()) | set(KNOWN) | {p.stem for p in data}
    names = sorted(names)
    groups: dict[str, AnalysisGroup] = {}

    def group(name: str) -> AnalysisGroup:
        if name not in groups:
            title, desc = KNOWN.get(name, (name.replace("_", " ").capitalize(), ""))
            groups[name] = AnalysisGroup(name, title, desc)
        return groups[name]

    for p in pngs:
        g = _group_of(p.stem, names)
        group(g).figures.append(FigureFile(p, caption_for(p.stem, g, splits), *png_size(p)))
    for g in groups.values():
        g.figures.sort(key=lambda f, name=g.name: _figure_order(f.path.stem, name))
    for p in data:
        g = group(_group_of(p.stem, names))
        if p.suffix == ".npz":
            g.arrays.append(p.name)
        elif p.stat().st_size > MAX_JSON_BYTES:
            g.large.append(p.name)
        else:
            try:
                g.summaries[p.name] = json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                g.large.append(p.name)
    order = list(KNOWN)
    return sorted(groups.values(),
                  key=lambda g: (order.index(g.name) if g.name in order else len(order), g.name))


def flatten(obj, prefix: str = "", out: list | None = None) -> list[tuple[str, str]]:
    """Nested JSON -> (dotted key, short value) rows for a table; long lists are elided."""
    out = [] if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, list) and obj and all(isinstance(x, (dict, list)) for x in obj) \
            and len(obj) <= 4:
        for i, v in enumerate(obj):
            flatten(v, f"{prefix}[{i}]", out)
    else:
        out.append((prefix or "value", short_value(obj)))
    return out


def short_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        if len(v) > 8 or any(isinstance(x, (dict, list)) for x in v):
            return f"[{len(v)} items]"
        return "[" + ", ".join(short_value(x) for x in v) + "]"
    if v is None:
        return "\u2014"
    s = str(v)
    return s if len(s) <= 120 else s[:117] + "..."
