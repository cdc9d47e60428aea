"""The run directory: what a run leaves behind, and how every later stage reads it back.

    config.yaml       the full resolved config tree (written before step 0), with the
                      device and thread count that trained it
    command.txt       the command line that started the run
    metrics.jsonl     one JSON object per evaluation: step, time, lr, losses, metrics, norms
    summary.json      memorization / generalization steps, delay, final metrics, status
    checkpoints/      step_XXXXXXXX.safetensors (weights only, log-spaced + linear)
                      resume.pt (model, optimizer, RNG states, step: rolling, for exact resume)
    figures/          PNGs written by analyses and reports
    analysis/         arrays (npz) and summaries (json, txt) written by analyses
    report.html

This module sits at the bottom of the package: it imports nothing from groklab at module level,
so tasks, models, the trainer, analyses, reports and the CLI all read runs the same way. The
loaded-run reader (:class:`LoadedRun`) builds models and task data on demand, importing those
layers inside its methods.

Every file is written atomically (a temp file in the same directory, fsynced, then
``os.replace``), so a SIGKILL leaves either the old or the new version, never half of one; a
failed write (disk full, read-only directory) leaves the previous version in place. Nothing read
from a run can execute code: weights are safetensors, the resume state is loaded with
``torch.load(weights_only=True)`` (tensors, numbers, strings and containers only), configs with
``yaml.safe_load``, arrays with ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file


class RunDirError(ValueError):
    """A run directory that is missing, foreign, or corrupt (one-line message)."""


class RunWriteError(OSError):
    """A write into the run directory failed (disk full, read-only); earlier files are intact."""


_UMASK = os.umask(0)
os.umask(_UMASK)


# ----------------------------------------------------------------------------- atomic writers


def _atomic(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` into a temp file next to ``path``, then rename it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise RunWriteError(f"cannot write '{path}': {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; publish an ordinary file
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, RunWriteError):
            raise RunWriteError(f"cannot write '{path}': {e.strerror or e}") from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(path: Path, obj) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata=None) -> None:
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic(path, lambda tmp: save_file(cpu, tmp, metadata))


def append_line(path: Path, line: str) -> None:
    """Append one line (a metrics row) and flush it to disk; an error names the file."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RunWriteError(f"cannot write '{path}': {e.strerror or e}") from None


# ----------------------------------------------------------------------------- layout


_STEP_RE = re.compile(r"step_(\d+)\.safetensors$")


