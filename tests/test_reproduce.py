"""groklab reproduce: the claim predicates on hand-written curves, bad input, and every study's
tiny path end to end (real tiny runs, the table's shape, a known-false claim reported so)."""

import json

import pytest
from typer.testing import CliRunner

from groklab.cli import app
from groklab.reproduce.base import Claim, Measured, MissingRun, Runs, RunSpec, Study, StudyError
from groklab.reproduce.claims import at_most, delay, sooner_along
from groklab.reproduce.runner import check_request, evaluate, reproduce
from groklab.reproduce.studies import MODULES, get, studies


class FakeRuns(Runs):
    """Runs whose metrics are given as {name: {key: [(step, value), ...]}}."""

    def __init__(self, curves):
        super().__init__("/nonexistent", [RunSpec(n, "composition") for n in curves])
        self.curves = curves

    def metric(self, name, key):
        if name not in self.curves or key not in self.curves[name]:
            raise MissingRun(f"run {name} logged no {key}")
        steps, values = zip(*self.curves[name][key])
        return list(steps), list(values)


def grokking(mem_step, gen_step, at_mem=0.1):
    train = [(0, 0.0), (mem_step, 0.995), (4000, 1.0)]
    test = [(0, 0.0), (mem_step, at_mem), (gen_step, 0.96), (4000, 0.99)]
    return {"acc/train_inferred": train, "acc/test_id": test}


def test_delay_holds_for_a_3x_delay_and_fails_for_less_or_when_test_is_already_high():
    assert delay(FakeRuns({"a": grokking(500, 1500)}), ["a"], "acc/train_inferred",
                 "acc/test_id").holds is True
    assert delay(FakeRuns({"a": grokking(500, 1000)}), ["a"], "acc/train_inferred",
                 "acc/test_id").holds is False
    assert delay(FakeRuns({"a": grokking(500, 2000, at_mem=0.6)}), ["a"], "acc/train_inferred",
                 "acc/test_id").holds is False
    # every seed must hold
    both = FakeRuns({"a": grokking(500, 2000), "b": grokking(500, 900)})
    m = delay(both, ["a", "b"], "acc/train_inferred", "acc/test_id")
    assert m.holds is False and m.detail["a"]["delay"] == 4.0 and "1.8x" in m.value


def test_sooner_along_needs_a_strict_order_and_counts_never_as_latest():
    runs = FakeRuns({"lo": grokking(500, 3000), "mid": grokking(500, 2000),
                     "hi": grokking(500, 1000)})
    assert sooner_along(runs, ["lo", "mid", "hi"], [1, 2, 3], "acc/test_id").holds is True
    assert sooner_along(runs, ["hi", "mid", "lo"], [1, 2, 3], "acc/test_id").holds is False
    never = FakeRuns({"lo": {"acc/test_id": [(0, 0.0), (4000, 0.5)]}, "hi": grokking(500, 900)})
    assert sooner_along(never, ["lo", "hi"], [1, 2], "acc/test_id").holds is True
    assert at_most(never, ["lo"], "acc/test_id", 0.1).holds is False


def test_a_claim_whose_run_is_missing_is_not_measured_rather_than_false():
    claim = Claim("x", "y", "z", lambda r: at_most(r, ["gone"], "acc/test_ood", 0.1))
    res = evaluate(claim, FakeRuns({"a": grokking(1, 2)}))
    assert res.holds is None and res.verdict == "not measured" and "gone" in res.measured


def test_every_study_lists_claims_with_published_numbers_and_sources():
    all_ = studies()
    assert len(all_) == len(MODULES) >= 7
    for s in all_.values():
        assert s.claims and "cpu" in s.minutes
        for c in s.claims:
            assert c.published and c.source and c.text
        names = [r.name for r in s.run_specs("cpu", 2)]
        assert len(names) == len(set(names))
    out = CliRunner().invoke(app, ["reproduce", "--list"])
    assert out.exit_code == 0 and all(name in out.output for name in all_)


