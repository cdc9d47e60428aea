"""Files read back from run and sweep directories cannot run code.

A run or sweep directory may come from someone else (a shared cluster, a downloaded result).
Each test plants a malicious ``.npz`` (an object array whose element unpickles to
``open(tmp_path / "PWNED", "w")``) where groklab reads analysis arrays, runs the reading path,
and checks that PWNED was never created and that any error is one line.
"""

import io
import json
import pickle
import shutil
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

import groklab
from groklab.analysis.sources import AnalysisError
from groklab.cli import app
from groklab.config import load_config
from groklab.sweep.ray_backend import unpack_points
from groklab.sweep.spec import SweepError
from groklab.train.loop import train as train_run
from tests.conftest import TINY_SETS
from tests.test_phase import make_sweep

runner = CliRunner()


class Payload:
    """Unpickling this creates ``path``: the stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant(npz, pwned, keys=("steps", "test_id.ranks", "test_id.example_index")):
    npz.parent.mkdir(parents=True, exist_ok=True)
    evil = np.array([Payload(pwned)], dtype=object)
    np.savez(npz, allow_pickle=True, **{k: evil for k in keys})
    # A readable sidecar, so readers get as far as the arrays.
    npz.with_suffix(".json").write_text(json.dumps({"task": "composition"}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run with a genuine logit lens saved (the causal-tracing reader needs one)."""
    out = tmp_path_factory.mktemp("safe") / "run"
    train_run(load_config("composition", None, [*TINY_SETS, "train.steps=40"]), out)
    groklab.analyze(out, "logit_lens", checkpoints="last", n_examples=20)
    return out


@pytest.fixture
def run(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def one_line(msg: str) -> str:
    assert "\n" not in msg.strip(), msg
    return msg


def test_the_payload_is_live(tmp_path):
    # Proves the planted file would run code if read with pickles allowed.
    plant(tmp_path / "x.npz", tmp_path / "PWNED")
    with np.load(tmp_path / "x.npz", allow_pickle=True) as z:
        z["steps"]
    assert (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name", ["logit_lens", "causal_tracing", "fourier"])
def test_report_lists_planted_arrays_without_loading_them(run, tmp_path, name):
    plant(run / "analysis" / f"{name}.npz", tmp_path / "PWNED")
    path = groklab.report(run)
    assert f"{name}.npz" in path.read_text()
    res = runner.invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name", ["logit_lens", "causal_tracing"])
def test_circuit_summary_refuses_planted_arrays(run, tmp_path, name):
    plant(run / "analysis" / f"{name}.npz", tmp_path / "PWNED")
    with pytest.raises(AnalysisError) as err:
        groklab.analyze(run, "circuit", save=False)
    msg = one_line(str(err.value))
    assert f"analysis/{name}.npz' is not a plain-array analysis file" in msg
    assert "allow_pickle=False" in msg and "groklab analyze" in msg
    assert not (tmp_path / "PWNED").exists()


def test_a_pickle_named_npz_is_refused(run, tmp_path):
    (run / "analysis" / "logit_lens.npz").write_bytes(pickle.dumps(Payload(tmp_path / "PWNED")))
    with pytest.raises(AnalysisError, match="is not a plain-array analysis file"):
        groklab.analyze(run, "circuit", save=False)
    assert not (tmp_path / "PWNED").exists()


def test_cli_analyze_refuses_a_planted_lens_before_writing(run, tmp_path):
    # --causal-tracing alone ends with the circuit summary, which reads the saved logit lens.
    plant(run / "analysis" / "logit_lens.npz", tmp_path / "PWNED")
    before = sorted(p.name for p in (run / "analysis").iterdir())
    res = runner.invoke(app, ["analyze", str(run), "--causal-tracing", "--checkpoints", "last",
                              "--examples", "10", "--rome", "none"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "logit_lens.npz' is not a plain-array" in lines[0], res.output
    assert sorted(p.name for p in (run / "analysis").iterdir()) == before
    assert not (tmp_path / "PWNED").exists()


def test_phase_command_with_a_planted_phase_npz(tmp_path):
    d = make_sweep(tmp_path / "sweep")
    plant(d / "analysis" / "phase.npz", tmp_path / "PWNED",
          keys=("median_steps", "final_acc", "x_values"))
    res = runner.invoke(app, ["phase", str(d)])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "PWNED").exists()
    with np.load(d / "analysis" / "phase.npz", allow_pickle=False) as z:  # rewritten, plain
        assert all(z[k].dtype != object for k in z.files)


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


@pytest.mark.parametrize("filters", [True, False])
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_returned_ray_archives_cannot_escape(tmp_path, monkeypatch, filters, kind):
    # Ray workers without the shared filesystem return point directories as tar archives.
    if not filters:  # Pythons before 3.10.12 / 3.11.4 have no tarfile.data_filter
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    outside = tmp_path / "escape"
    member = {"dotdot": _file("p/../../../escape"), "absolute": _file(str(outside)),
              "symlink": _link("p/evil", "/etc/passwd")}[kind]
    points = tmp_path / "sweep" / "points"
    points.mkdir(parents=True)
    try:
        unpack_points(tmp_path / "sweep", _tar([_file("p/metrics.jsonl"), member]))
    except SweepError as e:
        one_line(str(e))
    else:  # the data filter makes an absolute name relative instead of refusing it
        assert kind == "absolute" and filters
    assert not outside.exists()
    assert not any(p.is_symlink() for p in points.rglob("*"))


def test_returned_ray_archive_of_plain_files_unpacks(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    (tmp_path / "sweep" / "points").mkdir(parents=True)
    unpack_points(tmp_path / "sweep", _tar([_file("p/metrics.jsonl", b"{}\n")]))
    assert (tmp_path / "sweep" / "points" / "p" / "metrics.jsonl").read_text() == "{}\n"
