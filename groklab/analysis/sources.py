"""Where an analysis gets its models and examples: a run directory (every checkpoint) or a
model in memory, the checkpoints asked for, and a fixed sample of a split.

Wang et al. 2024 analyse 300 items drawn without replacement from ``train_inferred`` with
``np.random.seed(0)``, the same 300 at every checkpoint (docs/methods.md section 1.3); so does
:func:`sample_examples`.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData


class AnalysisError(ValueError):
    """Bad input to an analysis (unknown checkpoint, unsupported task...): one line."""


def read_saved(run_dir: Path, name: str, flag: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``RUN/analysis/<name>.json`` and every array of ``<name>.npz``, read eagerly.

    Analysis files may come from someone else's run directory: pickles are refused
    (``allow_pickle=False``: an object array could run code when unpickled), and a file that is
    unreadable or not plain arrays is an :class:`AnalysisError` naming it and how to rewrite it.
    """
    base = Path(run_dir) / "analysis" / name
    redo = f"rerun `groklab analyze {run_dir} {flag}` to rewrite it"
    try:
        meta = json.loads(base.with_suffix(".json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AnalysisError(f"'{base}.json' is unreadable ({_first_line(e)}); {redo}") from None
    try:
        with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile) as e:
        # AttributeError: a bare .npy loads as one array, without .files or a context manager
        raise AnalysisError(f"'{base}.npz' is not a plain-array analysis file "
                            f"({_first_line(e)}); {redo}") from None
    return meta, arrays


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


@dataclass
class ModelSource:
    """Models by checkpoint step, the task they were trained on, and the run if there is one."""

    task: TaskData
    steps: list[int]
    model_at: Callable[[int], torch.nn.Module]
    run: object | None = None  # groklab.rundir.LoadedRun

    @property
    def run_dir(self) -> Path | None:
        return None if self.run is None else Path(self.run.path)


def open_source(source, *, task: TaskData | None = None, checkpoints="all",
                device: str = "cpu") -> ModelSource:
    """``source`` is a run directory (path or LoadedRun) or a model; a model needs ``task``
    and counts as one checkpoint at step -1."""
    from groklab.rundir import LoadedRun, load_run

    if isinstance(source, (str, Path)):
        source = load_run(source)  # the one "is this a run" check, in groklab.rundir
    if isinstance(source, LoadedRun):
        steps = select_checkpoints(source.checkpoint_steps, checkpoints, str(source.path),
                                   early=lambda avail: early_step(source, avail))
        return ModelSource(task or source.task, steps,
                           lambda s: source.model(s, device=device), source)
    if isinstance(source, torch.nn.Module):
        if task is None:
            raise AnalysisError("an analysis of a model in memory needs task=TaskData")
        model = source.eval()
        return ModelSource(task, [-1], lambda s: model)
    raise AnalysisError(f"cannot analyse a {type(source).__name__}; give a run directory or model")


def require_transformer(model, analysis: str) -> None:
    """Residual-stream analyses need TL-style blocks and a final LayerNorm + unembedding."""
    hooks = getattr(model, "hook_dict", {})
    if "blocks.0.hook_resid_pre" not in hooks or not hasattr(model, "unembed"):
        arch = getattr(getattr(model, "cfg", None), "architecture", type(model).__name__)
        raise AnalysisError(f"{analysis} needs a transformer with a residual stream "
                            f"(blocks.L.hook_resid_pre); this model is '{arch}'")


def select_checkpoints(available: Sequence[int], spec, where: str = "the run",
                       early: Callable[[list[int]], int] | None = None) -> list[int]:
    """``"all"``, ``"last"``, ``"STEP,STEP,..."`` or a list of steps, checked against the run;
    in a list, ``early`` names the memorization-regime checkpoint (:func:`early_step`) and
    ``last`` the final one: ``"early,last"`` is the paper's before/after pair."""
    available = sorted(available)
    if not available:
        raise AnalysisError(f"no checkpoints in {where}")
    if spec is None or spec == "all":
        return list(available)
    if spec == "last":
        return [available[-1]]
    if isinstance(spec, str):
        named = {"last": lambda: available[-1]}
        if early is not None:
            named["early"] = lambda: early(available)
        try:
            spec = [named[s.strip()]() if s.strip() in named else int(s)
                    for s in spec.split(",") if s.strip()]
        except ValueError:
            raise AnalysisError(
                f"--checkpoints '{spec}' is not all, last or a comma-separated list of steps "
                "(early and last may appear in the list)") from None
    missing = [s for s in spec if s not in available]
    if missing or not spec:
        raise AnalysisError(
            f"no checkpoint at step(s) {missing} in {where}; available: {list(available)}"
        )
    return sorted(set(int(s) for s in spec))


def sample_examples(split: Split, n: int = 300, seed: int = 0) -> tuple[Split, np.ndarray]:
    """``n`` rows drawn without replacement with a fixed seed (all rows if there are fewer)."""
    size = len(split)
    if size <= n:
        idx = np.arange(size)
    else:
        idx = np.random.RandomState(seed).choice(size, size=n, replace=False)
    return split.subset(idx), idx


def probe_sample(task: TaskData, split: str | None, n: int, seed: int
                 ) -> tuple[str, Split, np.ndarray]:
    """The split asked for (default: the first of :func:`default_splits`), checked, and ``n``
    of its rows drawn by :func:`sample_examples`."""
    split = split or default_splits(task)[0]
    if split not in task.probes:
        raise AnalysisError(f"no split '{split}' in task '{task.name}'; "
                            f"available: {', '.join(task.probes)}")
    return (split, *sample_examples(task.probes[split], n, seed))


def default_splits(task: TaskData) -> list[str]:
    """train_inferred (the paper's), then the ID and OOD test splits where the task has them."""
    names = ["train_inferred", task.id_split, task.ood_split]
    chosen = [s for s in dict.fromkeys(names) if s and s in task.probes and len(task.probes[s])]
    return chosen or [s for s, split in task.probes.items() if len(split)]


def early_step(run, steps: Sequence[int]) -> int:
    """The checkpoint the paper compares the final one with: the model in its memorization
    regime. Wang et al. take index 10 (22k steps), just after train saturation at 14k, when ID
    accuracy was still below 10%. Small runs saturate while ID accuracy is already rising, so
    we take the checkpoint with the largest memorization gap, accuracy on ``train_inferred``
    minus accuracy on the ID split (from metrics.jsonl; the nearest evaluation at or before
    each checkpoint). Without those curves: the first checkpoint at or after memorization
    (train accuracy >= 0.99), else the middle checkpoint."""
    steps = sorted(steps)
    summary = (run.summary if run is not None else {}) or {}
    metrics = run.metrics if run is not None else []
    id_split = summary.get("id_split") or "test_id"
    keys = ("acc/train_inferred", f"acc/{id_split}")
    rows = sorted((m for m in metrics if all(k in m for k in keys)), key=lambda m: m["step"])
    if rows:
        gaps = {}
        for s in steps:
            before = [m for m in rows if m["step"] <= s]
            if before:
                m = before[-1]
                gaps[s] = m[keys[0]] - m[keys[1]]
        if gaps and max(gaps.values()) > 0.1:
            return max(gaps, key=gaps.get)
    mem = summary.get("memorization_step")
    if mem is not None:
        later = [s for s in steps if s >= mem]
        if later:
            return later[0]
    return steps[len(steps) // 2]


def plot_per_layer(ax, steps: Sequence[int], values: np.ndarray, n_layers: int) -> None:
    """One line per layer (the columns of ``values`` [checkpoints, layers]) against the
    training step, dark to bright with depth, on a [0, 1] axis: the over-training panel that
    the logit lens and causal tracing share."""
    import matplotlib

    cmap = matplotlib.colormaps["plasma"]
    for layer in range(values.shape[1]):
        ax.plot(steps, values[:, layer], marker=".", ms=3,
                color=cmap(layer / max(1, n_layers)), label=f"L{layer}")
    ax.set_xlabel("step")
    ax.set_ylim(-0.02, 1.02)
