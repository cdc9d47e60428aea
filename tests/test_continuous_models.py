"""The continuous-input models learn, the fixed-norm mode holds the norm through real training,
and bad MNIST-1D input fails in one line with exit 2."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import load_config
from groklab.train.loop import Run
from groklab.train.setup import param_norm
from tests.conftest import train_until_killed

# A linear teacher on 24 Gaussian floats read as one channel of length 24: separable by every
# model here; 3 classes.
TEACHER = ["task.features=24", "task.channels=1", "task.classes=3", "task.n_train=400",
           "task.n_test=400", "train.batch_size=100", "train.lr=1e-2", "train.weight_decay=0",
           "train.grad_clip=0", "train.eval_every=100", "train.checkpoint_every=1000",
           "train.resume_every=1000"]


@pytest.mark.parametrize("arch, sets, steps", [
    ("dense", ["model.n_layers=0"], 150),
    ("dense", ["model.n_layers=2", "model.d_mlp=32", "model.act_fn=relu"], 150),
    ("cnn", ["model.n_layers=2", "model.d_model=8", "model.act_fn=relu"], 200),
    ("gru", ["model.n_layers=1", "model.d_model=4"], 200),
])
def test_each_model_learns_a_separable_problem(tmp_path, arch, sets, steps):
    cfg = load_config("teacher", None, [*TEACHER, f"model.architecture={arch}", *sets,
                                        f"train.steps={steps}"])
    summary = Run.start(cfg, tmp_path / arch).train()
    assert summary["final"]["test"] >= 0.75, summary["final"]  # chance is 1/3; 10 steps: <= 0.71


def test_fixed_weight_norm_holds_through_training(tmp_path):
    cfg = load_config("mnist1d", None, [
        "task.num_samples=500", "model.architecture=dense", "model.n_layers=2",
        "model.d_mlp=32", "model.act_fn=relu", "model.init_scale=8", "task.loss=mse",
        "train.fixed_weight_norm=true", "train.weight_decay=0.1", "train.lr=1e-2",
        "train.batch_size=50", "train.steps=60", "train.eval_every=20",
        "train.checkpoint_every=1000", "train.resume_every=1000"])
    run = Run.start(cfg, tmp_path / "fixed")
    norm0 = float(param_norm(run.model))
    run.train()
    assert abs(float(param_norm(run.model)) / norm0 - 1) < 1e-6
    logged = [r["weight_norm"] for r in run.dir.read_metrics()]
    assert max(abs(w - norm0) for w in logged) < 1e-3  # rounded to 4 places in metrics.jsonl


def test_a_resumed_fixed_norm_run_equals_the_uninterrupted_one(tmp_path):
    # the constraint survives a kill: the resumed run holds the same norm, bit for bit
    sets = ["task.num_samples=300", "model.architecture=dense", "model.n_layers=1",
            "model.d_mlp=16", "model.init_scale=4", "train.fixed_weight_norm=true",
            "train.weight_decay=0", "train.lr=1e-2", "train.batch_size=40", "train.steps=60",
            "train.eval_every=10", "train.checkpoint_every=60", "train.resume_every=20"]
    full = Run.start(load_config("mnist1d", None, sets), tmp_path / "full")
    full.train()
    part = Run.start(load_config("mnist1d", None, sets), tmp_path / "part")
    train_until_killed(part, 45)
    resumed = Run.resume(tmp_path / "part")
    assert resumed.step == 40
    resumed.train()
    drop = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert drop(full.dir.read_metrics()) == drop(resumed.dir.read_metrics())
    wa, wb = full.dir.load_weights(60), resumed.dir.load_weights(60)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("args, words", [
    (["data", "mnist1d", "--set", "task.num_samples=-5"], "num_samples -5"),
    (["data", "mnist1d", "--set", "task.template_len=60"], "longer than the output"),
    (["train", "mnist1d", "--set", "model.architecture=lstm"], "model.architecture"),
    (["train", "mnist1d", "--set", "task.n_train=-3"], "n_train -3"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    out = tmp_path / "x"
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()
