"""Which training rows a step's batch is drawn from: all of them, or a curriculum.

``train.curriculum: none`` draws ``batch_size`` row indices uniformly from the whole training
set with the run's generator (the draw every run has always made). ``difficulty`` orders the
rows by the task's per-row ``meta['difficulty']`` (stable: ties keep their row order) and draws
uniformly from the easiest fraction f(step) of them, f growing linearly from
``train.curriculum_start`` at step 0 to 1 at ``train.curriculum_steps`` and staying there. The
pool is extended to the end of its difficulty level, so a task with few levels (composition:
0 for atomic facts, 1 for inferred ones) trains on whole levels: atomic facts alone until the
fraction passes them, then everything.

Both are a function of (step, generator state) only, so the same seed gives the same batches
and a resumed run draws exactly what the uninterrupted run would have drawn (the generator's
state is in the resume checkpoint, the step in the run).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from groklab.config import ConfigError


class BatchSampler:
    def __init__(self, tc, split, device: torch.device, task: str = "the task"):
        self.n, self.batch, self.device = len(split), tc.batch_size, device
        self.order = None
        if tc.curriculum == "none":
            return
        diff = split.meta.get("difficulty")
        if diff is None:
            raise ConfigError(f"train.curriculum=difficulty needs a per-row difficulty, which "
                              f"{task} does not give; use train.curriculum=none")
        if tc.batch_size == 0 or tc.batch_size >= self.n:
            raise ConfigError("train.curriculum=difficulty needs minibatches: train.batch_size "
                              f"between 1 and the {self.n} training rows")
        order = np.argsort(np.asarray(diff, dtype=np.float64), kind="stable")
        self.sorted = np.asarray(diff, dtype=np.float64)[order]
        self.order = torch.from_numpy(order).to(device)
        self.start, self.steps = tc.curriculum_start, tc.curriculum_steps

    def pool(self, step: int) -> int:
        """How many of the easiest rows step ``step`` draws from."""
        if self.order is None:
            return self.n
        frac = self.start + (1 - self.start) * min(1.0, step / self.steps)
        k = min(self.n, max(1, math.ceil(frac * self.n)))
        return int(np.searchsorted(self.sorted, self.sorted[k - 1], side="right"))

    def __call__(self, step: int, generator: torch.Generator, out=None) -> torch.Tensor:
        if self.order is None:
            return torch.randint(self.n, (self.batch,), device=self.device, generator=generator,
                                 out=out)
        idx = torch.randint(self.pool(step), (self.batch,), device=self.device,
                            generator=generator)
        return self.order[idx] if out is None else torch.index_select(self.order, 0, idx, out=out)
