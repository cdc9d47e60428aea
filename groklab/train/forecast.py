"""Will this run grok, and when? A forecast from the first part of its metrics rows.

Question: from the cheap signals logged at every evaluation (train accuracy, test loss and
accuracy, weight norm), predict early whether a split will reach a threshold accuracy within the
run's budget, and roughly at which step.

Method: once the training split is memorized, grokking shows first as a falling test loss: the
memorizing solution is being replaced while test accuracy may still sit near chance (Nanda et
al. 2023 see the same in their restricted loss; Notsawo et al. 2023, arXiv 2306.13253, read the
early loss curve too). The forecast fits ln(test loss) against the step over the rows of the last
``window`` fraction of the steps seen (after memorization); its fall rate r = -slope sets the
time scale, and the threshold is forecast at step T + ``k`` / r. A test loss that is not falling
means no grokking in sight. ``k`` is the one fitted constant: ``bench/forecast_validation.py``
fits it on half of a sweep and scores the call and the step error on the other half.

The call: "grokked" once the threshold is reached (the observed step), "grok" when the forecast
step is within the budget, "no_grok" otherwise, "wait" before there is enough to go on (fewer
than ``min_rows`` rows, not yet memorized, or fewer than 3 rows since memorization). The weight
norm and its trend (Omnigrok's signal, docs/methods.md section 7) are reported with the forecast;
on the validation sweep they predicted less well than the test loss, so the call does not use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ForecastRule:
    # forecast step = T + k / (fall rate of ln test loss per step); 0.7 is what each half of
    # the validation sweep chose when fitted on its own (bench/forecast_validation.py)
    k: float = 0.7
    window: float = 0.5  # fit over the last half of the steps seen
    min_rows: int = 5
    memorized: float = 0.99  # train accuracy that counts as memorized
    grid_k: tuple = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)  # searched by the bench


DEFAULT_RULE = ForecastRule()


@dataclass
class Forecast:
    call: str  # "grokked" | "grok" | "no_grok" | "wait"
    step: int | None  # forecast (or, when grokked, observed) step of reaching the threshold
    at_step: int  # last step the forecast has seen
    split: str
    threshold: float
    method: str  # "observed" | "test_loss" | "none"
    signals: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"call": self.call, "step": self.step, "at_step": self.at_step,
                "split": self.split, "threshold": self.threshold, "method": self.method,
                "signals": {k: (round(v, 6) if isinstance(v, float) else v)
                            for k, v in self.signals.items()}}

    def short(self) -> str:
        """For the progress bar: 'grokked 850', 'grok ~2.1k', 'no grok', 'forecast: wait'."""
        if self.call == "grokked":
            return f"grokked {_k(self.step)}"
        if self.call == "grok":
            return f"grok ~{_k(self.step)}"
        if self.call == "no_grok":
            return "no grok" + (f" (~{_k(self.step)})" if self.step else "")
        return "forecast: wait"


def _k(step: int | None) -> str:
    if step is None:
        return "?"
    return f"{step / 1000:.1f}k" if step >= 1000 else str(step)


def steps_to(rows: list[dict], split: str, threshold: float, metric: str = "acc") -> int | None:
    """First logged step where ``<metric>/<split>`` reaches ``threshold``."""
    for r in rows:
        if r.get(f"{metric}/{split}", -1.0) >= threshold:
            return int(r["step"])
    return None


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys on xs (None with fewer than 3 points or no spread)."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def forecast(rows: list[dict], split: str, threshold: float = 0.95, total: int | None = None,
             rule: ForecastRule = DEFAULT_RULE, metric: str = "acc") -> Forecast:
    """Forecast from ``metrics.jsonl`` rows (oldest first) for ``<metric>/<split>`` >= threshold
    (``acc``, or ``exact`` for answer spans); memorization is read from the same metric.

    ``total`` is the run's step budget (the call is about reaching the threshold within it);
    without it the horizon is open and the call is "grok" whenever the test loss is falling.
    """
    rows = [r for r in rows if f"{metric}/{split}" in r]
    at = int(rows[-1]["step"]) if rows else 0
    seen = steps_to(rows, split, threshold, metric)
    if seen is not None:
        return Forecast("grokked", seen, at, split, threshold, "observed")
    if len(rows) < rule.min_rows or at == 0:
        return Forecast("wait", None, at, split, threshold, "none")

    mem = steps_to(rows, "train", rule.memorized, metric)
    norms = [r["weight_norm"] for r in rows if r.get("weight_norm")]
    signals: dict = {metric: rows[-1][f"{metric}/{split}"], "memorized_at": mem,
                     "weight_norm": norms[-1] if norms else None,
                     "weight_norm_peak": max(norms) if norms else None}
    start = max((1 - rule.window) * at, mem if mem is not None else at)
    recent = [r for r in rows if r["step"] >= start and r.get(f"loss/{split}", 0) > 0]
    if mem is None or len(recent) < 3:
        return Forecast("wait", None, at, split, threshold, "none", signals)
    steps = [float(r["step"]) for r in recent]
    slope = _slope(steps, [math.log(r[f"loss/{split}"]) for r in recent])
    wslope = _slope(steps, [math.log(r["weight_norm"]) for r in recent if r.get("weight_norm")]
                    ) if all(r.get("weight_norm") for r in recent) else None
    signals.update(test_loss=recent[-1][f"loss/{split}"], test_loss_log_slope=slope,
                   weight_norm_log_slope=wslope)
    if slope is None or slope >= 0:  # the test loss is not falling: nothing points at grokking
        return Forecast("no_grok", None, at, split, threshold, "test_loss", signals)
    step = int(round(min(at + rule.k / -slope, 1e12)))
    call = "grok" if total is None or step <= total else "no_grok"
    return Forecast(call, step, at, split, threshold, "test_loss", signals)


def summary_forecast(rows: list[dict], split: str | None, total: int,
                     threshold: float = 0.95, early_fraction: float = 0.1,
                     metric: str = "acc") -> dict | None:
    """For ``summary.json``: the forecast from every row so far, plus the one the run made at
    ``early_fraction`` of its budget (the kind bench/forecast_validation.py scores), so a
    finished run shows both what was predicted early and what happened."""
    if not split or not rows:
        return None
    out = forecast(rows, split, threshold, total, metric=metric).to_dict()
    early_at = int(early_fraction * total)
    if rows[-1]["step"] >= early_at > 0:
        early = forecast([r for r in rows if r["step"] <= early_at], split, threshold, total,
                         metric=metric)
        out["early"] = {k: v for k, v in early.to_dict().items() if k != "signals"}
    return out
