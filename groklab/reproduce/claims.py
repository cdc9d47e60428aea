"""Predicates that several studies share: a grokking delay, an ordering over a sweep, a final
accuracy against a published one. Each returns a :class:`Measured` whose text shows the numbers
the verdict rests on."""

from __future__ import annotations

from groklab.reproduce.base import Measured, Runs, fmt_step, median

GEN = 0.95  # "generalized": the first evaluation at >= 0.95 (a threshold, not an interpolation)


def delay(runs: Runs, names: list[str], mem_key: str, gen_key: str, *, mem: float = 0.99,
          gen: float = GEN, before: float = 0.5, factor: float = 3.0) -> Measured:
    """Memorize, then generalize: in every run ``mem_key`` reaches ``mem`` while ``gen_key`` is
    below ``before``, and ``gen_key`` reaches ``gen`` at >= ``factor`` x that step."""
    parts, detail, ok = [], {}, True
    for n in names:
        m = runs.first_step(n, mem_key, mem)
        g = runs.first_step(n, gen_key, gen)
        at_mem = runs.at(n, gen_key, m) if m is not None else None
        r = g / m if (m and g) else None
        cap = runs.metric(n, gen_key)[0][-1]
        detail[n] = {"memorized": m, "generalized": g, "gen_at_memorized": at_mem, "delay": r}
        holds = m is not None and g is not None and at_mem < before and r >= factor
        ok &= holds
        split = gen_key.split("/")[1]
        parts.append(f"{runs.specs[n].shown}: "
                     + (f"memorized at {m:,} ({split} {at_mem:.2f} then)" if m is not None
                        else f"not memorized by {cap:,}")
                     + (f", {split} {gen} at {g:,}" if g is not None
                        else f", {split} {gen} not reached by {cap:,}")
                     + (f" = {r:.1f}x" if r else ""))
    return Measured("; ".join(parts), ok, detail)


def steps_to(runs: Runs, name: str, key: str, threshold: float) -> tuple[int | None, int]:
    """(first step at threshold or None, the run's last evaluated step)."""
    return runs.first_step(name, key, threshold), runs.metric(name, key)[0][-1]


def sooner_along(runs: Runs, names: list[str], values: list[float], key: str,
                 threshold: float = GEN) -> Measured:
    """Steps to ``threshold`` fall as the swept value rises (a run that never gets there counts
    as later than any that does)."""
    got = [steps_to(runs, n, key, threshold) for n in names]
    order = [s if s is not None else cap * 10 for s, cap in got]
    holds = all(a > b for a, b in zip(order, order[1:]))
    text = ", ".join(f"{v:g}: {fmt_step(s, cap)}" for v, (s, cap) in zip(values, got))
    return Measured(f"steps to {key.split('/')[1]} {threshold}: {text}", holds,
                    {"values": values, "steps": [s for s, _ in got]})


def final_at_least(runs: Runs, names: list[str], key: str, threshold: float,
                   use_best: bool = False) -> Measured:
    vals = [runs.best(n, key) if use_best else runs.final(n, key) for n in names]
    shown = ", ".join(f"{v:.3f}" for v in vals)
    what = "best" if use_best else "final"
    return Measured(f"{what} {key.split('/')[1]} {shown}" + (f" (median {median(vals):.3f})"
                                                             if len(vals) > 1 else ""),
                    all(v >= threshold for v in vals), {"values": vals})


def at_most(runs: Runs, names: list[str], key: str, threshold: float) -> Measured:
    vals = [runs.best(n, key) for n in names]
    return Measured(f"best {key.split('/')[1]} over training " + ", ".join(f"{v:.3f}" for v in vals),
                    all(v <= threshold for v in vals), {"values": vals})
