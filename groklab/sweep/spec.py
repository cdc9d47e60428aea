"""A sweep spec: a base preset, overrides for every point, and the axes to vary.

    # groklab sweep composition-phi --out sweeps/phi
    description: phi at CPU scale, three seeds
    base: composition-small          # a preset or a task name
    set:                             # applied to every point (dotted or nested keys)
      train.steps: 10000
    axes:                            # a grid: every combination of the listed values
      task.phi: [3.6, 5.4, 7.2, 9.0]
      train.seed: [0, 1, 2]
    points:                          # optional explicit points, each crossed with the grid
      - {train.lr: 1.0e-3, train.weight_decay: 1.0}
      - {train.lr: 3.0e-3, train.weight_decay: 0.3}

Every point is validated up front, config and task data alike (an infeasible ``task.phi`` fails
here, not an hour into the sweep), and errors are one line (:class:`SweepError`). Each point gets
a slug from the keys that vary (``phi=3.6,seed=0``): the name of its run directory.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from groklab.config import Config, ConfigError, _check_keys, _merge, build_config, load_config
from groklab.tasks import TaskData, TaskError, make_task

SWEEP_DIR = Path(__file__).resolve().parent.parent / "presets" / "sweeps"
SPEC_KEYS = ("description", "base", "set", "axes", "points")


class SweepError(ValueError):
    """A bad sweep spec or sweep directory; the message is one line."""


def sweep_names() -> list[str]:
    return sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def sweep_description(name: str) -> str:
    tree = yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text()) or {}
    return " ".join(str(tree.get("description", "")).split())


@dataclass
class Point:
    slug: str
    overrides: dict  # dotted key -> value: what distinguishes this point
    config: Config


@dataclass
class SweepSpec:
    base: str
    set: dict  # dotted key -> value
    axes: dict  # dotted key -> list of values
    points_list: list[dict]
    description: str = ""
    source: str = "spec"
    points: list[Point] = field(default_factory=list)
    data: dict[str, TaskData] = field(default_factory=dict, repr=False)  # task json -> data

    def to_dict(self) -> dict:
        return {"description": self.description, "base": self.base, "set": self.set,
                "axes": self.axes, "points": self.points_list}

    @property
    def varying(self) -> list[str]:
        """Dotted keys that take more than one value across the points, in spec order."""
        keys: list[str] = []
        for p in self.points:
            for k in p.overrides:
                if k not in keys:
                    keys.append(k)
        return [k for k in keys
                if len({json.dumps(p.overrides.get(k), sort_keys=True) for p in self.points}) > 1]


def _flatten(tree, where: str, prefix: str = "") -> dict:
    """``{"train": {"steps": 5}}`` or ``{"train.steps": 5}`` -> ``{"train.steps": 5}``."""
    if not isinstance(tree, dict):
        raise SweepError(f"{where} must be a mapping of config keys to values")
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key.count(".") == 0:
            out.update(_flatten(v, where, prefix=f"{key}."))
        else:
            out[key] = v
    for key in out:
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            raise SweepError(f"key '{key}' in {where} must be group.key with group task, model "
                             "or train (e.g. task.phi)")
    return out


def _nest(flat: dict) -> dict:
    tree: dict = {}
    for key, v in flat.items():
        group, name = key.split(".")
        tree.setdefault(group, {})[name] = v
    return tree


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return format(v, "g")
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt(x) for x in v)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", str(v))


def _slugs(overrides: list[dict], keys: list[str]) -> list[str]:
    """``phi=3.6,seed=0``: short key names unless two groups share one (``task.seed``)."""
    short = [k.split(".")[1] for k in keys]
    names = [s if short.count(s) == 1 else k for s, k in zip(short, keys)]
    slugs, seen = [], {}
    for ov in overrides:
        parts = [f"{n}={_fmt(ov[k])}" for n, k in zip(names, keys) if k in ov]
        slug = ",".join(parts) or "base"
        if slug in seen:
            seen[slug] += 1
            slug = f"{slug},{seen[slug]}"
        else:
            seen[slug] = 0
        slugs.append(slug)
    return slugs


def read_spec(source: str | Path) -> tuple[dict, str]:
    """The raw tree of a spec file or a shipped sweep name, and where it came from."""
    path = Path(source)
    if not path.is_file():
        if str(source) in sweep_names():
            path = SWEEP_DIR / f"{source}.yaml"
        else:
            raise SweepError(f"sweep spec '{source}' is neither a file nor a shipped sweep; "
                             f"shipped sweeps: {', '.join(sweep_names())}")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"sweep spec '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise SweepError(f"sweep spec '{path}' must be a mapping with base, set, axes, points")
    return tree, str(path)


def parse_spec(tree: dict, where: str = "sweep spec", build_data: bool = True) -> SweepSpec:
    """Validate a raw spec tree into a :class:`SweepSpec` with every point's config built."""
    unknown = [k for k in tree if k not in SPEC_KEYS]
    if unknown:
        raise SweepError(f"unknown key '{unknown[0]}' in {where}; allowed: {', '.join(SPEC_KEYS)}")
    base = tree.get("base")
    if not isinstance(base, str) or not base:
        raise SweepError(f"{where} needs 'base': a preset or task name (e.g. composition-small)")
    try:
        base_tree = load_config(base).to_dict()
    except (ConfigError, TaskError) as e:
        raise SweepError(f"{where}: {e}") from None
    set_ = _flatten(tree.get("set") or {}, f"'set' of {where}")
    axes = _flatten(tree.get("axes") or {}, f"'axes' of {where}")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"axis '{key}' in {where} must be a non-empty list of values, "
                             f"got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"axis '{key}' in {where} repeats a value: {values}")
        if key in set_:
            raise SweepError(f"'{key}' is both in 'set' and in 'axes' of {where}; keep one")
    raw_points = tree.get("points") or []
    if not isinstance(raw_points, list):
        raise SweepError(f"'points' of {where} must be a list of mappings of config keys")
    points_list = [_flatten(p, f"point {i} of {where}") for i, p in enumerate(raw_points)]
    if "points" in tree and not points_list:
        raise SweepError(f"'points' of {where} is empty; give at least one point or drop it")
    for i, p in enumerate(points_list):
        clash = [k for k in p if k in axes or k in set_]
        if clash:
            raise SweepError(f"'{clash[0]}' of point {i} of {where} is also in 'set' or 'axes'")
    grid = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    overrides = [{**g, **p} for g in grid for p in (points_list or [{}])]
    keys = {json.dumps(o, sort_keys=True) for o in overrides}
    if len(keys) != len(overrides):
        raise SweepError(f"{where} lists the same point twice")
    spec = SweepSpec(base=base, set=set_, axes=axes, points_list=points_list,
                     description=" ".join(str(tree.get("description", "")).split()), source=where)
    keys: list[str] = []
    for o in overrides:
        keys += [k for k in o if k not in keys]
    slugs = _slugs(overrides, keys)
    for slug, ov in zip(slugs, overrides):
        full = {**set_, **ov}
        tree_ = _merge(base_tree, _nest(full))
        try:
            _check_keys(tree_, where)
            cfg = build_config(tree_)
        except (ConfigError, TaskError) as e:
            msg = str(e) if len(overrides) == 1 else f"point {slug}: {e}"
            raise SweepError(msg) from None
        spec.points.append(Point(slug=slug, overrides=ov, config=cfg))
    if build_data:
        for p in spec.points:
            key = task_key(p.config)
            if key not in spec.data:
                try:
                    spec.data[key] = make_task(p.config.task)
                except TaskError as e:
                    raise SweepError(f"point {p.slug}: {e}") from None
    return spec


def task_key(cfg: Config) -> str:
    return json.dumps(cfg.task.model_dump(mode="json"), sort_keys=True)


def load_spec(source: str | Path, build_data: bool = True) -> SweepSpec:
    """A spec file or shipped sweep name -> validated :class:`SweepSpec`."""
    tree, where = read_spec(source)
    return parse_spec(tree, where, build_data=build_data)
