"""MNIST-1D (Greydanus and Kobak, arXiv 2011.14439): ten 1-D digit curves, padded, stretched,
scaled, shifted, sheared and noised into sequences of 40 floats (``classify``).

Generated offline from ``task.seed`` (default 42, the reference's) by
groklab/tasks/mnist1d_generate.py, which is bitwise equal to the reference package's
``make_dataset`` for the same arguments: ``num_samples`` class-balanced rows, the first
``train_split`` of them train, the rest are the ``test`` probe (4,000 / 1,000 by default).
``shuffle_seq`` permutes the 40 positions with one fixed permutation (the paper's test of a
spatial bias). Two keys are groklab's: ``n_train`` keeps only the first n training rows
(Omnigrok's data-size axis; 0 keeps all) and ``label_noise`` replaces that fraction of the
kept training labels with uniform random ones (drawn from a generator of its own, so the
inputs stay the reference's). Inputs are float32 [n, final_seq_length]; convolutional and
recurrent models read them as one channel.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.mnist1d_generate import make_dataset
from groklab.tasks.objectives import Classify
from groklab.tasks.registry import TaskConfig, register


class Mnist1dConfig(TaskConfig):
    name: Literal["mnist1d"] = "mnist1d"
    seed: int = 42  # the reference dataset's seed
    num_samples: int = 5000
    train_split: float = 0.8
    template_len: int = 12
    padding: tuple[int, int] = (36, 60)  # zeros appended: uniform in [low, high]
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 0.02
    shear_scale: float = 0.75
    shuffle_seq: bool = False
    final_seq_length: int = 40
    n_train: int = 0  # keep the first n training rows (0: all of them)
    label_noise: float = 0.0
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"

    def check(self) -> None:
        _validate(self)


def _validate(cfg: Mnist1dConfig) -> None:
    if not 0 <= cfg.seed < 2**32:
        raise TaskError(f"seed {cfg.seed} is outside [0, 2^32); numpy's RandomState needs that")
    if cfg.num_samples < 10:
        raise TaskError(f"num_samples {cfg.num_samples} is below 10; MNIST-1D needs one row "
                        "per digit at least")
    n = cfg.num_samples // 10 * 10
    n_train = int(n * cfg.train_split) if math.isfinite(cfg.train_split) else 0
    if not (0 < cfg.train_split < 1) or n_train == 0 or n_train == n:
        raise TaskError(f"train_split {cfg.train_split} leaves no train or no test rows of "
                        f"{n}; it must lie strictly between 0 and 1")
    low, high = cfg.padding
    if not 0 <= low <= high:
        raise TaskError(f"padding {list(cfg.padding)} must be [low, high] with 0 <= low <= high")
    if cfg.template_len < 1 or cfg.final_seq_length < 2:
        raise TaskError(f"template_len {cfg.template_len} must be >= 1 and final_seq_length "
                        f"{cfg.final_seq_length} >= 2")
    if cfg.template_len > cfg.final_seq_length:
        raise TaskError(f"template_len {cfg.template_len} is longer than the output "
                        f"(final_seq_length {cfg.final_seq_length}); it must be <= it")
    mid = cfg.template_len + high
    if not 1 <= cfg.max_translation <= mid:
        raise TaskError(f"max_translation {cfg.max_translation} must lie in 1..{mid} "
                        "(template_len + padding high)")
    for key in ("corr_noise_scale", "iid_noise_scale", "shear_scale"):
        v = getattr(cfg, key)
        if not (math.isfinite(v) and v >= 0):
            raise TaskError(f"{key} {v} must be >= 0 and finite")
    if not (math.isfinite(cfg.scale_coeff) and 0 <= cfg.scale_coeff < 2):
        raise TaskError(f"scale_coeff {cfg.scale_coeff} must lie in [0, 2) (the scale factor "
                        "1 + c (U - 0.5) stays positive)")
    if not 0 <= cfg.n_train <= n_train:
        raise TaskError(f"n_train {cfg.n_train} must lie in 0..{n_train} (the training rows of "
                        f"num_samples {cfg.num_samples} x train_split {cfg.train_split}; 0 "
                        "keeps all); raise num_samples for more")
    if not (math.isfinite(cfg.label_noise) and 0 <= cfg.label_noise <= 1):
        raise TaskError(f"label_noise {cfg.label_noise} must lie in [0, 1]")


def generate(cfg: Mnist1dConfig) -> dict[str, np.ndarray]:
    """The reference's dataset dict for ``cfg`` (float64, before groklab's n_train/noise)."""
    keys = ("num_samples", "train_split", "template_len", "padding", "scale_coeff",
            "max_translation", "corr_noise_scale", "iid_noise_scale", "shear_scale",
            "shuffle_seq", "final_seq_length", "seed")
    return make_dataset(**{k: getattr(cfg, k) for k in keys})


@register("mnist1d", Mnist1dConfig,
          "MNIST-1D: 1-D digit curves of 40 floats, offline and seeded (Greydanus & Kobak)")
def build(cfg: Mnist1dConfig) -> TaskData:
    _validate(cfg)
    d = generate(cfg)
    x, y = d["x"], d["y"]
    if cfg.n_train:
        x, y = x[:cfg.n_train], y[:cfg.n_train]
    rng = np.random.default_rng([cfg.seed, 17])  # label noise only
    flip = rng.random(len(y)) < cfg.label_noise
    y = np.where(flip, rng.integers(0, 10, size=len(y)), y)

    def split(xs: np.ndarray, ys: np.ndarray, meta: dict) -> Split:
        return Split(torch.from_numpy(xs.astype(np.float32)), None,
                     torch.from_numpy(ys.astype(np.int64)), meta)

    train = split(x, y, {"noisy": flip})
    test = split(d["x_test"], d["y_test"], {})
    return TaskData(
        name="mnist1d",
        vocab=Vocab(tokens=[f"<digit_{c}>" for c in range(10)], types=["label"] * 10),
        train=train, probes={"test": test}, id_split="test", ood_split=None,
        info={"input_shape": str(cfg.final_seq_length), "n_train": len(train),
              "n_test": len(test), "shuffled": cfg.shuffle_seq,
              "label_noise_realised": float(flip.mean()) if len(flip) else 0.0},
        objective=Classify(10, cfg.loss),
    )
