"""``groklab analyze ... --opt NAME.KEY=VALUE``: settings of one analysis (``--opt sae.k=8
--opt sae.hooks=blocks.1.hook_resid_post``), checked against the keys its registry entry lists
and typed by the default of its ``run()`` keyword."""

from __future__ import annotations

import inspect


def parse_opts(opts: list[str], chosen: list[str]) -> dict[str, dict]:
    """name -> {key: value}; a ValueError names the bad option and what is allowed."""
    from groklab.analysis.registry import ANALYSES

    out: dict[str, dict] = {}
    for item in opts:
        head, eq, value = item.partition("=")
        name, dot, key = head.strip().partition(".")
        name = name.replace("-", "_")
        a = ANALYSES.get(name)
        settable = [x for x in ANALYSES if ANALYSES[x].settings]
        if not eq or not dot or a is None or not a.settings:
            raise ValueError(f"--opt '{item}' is not NAME.KEY=VALUE with NAME one of "
                             f"{', '.join(settable)}")
        if key not in a.settings:
            raise ValueError(f"--opt {name}.{key}: unknown key; {name} takes "
                             f"{', '.join(a.settings)}")
        if name not in chosen:
            raise ValueError(f"--opt {name}.{key} given without {a.flag}")
        default = inspect.signature(a.load().run).parameters[key].default
        out.setdefault(name, {})[key] = _typed(value.strip(), default, f"{name}.{key}")
    return out


def _typed(value: str, default, where: str):
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--opt {where}={value}: expected true or false")
        return value.lower() in ("true", "1")
    for kind, what in ((int, "an integer"), (float, "a number")):
        if isinstance(default, kind) and not isinstance(default, bool):
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"--opt {where}={value}: expected {what}") from None
    return None if value.lower() == "none" else value
