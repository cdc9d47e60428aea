"""The run directory: what a run leaves behind, and how every later stage reads it back.

    config.yaml       the full resolved config tree (written before step 0)
    command.txt       the command line that started the run
    metrics.jsonl     one JSON object per evaluation: step, time, lr, losses, accuracies, norms
    summary.json      memorization / generalization steps, delay, final accuracies
    checkpoints/      step_XXXXXXXX.safetensors (weights only, log-spaced + linear)
                      resume.pt (model, optimizer, RNG states, step: rolling, for exact resume)
    figures/          PNGs written by analyses and reports
    analysis/         npz arrays written by analyses
    report.html

Every file is written atomically (temp file in the same directory, then ``os.replace``), so a
SIGKILL leaves either the old or the new version, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file


class RunDirError(ValueError):
    """A run directory that is missing, foreign, or corrupt (one-line message)."""


_UMASK = os.umask(0)
os.umask(_UMASK)


def _publish(tmp: str, path: Path) -> None:
    # mkstemp creates 0600 files; give the result the permissions of an ordinary file.
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(path: Path, obj) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata=None) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def remove_partial_writes(self) -> list[Path]:
        """Delete the temp files of atomic writes that a killed process left half-written
        (``.NAME.*.tmp``: never valid, never read); returns what was removed."""
        stale = [p for d in (self.path, self.ckpt_dir, self.figures_dir, self.analysis_dir)
                 if d.is_dir() for p in d.glob(".*.tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def read_config_tree(self) -> dict:
        if not self.is_run():
            raise RunDirError(f"'{self.path}' is not a groklab run directory (no config.yaml)")
        try:
            return yaml.safe_load(self.config_path.read_text())
        except yaml.YAMLError:
            raise RunDirError(f"'{self.config_path}' is not valid YAML") from None

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

    def read_summary(self) -> dict:
        if not self.summary_path.exists():
            return {}
        return json.loads(self.summary_path.read_text())

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
        return load_file(path)