@pytest.mark.parametrize("args, msg", [
    (["nope"], "unknown study 'nope'"),
    (["composition", "--scale", "huge"], "unknown --scale 'huge'"),
    (["composition", "--seeds", "0"], "--seeds 0 is below 1"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, msg):
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["reproduce", *args, "--out", str(out)])
    assert res.exit_code == 2 and msg in res.output and not out.exists()


def test_an_out_holding_another_study_is_refused(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"study": "nanda", "scale": "cpu",
                                                     "seeds": 1}))
    with pytest.raises(StudyError, match="holds a reproduction of nanda"):
        check_request(get("power"), "cpu", 1, tmp_path)


@pytest.mark.parametrize("name", MODULES)
def test_every_study_runs_end_to_end_at_tiny_scale(tmp_path, name):
    study = get(name)
    lines = []
    result = reproduce(study, "tiny", 1, tmp_path / "r", say=lines.append)
    table = json.loads((tmp_path / "r" / "reproduction.json").read_text())
    assert [c["text"] for c in table["claims"]] == [c.text for c in study.claims]
    assert all(r["error"] is None for r in table["runs"]), table["runs"]
    assert {c["verdict"] for c in table["claims"]} <= {"holds", "does not hold", "not measured"}
    # Forty steps are far too few to grok: each study's grokking claim must report so. (The
    # circuits study reads analyses whose early-vs-final contrast is noise at this size.)
    if name != "circuits":
        assert result.claims[0].holds is False, result.claims[0]
    # rerunning the same reproduction resumes: nothing is trained again
    again = reproduce(study, "tiny", 1, tmp_path / "r", say=lines.append)
    assert [c.measured for c in again.claims] == [c.measured for c in result.claims]
    assert any("already trained" in line for line in lines)


def test_the_report_of_a_reproduction_has_the_table(tmp_path):
    study = Study("toy", "toy study", "", {"cpu": 1},
                  lambda scale, seeds: [RunSpec("a", "parity", (
                      "task.n_bits=8", "task.k=2", "task.n_train=64", "task.n_test=64",
                      "model.d_mlp=8", "train.steps=20", "train.eval_every=10",
                      "train.checkpoint_every=10", "train.resume_every=10"))],
                  (Claim("always false", "1.0", "nobody", lambda r: Measured("0.0", False)),))
    reproduce(study, "tiny", 1, tmp_path, say=lambda _: None)
    from groklab.report.reproduction import build_reproduction

    html = build_reproduction(tmp_path).read_text()
    assert "always false" in html and "does not hold" in html and "data:image/png" in html


def test_checkpoints_early_and_last_name_the_memorization_regime_and_the_end():
    from groklab.analysis.sources import AnalysisError, select_checkpoints

    avail = [0, 100, 200, 300]
    assert select_checkpoints(avail, "early,last", early=lambda a: 100) == [100, 300]
    assert select_checkpoints(avail, "last,0") == [0, 300]
    with pytest.raises(AnalysisError, match="early and last may appear"):
        select_checkpoints(avail, "early,bogus", early=lambda a: 100)


def test_fact_injection_seeds_name_runs_and_group_them_by_configuration():
    """--seeds N: one base, every injection once per seed (seed 0 unsuffixed, others -sK, each
    injected with its own seed); claims group a configuration's seeds, seed 0 first."""
    from groklab.reproduce.studies import fact_injection as fi

    specs = fi.runs("tiny", 2)
    names = [s.name for s in specs]
    assert names == ["base", "lora-r2", "mora-r2", "lora-r2-s1", "mora-r2-s1"]
    assert [s.execute.args[0]["seed"] for s in specs[1:]] == [0, 0, 1, 1]
    assert [fi._config(n) for n in names] == ["base", "lora-r2", "mora-r2", "lora-r2", "mora-r2"]
    assert fi._config("mora6-r32") == "mora6-r32" and fi._config("last-s3") == "last"
