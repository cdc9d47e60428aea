import json

import pytest
from typer.testing import CliRunner

from groklab.cli import app
from groklab.report.story import story
from tests.conftest import TINY_SETS

runner = CliRunner()


def sets(*items):
    return [a for s in items for a in ("--set", s)]


def run_cli(*args):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "compositon"], "unknown task or preset 'compositon'; did you mean 'composition'?"),
        (["train", "composition-small", *sets("model.d_modle=64")],
         "unknown key 'model.d_modle' in --set; did you mean 'model.d_model'?"),
        (["train", "composition-small", *sets("model.d_model=abc")], "model.d_model"),
        (["train", "composition-small", *sets("model.n_heads=3")], "not divisible"),
        (["train", "composition-small", *sets("task.out_degree=50")], "out_degree"),
        (["train", "composition-small", *sets("task.phi=12")], "feasible maximum"),
        (["train", "composition-small", *sets("task.entities=0")], "entities"),
        (["train", "composition-small", *sets("train.lr=-1")], "train.lr must be > 0"),
        (["train", "composition-small", *sets("train.steps=0")], "train.steps"),
        (["train", "composition-small", *sets("optim.lr=1")], "unknown config group 'optim'"),
        (["train", "composition-small", *sets("lr=1")], "must be group.key"),
        (["train", "composition", "--config", "missing.yaml"], "does not exist"),
        (["resume", "."], "not a groklab run directory"),
        (["data", "composition", *sets("task.phi=99", "task.entities=50"), "--out", "d"],
         "feasible maximum"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "--out" not in args and args[0] == "train":
        args = [*args, "--out", "out"]
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("groklab: error:"), result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_config_file_with_unknown_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("task: {name: composition}\nmodel: {layers: 2}\n")
    result = run_cli("train", "composition", "--config", "c.yaml", "--out", "o")
    assert result.exit_code == 2
    assert "unknown key 'model.layers' in c.yaml; did you mean 'model.n_layers'?" in result.output
    assert not (tmp_path / "o").exists()


def test_out_dir_holding_a_run_is_refused_and_untouched(tmp_path):
    out = tmp_path / "run"
    ok = run_cli("train", "composition", *sets(*TINY_SETS, "train.steps=5"), "--out", str(out),
                 "--no-progress")
    assert ok.exit_code == 0, ok.output
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = run_cli("train", "composition", *sets(*TINY_SETS, "train.steps=5"), "--out", str(out))
    assert again.exit_code == 2
    assert "already holds a run" in again.output and "groklab resume" in again.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_corrupt_resume_checkpoint_is_refused(tmp_path):
    out = tmp_path / "run"
    ok = run_cli("train", "composition", *sets(*TINY_SETS, "train.steps=45"), "--out", str(out))
    assert ok.exit_code == 0
    ckpt = out / "checkpoints" / "resume.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    metrics = (out / "metrics.jsonl").read_text()
    result = run_cli("resume", str(out))
    assert result.exit_code == 2
    assert "resume.pt is corrupt" in result.output
    assert (out / "metrics.jsonl").read_text() == metrics


def test_train_prints_the_story(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "composition", *sets(*TINY_SETS, "train.steps=20"), "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 20
    printed = " ".join(result.output.split())
    for line in story(summary):  # the story of this run's own summary, every line of it
        assert " ".join(line.split()) in printed
    assert "in distribution (test_id)" in printed and "out of distribution (test_ood)" in printed
    # 20 steps do not memorize the training set, and the story says so with the peak
    assert summary["memorization_step"] is None and summary["best"]["train"] < 0.99
    assert "has not memorized its training set" in printed


def test_tasks_lists_tasks_and_presets():
    result = run_cli("tasks")
    assert result.exit_code == 0
    for name in ("composition", "comparison", "composition-small", "comparison-small",
                 "composition-shared", "composition-paper", "comparison-paper"):
        assert name in result.output


def test_data_writes_jsonl(tmp_path):
    out = tmp_path / "data"
    result = run_cli("data", "composition", *sets("task.entities=60", "task.relations=6",
                                                  "task.out_degree=4", "task.phi=2"),
                     "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "vocab.json").exists()
    ood = [json.loads(x) for x in (out / "test_ood.jsonl").read_text().splitlines()]
    train_rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    inferred = [r for r in train_rows if r.get("hops")]
    assert inferred and len(inferred[0]["hops"]) == 2
    assert ood and all(r["split"] == "test_ood" for r in ood)
    assert all(len(r["hops"]) == 2 for r in ood)
