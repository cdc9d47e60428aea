import json

import pytest
import yaml
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import load_config
from groklab.sweep import SweepError, load_spec, parse_spec, read_index, run_sweep, sweep_names
from groklab.train.loop import Run
from tests.conftest import TINY_SETS, train_until_killed

runner = CliRunner()


def tiny_spec(steps=40, **axes):
    """The tests' tiny composition run (conftest.TINY_SETS) with ``axes``."""
    axes = axes or {"train.seed": [0, 1]}
    fixed = {k: yaml.safe_load(v) for k, v in (s.split("=") for s in TINY_SETS)}
    fixed["train.steps"] = steps
    fixed["train.resume_every"] = 20
    return {"base": "composition", "set": {k: v for k, v in fixed.items() if k not in axes},
            "axes": axes}


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_spec_points_slugs_and_configs():
    spec = parse_spec(tiny_spec(**{"task.phi": [1.0, 2.0], "train.seed": [0, 1]}))
    assert [p.slug for p in spec.points] == ["phi=1,seed=0", "phi=1,seed=1", "phi=2,seed=0",
                                             "phi=2,seed=1"]
    assert spec.varying == ["task.phi", "train.seed"]
    assert spec.points[3].config.task.phi == 2.0 and spec.points[3].config.train.seed == 1
    assert spec.points[0].config.train.steps == 40  # from set
    # Two groups with the same key name get the full key in the slug.
    spec = parse_spec(tiny_spec(**{"task.seed": [0], "train.seed": [0, 1]}))
    assert spec.points[1].slug == "task.seed=0,train.seed=1"


@pytest.mark.parametrize("axes, extra, message", [
    ({"task.phii": [1.0]}, {}, "unknown key 'task.phii' in spec; did you mean 'task.phi'?"),
    ({"task.phi": []}, {}, "axis 'task.phi' in spec must be a non-empty list"),
    ({"task.phi": 2.0}, {}, "must be a non-empty list"),
    ({"phi": [1.0]}, {}, "must be group.key"),
    ({}, {"base": "compositon"}, "did you mean 'composition'?"),
    ({}, {"axez": {}}, "unknown key 'axez' in spec; allowed: description, base, set, axes, points"),
    ({"task.phi": [1.0, 99.0]}, {}, "point phi=99: phi 99"),
    ({"train.lr": [-1.0, 1.0]}, {}, "train.lr must be > 0"),
    ({"train.seed": [0, 0]}, {}, "repeats a value"),
    ({"train.seed": [0]}, {"set": {"train.seed": 1}}, "both in 'set' and in 'axes'"),
])
def test_bad_specs_fail_with_one_line(axes, extra, message):
    tree = {**tiny_spec(**axes), **extra}
    with pytest.raises(SweepError) as e:
        parse_spec(tree, "spec")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_bad_spec_exits_2_and_writes_nothing(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec(), "axes": {"task.phii": [1.0]}}))
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "did you mean 'task.phi'" in res.output
    assert not (tmp_path / "out").exists()
    res = runner.invoke(app, ["sweep", "no-such-sweep", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "composition-phi" in res.output


def test_shipped_sweeps_are_valid():
    assert {"composition-phi", "composition-entities", "composition-wd-phi"} <= set(sweep_names())
    for name in sweep_names():
        spec = load_spec(name)  # builds every point's data: infeasible phi would fail here
        assert len(spec.points) >= 2 and spec.varying
    phis = [p.config.task.phi for p in load_spec("composition-phi-full").points]
    assert phis == [3.6, 5.4, 7.2, 9.0, 12.6, 18.0]


def test_resume_skips_finished_points_and_resumes_interrupted(tmp_path):
    out = tmp_path / "sweep"
    first = parse_spec(tiny_spec(**{"train.seed": [0, 1]}))
    rows = run_sweep(first, out, log=lambda s: None)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert rows[0]["path"] == "points/seed=0" and rows[0]["overrides"] == {"train.seed": 0}
    assert isinstance(rows[0]["final_train"], float) and rows[0]["steps"] == 40
    finished = {p: (out / "points" / p / "metrics.jsonl").stat().st_mtime_ns
                for p in ("seed=0", "seed=1")}

    # The spec grows by one seed, whose run was killed at step 30 (resume.pt at 20).
    grown = parse_spec(tiny_spec(**{"train.seed": [0, 1, 2]}))
    victim = Run.start(grown.points[2].config, out / "points" / "seed=2")
    train_until_killed(victim, 30)
    assert json.loads((out / "points/seed=2/summary.json").read_text())["status"] == "running"

    rows = run_sweep(grown, out, log=lambda s: None)
    assert [r["status"] for r in rows] == ["completed"] * 3
    for p, mtime in finished.items():  # untouched: skipped, not retrained
        assert (out / "points" / p / "metrics.jsonl").stat().st_mtime_ns == mtime
    # The resumed point equals the same run trained without a break.
    ref = Run.start(load_config("composition", None, [*TINY_SETS, "train.steps=40",
                                                      "train.resume_every=20", "train.seed=2"]),
                    tmp_path / "ref")
    ref.train()
    resumed = (out / "points/seed=2/metrics.jsonl").read_text().splitlines()
    assert strip_time(map(json.loads, resumed)) == strip_time(ref.dir.read_metrics())
    assert read_index(out) == rows
    assert len(read_index(out)) == 3


def test_changed_config_of_a_trained_point_is_refused(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(parse_spec(tiny_spec(steps=20, **{"train.seed": [0]})), out, log=lambda s: None)
    before = (out / "sweep.jsonl").read_text()
    changed = parse_spec(tiny_spec(steps=30, **{"train.seed": [0]}))
    with pytest.raises(SweepError, match="different config"):
        run_sweep(changed, out, log=lambda s: None)
    assert (out / "sweep.jsonl").read_text() == before


def test_cli_sweep_batched_runs_and_indexes(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(steps=30, **{"train.lr": [1e-3, 3e-3]})))
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "o"), "--batched",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = read_index(tmp_path / "o")
    assert [r["point"] for r in rows] == ["lr=0.001", "lr=0.003"]
    assert all(r["status"] == "completed" for r in rows)
    command = (tmp_path / "o/points/lr=0.001/command.txt").read_text()
    assert "batched with 2 members" in command
    # Running it again trains nothing and says so.
    res = runner.invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "o"), "--dry-run"])
    assert "0 to train" in res.output
