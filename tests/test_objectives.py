"""The task-owned objectives: span (answer sequences), lm (next-token), classify (continuous
inputs) train through the one loop and learn; exact match equals greedy decoding."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import groklab
from groklab.cli import app
from groklab.config import load_config
from groklab.tasks import IGNORE, make_task
from groklab.tasks.objectives import generate, greedy_decode
from groklab.train.loop import Run

SPAN = ["task.max_len=4", "task.ood_extra=1", "task.n_train=1500", "task.n_test=200",
        "model.n_layers=2", "model.d_model=64", "model.n_heads=4", "train.batch_size=128",
        "train.lr=3e-3", "train.weight_decay=0.1", "train.eval_every=100",
        "train.checkpoint_every=0", "train.checkpoint_per_decade=0", "train.eval_per_decade=0"]


def test_strings_rows_are_prompt_answer_eos_with_targets_on_the_answer():
    d = make_task("strings", op="reverse", max_len=3, ood_extra=1, n_train=50, n_test=20)
    eq, eos = d.vocab.id("="), d.vocab.id("<eos>")
    for i in range(len(d.train)):
        row, tgt = d.train.inputs[i].tolist(), d.train.targets[i].tolist()
        n = row.index(eq)
        assert row[n + 1 : 2 * n + 1] == row[:n][::-1] and row[2 * n + 1] == eos
        # the target at position t is the token at t + 1, on the answer and <eos> only
        assert tgt[n : 2 * n + 1] == row[n + 1 : 2 * n + 2]
        assert all(t == IGNORE for t in tgt[:n] + tgt[2 * n + 1:])
    lengths = {int((r == eq).nonzero()) for r in d.probes["test_ood"].inputs}
    assert lengths == {4}  # one digit longer than any trained string
    train = {tuple(r.tolist()) for r in d.train.inputs}
    assert not train & {tuple(r.tolist()) for r in d.probes["test"].inputs}


@pytest.fixture(scope="module")
def span_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("span") / "run"
    result = CliRunner().invoke(app, ["train", "strings", "--out", str(out), "--no-progress",
                                      *[a for s in SPAN + ["train.steps=300"]
                                        for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    return out


def test_span_task_learns_through_groklab_train(span_run):
    summary = json.loads((span_run / "summary.json").read_text())
    assert summary["metric"] == "exact" and summary["objective"]["kind"] == "span"
    assert summary["final"]["test"] >= 0.95  # exact match of the whole reversed string
    assert summary["final_metrics"]["acc/test"] >= 0.98
    # learned absolute positions do not extrapolate to an unseen length
    assert summary["final"]["test_ood"] <= 0.2
    rows = [json.loads(x) for x in (span_run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/test", "acc/test", "exact/test"} <= set(rows[-1])


def test_exact_match_equals_greedy_decoding(span_run):
    run = groklab.load_run(span_run)
    model, data = run.model(), run.task
    for name in ("test", "test_ood"):
        split = data.probes[name]
        eq = data.vocab.id("=")
        start = (split.inputs == eq).int().argmax(1) + 1
        length = (split.targets != IGNORE).sum(1)
        prompt = split.inputs.clone()
        hidden = torch.arange(prompt.shape[1])[None] >= start[:, None]
        prompt[hidden] = data.vocab.id("<pad>")  # the answers are not given
        decoded = greedy_decode(model, prompt, start, length)
        assert torch.equal(decoded[~hidden], split.inputs[~hidden])
        mask = split.targets != IGNORE
        shifted = torch.full_like(decoded, IGNORE)
        shifted[:, :-1] = decoded[:, 1:]  # targets[:, t] scores the token at t + 1
        exact = ((shifted == split.targets) | ~mask).all(1).float().mean().item()
        logged = run.metrics[-1][f"exact/{name}"]
        assert exact == pytest.approx(logged, abs=1e-6), name


def test_classify_on_continuous_inputs_learns(tmp_path):
    sets = ["task.features=12", "task.classes=3", "task.n_train=300", "task.n_test=300",
            "model.architecture=dense", "model.n_layers=1", "model.d_mlp=64",
            "train.steps=300", "train.batch_size=64", "train.lr=3e-3", "train.weight_decay=0.01",
            "train.eval_every=100"]
    summary = Run.start(load_config("teacher", None, sets), tmp_path / "ce").train()
    assert summary["objective"]["kind"] == "classify"
    assert summary["final"]["train"] >= 0.97 and summary["final"]["test"] >= 0.85
    # MSE on one-hot targets (Omnigrok's loss), and a [channels, length] input shape
    mse = Run.start(load_config("teacher", None, [*sets, "task.loss=mse", "task.channels=3"]),
                    tmp_path / "mse")
    assert mse.data.input_shape == (3, 4) and mse.model_cfg.d_input == 12
    summary = mse.train()
    assert summary["final"]["test"] >= 0.85


def test_lm_task_approaches_its_entropy_floor_and_samples_reproducibly(tmp_path):
    sets = ["task.states=12", "task.branching=2", "task.length=16", "task.n_train=1000",
            "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "train.steps=300",
            "train.batch_size=64", "train.lr=1e-2", "train.weight_decay=0.0",
            "train.eval_every=100"]
    run = Run.start(load_config("markov", None, sets), tmp_path / "lm")
    floor = run.data.info["ppl_floor"]
    first = None
    summary = run.train()
    rows = run.dir.read_metrics()
    first = rows[0]["ppl/val"]
    last = rows[-1]["ppl/val"]
    assert first > 2 * floor  # untrained: near uniform over 12 tokens
    assert last <= 1.15 * floor  # the transition table is learned
    assert math.isclose(math.log(last), rows[-1]["loss/val"], rel_tol=1e-4)
    assert summary["objective"]["kind"] == "lm"
    model = run.model.eval()
    prompt = run.data.probes["val"].inputs[:4, :3]
    a = generate(model, prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(1))
    b = generate(model, prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (4, 11)
    # sampled continuations follow the chain: every transition has non-zero probability
    P = torch.from_numpy(run.data.arrays["transitions"])
    assert (P[a[:, 2:-1], a[:, 3:]] > 0).float().mean() >= 0.95


def test_a_continuous_task_needs_the_dense_model_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["train", "teacher", "--out", str(tmp_path / "x"),
                                      "--no-progress"])
    assert result.exit_code == 2
    assert "model.architecture=dense" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
