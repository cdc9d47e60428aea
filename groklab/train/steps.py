"""Step objects: how one training step of one or many runs is executed.

The schedule loop (groklab/train/loop.py) calls ``step()`` once per step after setting every
run's learning rate; it returns the runs' losses [n_runs] as a device tensor (no host sync).
What is computed comes from the run (``Run.draw_batch``, ``Run.loss``, ``Run.optimizer_step``,
all public), so the three kinds differ only in how they execute it:

- :class:`EagerStep`: one run, op by op.
- ``GraphStep`` (groklab/train/cuda_graph.py): one run, the whole step captured as a CUDA graph.
- ``StackedStep`` (groklab/train/batched.py): many runs as one batched model.
"""

from __future__ import annotations

import warnings

import torch

from groklab.train.cuda_graph import CudaGraphFallback, GraphStep


class EagerStep:
    def __init__(self, run):
        self.run = run

    def __call__(self) -> torch.Tensor:
        run = self.run
        loss = run.loss(run.draw_batch())
        loss.backward()
        run.optimizer_step()
        return loss.detach()[None]


def make_step(run):
    """The step ``train.cuda_graph`` asks for where it can run, else the eager step (with one
    warning saying why, when a graph was asked for)."""
    if run.cfg.train.cuda_graph:
        if run.device.type == "cuda" and torch.cuda.is_available():
            return GraphStep(run)
        warnings.warn(f"train.cuda_graph: running the eager step instead: no CUDA device (the "
                      f"run is on {run.device})", CudaGraphFallback, stacklevel=2)
    return EagerStep(run)
