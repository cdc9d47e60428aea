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


# Test tiers. unit: no training loop runs (generators, configs, models, hooks, analyses on
# hand-built models, the package's shape); a developer runs it in well under a minute with
# `pytest -m unit`. integration: trains real tiny runs, through the API or the CLI. slow
# (marked per test): real subprocesses killed mid-run, paper-scale presets. CI runs all three.
UNIT_FILES = {
    "test_architecture.py", "test_config.py", "test_config_property.py", "test_forecast.py",
    "test_heads.py", "test_hooks.py", "test_linearity.py", "test_lock.py", "test_logit_lens.py",
    "test_mnist1d.py", "test_model.py", "test_neurons.py", "test_patching.py", "test_story.py",
    "test_tasks.py",
    "test_complex.py",
    "test_adapters.py",
}
UNIT_FILES |= {"test_aaren.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        unit = item.path.name in UNIT_FILES
        item.add_marker(pytest.mark.unit if unit else pytest.mark.integration)
