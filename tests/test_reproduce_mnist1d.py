"""The mnist1d and omnigrok studies: their runs are valid configs at every scale, and their
claims decide on the numbers they are given (synthetic curves, no training)."""

from __future__ import annotations

import pytest

from groklab.config import load_config
from groklab.reproduce.base import RunSpec
from groklab.reproduce.studies import mnist1d, omnigrok


class FakeRuns:
    """The accessors claims use, over hand-written curves: name -> key -> [(step, value)]."""

    def __init__(self, curves: dict[str, dict[str, list[tuple[int, float]]]]):
        self.curves = curves
        self.specs = {n: RunSpec(n, "x") for n in curves}

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self.curves if n.startswith(prefix)]

    def metric(self, name, key):
        pts = self.curves[name][key]
        return [s for s, _ in pts], [v for _, v in pts]

    def first_step(self, name, key, threshold, below=False):
        return next((s for s, v in self.curves[name][key] if v >= threshold), None)

    def at(self, name, key, step):
        vals = [v for s, v in self.curves[name][key] if s <= step]
        return vals[-1]

    def final(self, name, key):
        return self.curves[name][key][-1][1]

    def best(self, name, key):
        return max(v for _, v in self.curves[name][key])


@pytest.mark.parametrize("study", [mnist1d.STUDY, omnigrok.STUDY])
@pytest.mark.parametrize("scale", ["tiny", "cpu"])
def test_every_run_is_a_valid_config(study, scale):
    specs = study.run_specs(scale, 2)
    for spec in specs:
        cfg = load_config(spec.preset, None, list(spec.sets))
        if scale == "tiny":
            assert cfg.train.steps <= 100 and cfg.task.num_samples <= 300


def _final(acc: float) -> dict:
    return {"acc/test": [(0, 0.1), (8000, acc)]}


def test_mnist1d_claims_hold_within_three_points_and_not_beyond():
    accs = {"logistic": (0.31, 0.33), "mlp": (0.66, 0.67), "cnn": (0.92, 0.58),
            "gru": (0.95, 0.55)}
    curves = {f"{m}{'-shuffled' if sh else ''}-s0": _final(accs[m][sh])
              for m in accs for sh in (0, 1)}
    verdicts = [c.check(FakeRuns(curves)).holds for c in mnist1d.STUDY.claims]
    assert verdicts[0] is True  # the CNN loses 34 points, the MLP 1
    # logistic, MLP, CNN hold; the GRU at 95% is 4 points off; shuffled all within 3
    assert verdicts[1:5] == [True, True, True, False] and verdicts[5:] == [True] * 4
    curves["mlp-shuffled-s0"] = _final(0.60)
    assert mnist1d.STUDY.claims[0].check(FakeRuns(curves)).holds is False


def _curve(train_at: int, test_at: int, test_low: float, test_high: float, last: int) -> dict:
    steps = list(range(0, last + 1, 500))
    return {"acc/train": [(s, 1.0 if s >= train_at else 0.5) for s in steps],
            "acc/test": [(s, test_high if s >= test_at else test_low) for s in steps]}


def test_omnigrok_claims_read_the_delay_against_the_alpha1_level():
    curves = {"alpha8-s0": _curve(6000, 26000, 0.15, 0.44, 40000),
              "alpha1-s0": _curve(500, 500, 0.2, 0.47, 10000),
              "fixed1-s0": _curve(500, 1000, 0.3, 0.49, 10000),
              "fixed8-s0": _curve(6000, 10 ** 9, 0.12, 0.12, 10000)}
    verdicts = [c.check(FakeRuns(curves)).holds for c in omnigrok.STUDY.claims]
    assert verdicts == [True, True, True, True]
    curves["alpha8-s0"] = _curve(6000, 12000, 0.15, 0.44, 40000)  # only 2x later: no grokking
    curves["fixed1-s0"] = _curve(500, 5000, 0.3, 0.49, 10000)  # 10x later: a delay
    curves["fixed8-s0"] = _curve(6000, 8000, 0.12, 0.45, 10000)  # reaches the level
    verdicts = [c.check(FakeRuns(curves)).holds for c in omnigrok.STUDY.claims]
    assert verdicts == [False, True, False, False]
