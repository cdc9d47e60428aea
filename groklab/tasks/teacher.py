"""Labels from a random teacher on Gaussian inputs: the smallest ``classify`` task.

Inputs are N(0, 1) floats of shape [features] (or [channels, length] with ``channels`` > 0,
the shape of MNIST-1D); the label is the argmax of a fixed random linear teacher W x (one row
of W per class), with a fraction ``label_noise`` of training labels replaced by random ones.
A linear model can reach 100% test accuracy; with few training points and a large
initialization it memorizes first. ``loss: mse`` trains on squared error to one-hot targets,
as Omnigrok does.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.objectives import Classify
from groklab.tasks.registry import TaskConfig, register


class TeacherConfig(TaskConfig):
    name: Literal["teacher"] = "teacher"
    features: int = 20
    channels: int = 0  # > 0: inputs [channels, features // channels] (a sequence shape)
    classes: int = 4
    n_train: int = 500
    n_test: int = 1000
    label_noise: float = 0.0
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"


@register("teacher", TeacherConfig,
          "continuous Gaussian inputs labelled by a random linear teacher (classify)")
def build(cfg: TeacherConfig) -> TaskData:
    if cfg.features < 1 or cfg.classes < 2 or cfg.n_train < 1 or cfg.n_test < 1:
        raise TaskError("features, n_train and n_test must be >= 1 and classes >= 2")
    if cfg.channels < 0 or (cfg.channels and cfg.features % cfg.channels):
        raise TaskError(f"channels {cfg.channels} must be 0 or divide features {cfg.features}")
    if not 0.0 <= cfg.label_noise <= 1.0 or math.isnan(cfg.label_noise):
        raise TaskError(f"label_noise {cfg.label_noise} must lie in [0, 1]")
    rng = np.random.default_rng(cfg.seed)
    W = rng.standard_normal((cfg.classes, cfg.features))
    shape = (cfg.channels, cfg.features // cfg.channels) if cfg.channels else (cfg.features,)

    def split(n: int, noise: float) -> Split:
        x = rng.standard_normal((n, cfg.features)).astype(np.float32)
        y = (x @ W.T).argmax(1)
        flip = rng.random(n) < noise
        y = np.where(flip, rng.integers(0, cfg.classes, size=n), y)
        return Split(torch.from_numpy(x.reshape(n, *shape)), None, torch.from_numpy(y),
                     {"noisy": flip})

    return TaskData(
        name="teacher",
        vocab=Vocab(tokens=[f"<class_{c}>" for c in range(cfg.classes)],
                    types=["label"] * cfg.classes),
        train=split(cfg.n_train, cfg.label_noise), probes={"test": split(cfg.n_test, 0.0)},
        id_split="test", ood_split=None,
        info={"input_shape": "x".join(map(str, shape))},
        objective=Classify(cfg.classes, cfg.loss),
    )
