"""The grokking forecast on synthetic curves with a known answer, and where a run shows it."""

import json
import math

import pytest

from groklab.train.forecast import (
    DEFAULT_RULE,
    Forecast,
    forecast,
    steps_to,
    summary_forecast,
)
from groklab.train.loop import Run
from groklab.train.progress import make_progress

STEPS = [0, 1, 2, 5, 10, 20, 50, 100, 150, 200, 250, 300, 350, 400]


def _rows(test_acc, test_loss=lambda t: 4.0, train_acc=lambda t: min(1.0, 0.01 + t / 100),
          norm=lambda t: 30.0):
    return [{"step": t, "weight_norm": norm(t), "acc/train": train_acc(t),
             "acc/test": test_acc(t), "loss/test": test_loss(t)} for t in STEPS]


def _falling(tau):
    """Test loss that rises while the model memorizes (to step 100), then falls as exp(-t/tau)."""
    return lambda t: 4.0 + t / 25 if t <= 100 else 8.0 * math.exp(-(t - 100) / tau)


def test_a_falling_test_loss_after_memorization_is_called_grok_at_t_plus_k_over_rate():
    # Test accuracy still at chance; the test loss falls at rate 1/500 per step since step 100.
    f = forecast(_rows(lambda t: 0.01, _falling(500)), "test", 0.95, total=3000)
    assert (f.call, f.method) == ("grok", "test_loss")
    assert f.signals["memorized_at"] == 100
    assert f.signals["test_loss_log_slope"] == pytest.approx(-1 / 500)
    assert f.step == pytest.approx(400 + DEFAULT_RULE.k * 500, abs=1)  # hand computation
    assert "grok ~" in f.short()


def test_a_rising_or_slowly_falling_test_loss_is_not_going_to_grok_in_budget():
    # Memorized, test loss still climbing (the memorizing solution growing): no grokking in sight.
    rising = forecast(_rows(lambda t: 0.01, lambda t: 4.0 + t / 25), "test", 0.95, total=3000)
    assert rising.call == "no_grok" and rising.step is None
    # Falling, but so slowly that the forecast lands past the budget; a longer budget holds it.
    slow = _rows(lambda t: 0.01, _falling(20000))
    f = forecast(slow, "test", 0.95, total=3000)
    assert f.call == "no_grok" and f.step > 3000
    assert forecast(slow, "test", 0.95, total=10 * f.step).call == "grok"


def test_observed_grokking_and_too_early():
    rows = _rows(lambda t: 0.99 if t >= 250 else 0.01)
    f = forecast(rows, "test", 0.95, total=3000)
    assert (f.call, f.step, f.method) == ("grokked", 250, "observed")
    assert steps_to(rows, "test", 0.95) == 250
    assert forecast(rows[:3], "test", 0.95, total=3000).call == "wait"
    # Not memorized yet: the test loss still falls with the training loss; too early to say.
    early = _rows(lambda t: 0.01, lambda t: 4.0 - t / 200, train_acc=lambda t: 0.2)
    assert forecast(early, "test", 0.95, total=3000).call == "wait"
    assert "grok" in Forecast("grok", 2100, 400, "test", 0.95, "accuracy").short()


def test_summary_keeps_the_early_forecast_next_to_the_current_one():
    rows = _rows(lambda t: 0.99 if t >= 350 else 0.01, _falling(300))
    s = summary_forecast(rows, "test", total=1000)
    assert s["call"] == "grokked" and s["step"] == 350
    assert s["early"]["at_step"] == 100 and s["early"]["call"] != "grokked"
    json.dumps(s)  # goes into summary.json as is


def test_a_run_writes_its_forecast_and_the_bar_shows_it(tiny_cfg, tmp_path):
    Run.start(tiny_cfg(steps=60), tmp_path / "r").train()
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["forecast"]["split"] == "test_id" and s["forecast"]["at_step"] == 60
    assert s["forecast"]["call"] in ("grokked", "grok", "no_grok", "wait")
    bar = make_progress(True, total=3000, start=0, id_split="test")
    with bar:
        for row in _rows(lambda t: 0.99 if t >= 250 else 0.01):
            bar.metrics(row)
    shown = bar.progress.tasks[0].fields["acc"]
    assert "grokked 250" in shown and "ID 0.990" in shown
