"""Send every metrics row to the dashboards people already use, when asked.

``train.tensorboard: true`` (``groklab train --tensorboard``) writes TensorBoard event files into
the run directory, next to ``metrics.jsonl``, so ``tensorboard --logdir runs/`` shows every run
by its directory name. Each row becomes scalars under the row's own keys (``acc/test_id``,
``loss/train``, ``lr``, ``weight_norm``, ...) at the row's step. It uses
``torch.utils.tensorboard`` (needs the ``tensorboard`` package) or else ``tensorboardX``.

``train.wandb: true`` (``--wandb``) logs the same rows to Weights & Biases, with the resolved
config; ``WANDB_PROJECT`` / ``WANDB_MODE`` etc. are read by wandb itself (project defaults to
``groklab``, the run name to the directory name).

Both libraries are optional and imported only when asked for; asking for one that is missing is
a one-line :class:`ConfigError` raised before the run directory is created. ``metrics.jsonl``
stays the record every groklab stage reads: these are copies for viewing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from groklab.config import ConfigError


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_loggers(train_cfg) -> None:
    """Fail early, with the install line, if a requested logger's library is missing."""
    if getattr(train_cfg, "tensorboard", False) and not (_has("tensorboard") or _has("tensorboardX")):
        raise ConfigError("train.tensorboard needs the tensorboard package: "
                          "pip install 'groklab[tensorboard]' (or tensorboardX)")
    if getattr(train_cfg, "wandb", False) and not _has("wandb"):
        raise ConfigError("train.wandb needs the wandb package: pip install wandb")


class TensorBoardLogger:
    def __init__(self, run_dir: Path, start_step: int):
        if _has("tensorboard"):
            from torch.utils.tensorboard import SummaryWriter
        else:
            from tensorboardX import SummaryWriter
        # purge_step: after a resume, TensorBoard drops events the first session logged past the
        # checkpoint, which this session logs again (metrics.jsonl is truncated the same way).
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_step or None)

    def log(self, row: dict) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()  # evaluations are rare; a killed run keeps what it logged

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, run_dir: Path, config: dict):
        import os
        import uuid

        import wandb

        # One wandb run per groklab run: the id is kept in the run directory, so a resumed run
        # continues the same wandb run.
        id_file = Path(run_dir) / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:16]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "groklab"),
                              name=Path(run_dir).resolve().name, dir=str(run_dir),
                              config=config, id=run_id, resume="allow")

    def log(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


def open_loggers(cfg, run_dir: Path, start_step: int) -> list:
    """The loggers ``cfg.train`` asks for (usually none)."""
    check_loggers(cfg.train)
    loggers = []
    if getattr(cfg.train, "tensorboard", False):
        loggers.append(TensorBoardLogger(run_dir, start_step))
    if getattr(cfg.train, "wandb", False):
        loggers.append(WandbLogger(run_dir, cfg.to_dict()))
    return loggers