@dataclass
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    summary_path = property(lambda self: self.path / "summary.json")
    ckpt_dir = property(lambda self: self.path / "checkpoints")
    resume_path = property(lambda self: self.path / "checkpoints" / "resume.pt")
    figures_dir = property(lambda self: self.path / "figures")
    analysis_dir = property(lambda self: self.path / "analysis")
    lock_path = property(lambda self: self.path / ".lock")

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def require_run(self) -> "RunDir":
        """The one "is this a run" check: a one-line error naming what is missing."""
        if not self.path.is_dir():
            raise RunDirError(f"'{self.path}' is not a groklab run directory (no such directory)")
        if not self.is_run():
            raise RunDirError(f"'{self.path}' is not a groklab run directory (no config.yaml)")
        return self

    def require_resumable(self) -> "RunDir":
        """A run that ``groklab resume`` can continue: config.yaml and checkpoints/resume.pt."""
        self.require_run()
        if not self.resume_path.is_file():
            raise RunDirError(
                f"'{self.path}' is not a resumable groklab run (no checkpoints/resume.pt); "
                "a run writes it every train.resume_every steps")
        return self

    def remove_partial_writes(self) -> list[Path]:
        """Delete the temp files of atomic writes that a killed process left half-written
        (``.NAME.*.tmp``: never valid, never read); returns what was removed."""
        stale = [p for d in (self.path, self.ckpt_dir, self.figures_dir, self.analysis_dir)
                 if d.is_dir() for p in d.glob(".*.tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def read_config_tree(self) -> dict:
        self.require_run()
        try:
            tree = yaml.safe_load(self.config_path.read_text())
        except yaml.YAMLError:
            raise RunDirError(f"'{self.config_path}' is not valid YAML") from None
        if not isinstance(tree, dict):
            raise RunDirError(f"'{self.config_path}' does not hold a task/model/train mapping")
        tree.pop("environment", None)
        return tree

    def read_environment(self) -> dict:
        """The device, thread count and versions the run was started with (config.yaml)."""
        tree = yaml.safe_load(self.config_path.read_text()) if self.is_run() else None
        env = tree.get("environment") if isinstance(tree, dict) else None
        return env if isinstance(env, dict) else {}

    def read_metrics(self) -> list[dict]:
        """Rows of metrics.jsonl; a torn last line (a kill mid-append) is ignored."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def rewrite_metrics(self, rows: list[dict]) -> None:
        """Replace metrics.jsonl atomically (resume drops rows after its checkpoint, and a
        torn last line with them)."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def read_summary(self) -> dict:
        if not self.summary_path.exists():
            return {}
        try:
            return json.loads(self.summary_path.read_text())
        except json.JSONDecodeError:
            raise RunDirError(f"'{self.summary_path}' is not valid JSON") from None

    def checkpoint_steps(self) -> list[int]:
        if not self.ckpt_dir.exists():
            return []
        steps = []
        for p in self.ckpt_dir.iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                steps.append(int(m.group(1)))
        return sorted(steps)

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"step_{step:08d}.safetensors"

    def load_weights(self, step: int) -> dict[str, torch.Tensor]:
        path = self.checkpoint_path(step)
        if not path.exists():
            raise RunDirError(
                f"no checkpoint at step {step} in '{self.path}'; have {self.checkpoint_steps()}"
            )
        try:
            return load_file(path)
        except Exception as e:  # a torn or foreign file
            raise RunDirError(f"'{path}' is not a readable safetensors file "
                              f"({type(e).__name__})") from None

    def save_resume_state(self, state: dict) -> None:
        atomic_torch_save(self.resume_path, state)

    def load_resume_state(self) -> dict:
        """The rolling resume state. ``weights_only=True``: a planted pickle cannot run code,
        it is refused as unreadable."""
        try:
            # On the CPU first: RNG states must stay CPU byte tensors (set_rng_state refuses
            # CUDA ones); the optimizer and model loaders move the rest to the device.
            return torch.load(self.resume_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise RunDirError(
                f"cannot resume '{self.path}': checkpoints/resume.pt is corrupt or not a "
                f"groklab resume state ({type(e).__name__}); delete it to restart the run from "
                "step 0") from None


# ----------------------------------------------------------------------------- loaded runs


class LoadedRun:
    """A run directory, read back: config, metrics, summary, task data and models by step."""

    def __init__(self, path: str | Path):
        from groklab.config import build_config

        self.dir = RunDir(Path(path)).require_run()
        self.config = build_config(self.dir.read_config_tree())

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
    def task(self):
        """The run's data, regenerated from its config (generators are deterministic)."""
        from groklab.tasks import make_task

        return make_task(self.config.task)

    def model(self, step: int | None = None, device: str = "cpu"):
        """The model at a checkpoint step (default: the last one), in eval mode."""
        from groklab.models import build_model

        steps = self.checkpoint_steps
        if not steps:
            raise RunDirError(f"no checkpoints in '{self.path}'")
        step = steps[-1] if step is None else step
        model = build_model(self.config.model)
        model.load_unique_state_dict(self.dir.load_weights(step))
        return model.to(torch.device(device)).eval()

    def __repr__(self) -> str:
        return f"LoadedRun({str(self.path)!r}, task={self.config.task.name})"


def load_run(path: str | Path) -> LoadedRun:
    return LoadedRun(path)
