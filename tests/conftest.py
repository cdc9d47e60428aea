import os

# The test models are tiny: a second OpenMP thread only adds synchronisation, and on a loaded
# 2-core machine spinning threads slow a suite down several-fold. Subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from groklab.config import load_config

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(42)


TINY_SETS = [
    "task.entities=40", "task.relations=6", "task.out_degree=3", "task.phi=2.0",
    "model.n_layers=2", "model.d_model=32", "model.n_heads=2",
    "train.batch_size=128", "train.eval_every=50", "train.checkpoint_every=100",
    "train.resume_every=40", "train.lr=3e-3",
]


@pytest.fixture
def tiny_cfg():
    """A composition run small enough to train hundreds of steps in a few seconds."""

    def make(*extra: str, steps: int = 200):
        return load_config("composition", None, [*TINY_SETS, f"train.steps={steps}", *extra])

    return make


def train_until_killed(run, at_step: int, exc=KeyboardInterrupt) -> None:
    """Train ``run`` and raise ``exc`` out of the step loop at ``at_step`` (a kill stand-in:
    nothing after the last rolling checkpoint is saved)."""
    from groklab.train.loop import train_runs
    from groklab.train.steps import EagerStep

    step = EagerStep(run)

    def step_then_die():
        if run.step == at_step:
            raise exc
        return step()

    with pytest.raises(exc):
        train_runs([run], step_then_die)
