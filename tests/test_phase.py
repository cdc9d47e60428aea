import json
import math

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from groklab.cli import app
from groklab.sweep import SweepError
from groklab.sweep.phase import run

INF = math.inf
# (phi, weight decay, seed) -> (step where test_id first reaches 0.95 or None, status)
POINTS = {
    (3.6, 0.1, 0): (None, "completed"), (3.6, 0.1, 1): (None, "completed"),
    (3.6, 1.0, 0): (4000, "completed"), (3.6, 1.0, 1): (6000, "completed"),
    (9.0, 0.1, 0): (3000, "completed"), (9.0, 0.1, 1): (5000, "completed"),
    (9.0, 1.0, 0): (1000, "completed"), (9.0, 1.0, 1): (None, "running"),  # not finished yet
}


def make_sweep(d):
    """A sweep directory written by hand: what `groklab sweep` leaves, without training."""
    (d / "points").mkdir(parents=True)
    rows, points = [], []
    for (phi, wd, seed), (reach, status) in POINTS.items():
        slug = f"phi={phi:g},weight_decay={wd:g},seed={seed}"
        ov = {"task.phi": phi, "train.weight_decay": wd, "train.seed": seed}
        p = d / "points" / slug
        p.mkdir()
        last = 8000 if status == "completed" else 5000
        metrics = []
        for step in range(0, last + 1, 1000):
            acc = 0.97 if reach is not None and step >= reach else 0.2 + phi / 100
            metrics.append({"step": step, "acc/train": 1.0, "acc/test_id": acc,
                            "acc/test_ood": 0.01})
        (p / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
        (p / "summary.json").write_text(json.dumps({
            "status": status, "id_split": "test_id", "ood_split": "test_ood",
            "steps": last, "task_info": {"n_train": 1000}}))
        (p / "config.yaml").write_text(yaml.safe_dump({"train": {"batch_size": 100}}))
        rows.append({"point": slug, "path": f"points/{slug}", "overrides": ov,
                     "status": status})
        points.append({"slug": slug, "overrides": ov})
    (d / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "sweep.yaml").write_text(yaml.safe_dump({
        "token": "t", "varying": ["task.phi", "train.weight_decay", "train.seed"],
        "points": points}))
    return d


def test_phase_grid_from_a_synthetic_sweep(tmp_path):
    d = make_sweep(tmp_path / "sw")
    r = run(d)
    assert (r.x_key, r.y_key, r.replicate_keys) == ("task.phi", "train.weight_decay",
                                                    ["train.seed"])
    assert r.x_values == [3.6, 9.0] and r.y_values == [0.1, 1.0]
    # steps[y, x, seed]: never -> inf (finished), running and not reached -> nan.
    assert np.array_equal(r.steps[0, 0], [INF, INF])
    assert np.array_equal(r.steps[1, 0], [4000, 6000])
    assert r.steps[1, 1, 0] == 1000 and np.isnan(r.steps[1, 1, 1])
    assert np.array_equal(r.median_steps, [[INF, 4000], [5000, 1000]])
    assert r.never.tolist() == [[True, False], [False, False]]
    assert r.final[0, 0, 0] == pytest.approx(0.236)
    assert r.mean_final[1, 1] == pytest.approx((0.97 + 0.29) / 2)
    assert r.run_length[1, 1].tolist() == [8000, 5000]
    # Epochs: batch 100 of 1000 training rows = a tenth of an epoch per step.
    assert run(d, unit="epochs").median_steps[1, 0] == pytest.approx(500)
    # A stricter threshold is never reached: every finished cell is censored.
    assert run(d, threshold=0.99).never.all()
    # Axes swap on request; the seed can be an axis too.
    swapped = run(d, x="train.weight_decay", y="task.phi")
    assert np.array_equal(swapped.median_steps, r.median_steps.T)
    assert run(d, x="train.seed").replicate_keys == ["train.weight_decay"]


def test_phase_writes_arrays_and_figures(tmp_path):
    d = make_sweep(tmp_path / "sw")
    res = CliRunner().invoke(app, ["phase", str(d)])
    assert res.exit_code == 0, res.output
    assert "train.weight_decay=0.1  steps until test_id >= 0.95 by task.phi: 3.6: never, " \
           "9.0: 4000" in res.output
    z = np.load(d / "analysis" / "phase.npz")
    assert z["median_steps"].shape == (2, 2) and z["never"][0, 0]
    for name in ("phase_steps.png", "phase_heatmap_steps.png", "phase_heatmap_final.png"):
        assert (d / "figures" / name).stat().st_size > 10_000
    meta = json.loads((d / "analysis" / "phase.json").read_text())
    assert meta["median_steps"] == [[None, 4000.0], [5000.0, 1000.0]]


def test_phase_bad_input(tmp_path):
    with pytest.raises(SweepError, match="not a sweep directory"):
        run(tmp_path)
    d = make_sweep(tmp_path / "sw")
    with pytest.raises(SweepError, match="swept keys: task.phi, train.weight_decay"):
        run(d, x="task.entities")
    with pytest.raises(SweepError, match="no split 'nope'"):
        run(d, split="nope")
    res = CliRunner().invoke(app, ["phase", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "not a sweep directory" in res.output
