"""The package's shape: one direction of flow and no import cycles; module sizes."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "groklab"
LOWER = ("groklab.tasks", "groklab.models", "groklab.train", "groklab.analysis",
         "groklab.rundir", "groklab.config", "groklab.sweep", "groklab.bridge", "groklab.sampling",
         "groklab.lock", "groklab.validation")
UPPER = ("groklab.api", "groklab.cli", "groklab.report", "groklab.reproduce")


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    # top level: what runs on import (an `if TYPE_CHECKING:` block does not)
    nodes = ast.walk(tree) if not top_level_only else tree.body
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("groklab"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("groklab"))
    return out


def test_nothing_below_the_cli_imports_the_api_the_cli_or_the_report():
    bad = []
    for name, path in modules().items():
        if name.startswith(LOWER):
            bad += [(name, t) for t in imports(path, top_level_only=False) if t.startswith(UPPER)]
    assert bad == []


def test_no_import_cycles_at_module_level():
    mods = modules()
    edges = {m: {t for t in imports(p, top_level_only=True) if t in mods and t != m}
             for m, p in mods.items()}
    # a submodule import runs its package's __init__ first: not a cycle by itself
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m, path):
        state[m] = 1
        for t in edges[m]:
            if state.get(t) == 1:
                cycle.extend(path[path.index(t):] + [t] if t in path else [m, t])
                return True
            if t not in state and visit(t, path + [t]):
                return True
        state[m] = 2
        return False

    for m in edges:
        if m not in state and visit(m, [m]):
            break
    assert cycle == []


def test_no_module_is_over_450_lines_and_the_loop_reads_in_one_sitting():
    sizes = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: s for n, s in sizes.items() if s > 450} == {}
    assert sizes["groklab.train.loop"] <= 330  # "about 300 lines"
