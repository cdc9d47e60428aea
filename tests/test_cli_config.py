"""`groklab train --config FILE.yaml` without a positional task or preset name."""

import yaml
from typer.testing import CliRunner

from groklab.cli import app
from tests.conftest import TINY_SETS

runner = CliRunner()


def tiny_tree(steps: int = 20) -> dict:
    tree: dict = {"task": {"name": "composition"}}
    for item in [*TINY_SETS, f"train.steps={steps}"]:
        key, value = item.split("=", 1)
        group, field = key.split(".")
        tree.setdefault(group, {})[field] = yaml.safe_load(value)
    return tree


def write_config(path, tree):
    path.write_text(yaml.safe_dump(tree))
    return path


def one_error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("groklab: error:"), result.output
    return lines[0]


def test_config_file_names_the_task(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_tree())
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["task"]["name"] == "composition" and saved["task"]["entities"] == 40
    assert saved["train"]["steps"] == 20
    assert (out / "summary.json").is_file()


def test_default_out_is_named_after_the_config_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "c.yaml", tiny_tree())
    result = runner.invoke(app, ["train", "--config", "c.yaml", "--no-progress"])
    assert result.exit_code == 0, result.output
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.startswith("composition-")


def test_neither_name_nor_config_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--out", "o"])
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "no task given" in line and "composition" in line and "composition-small" in line
    assert list(tmp_path.iterdir()) == []


def test_config_without_task_name_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = tiny_tree()
    del tree["task"]["name"]
    write_config(tmp_path / "c.yaml", tree)
    result = runner.invoke(app, ["train", "--config", "c.yaml", "--out", "o"])
    assert result.exit_code == 2
    assert "task.name is required" in one_error_line(result)
    assert not (tmp_path / "o").exists()


def test_config_without_task_group_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = tiny_tree()
    del tree["task"]
    write_config(tmp_path / "c.yaml", tree)
    result = runner.invoke(app, ["train", "--config", "c.yaml", "--out", "o"])
    assert result.exit_code == 2
    assert "no task given" in one_error_line(result)
    assert not (tmp_path / "o").exists()
