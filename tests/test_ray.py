import json

import pytest

from groklab.sweep import parse_spec, read_index, run_sweep
from groklab.train.loop import Run
from tests.test_sweep import tiny_spec

ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'groklab[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_backend_runs_a_sweep_into_the_same_directory(local_ray, tmp_path):
    out = tmp_path / "sweep"
    spec = parse_spec(tiny_spec(steps=20, **{"train.seed": [0, 1]}))
    # "files": the workers train in their own temp dirs and ship the point directories back,
    # as on a cluster without a shared filesystem.
    rows = run_sweep(spec, out, backend="ray", ray_transfer="files", log=lambda s: None)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert read_index(out) == rows
    for p in spec.points:
        d = out / "points" / p.slug
        ref = Run.start(p.config, tmp_path / f"ref-{p.slug}")
        ref.train()
        got = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        want = ref.dir.read_metrics()
        assert [r["step"] for r in got] == [r["step"] for r in want]
        assert got[-1]["loss/train"] == pytest.approx(want[-1]["loss/train"], abs=1e-4)
        assert (d / "checkpoints" / "step_00000020.safetensors").exists()
    assert not [p for p in (out / "points").iterdir() if p.name.startswith(".")]

    # The spec grows by one seed: Ray trains only the new point, here in place (the worker
    # sees the sweep directory), and the finished ones are left as they were.
    before = (out / "points/seed=0/metrics.jsonl").stat().st_mtime_ns
    grown = parse_spec(tiny_spec(steps=20, **{"train.seed": [0, 1, 2]}))
    rows = run_sweep(grown, out, backend="ray", log=lambda s: None)
    assert [r["status"] for r in rows] == ["completed"] * 3
    assert (out / "points/seed=0/metrics.jsonl").stat().st_mtime_ns == before
