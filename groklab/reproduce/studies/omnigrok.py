"""Omnigrok (Liu, Michaud & Tegmark, arXiv 2210.01117) on MNIST-1D: a large initialization
(alpha 8) makes an MLP memorize first and generalize much later as weight decay shrinks the
weights; alpha 1 generalizes without the delay, and so does a run whose weight norm is held at
its initial (alpha 1) value; held at the alpha-8 norm, it never generalizes.

"Generalized" is read against the alpha-1 run: the first evaluation where test accuracy comes
within 5 points of the alpha-1 run's final test accuracy (an MLP on 1,000 MNIST-1D rows tops
out near 45-50%, far below MNIST's 95%, so a fixed threshold would not transfer). Memorized:
train accuracy >= 0.99. The delay is generalized / memorized steps.
"""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, Runs, RunSpec, Study, fmt_step
from groklab.reproduce.studies._scale import TINY_TRAIN

SOURCE = "Liu et al. 2022 (Omnigrok, arXiv 2210.01117), MNIST section and abstract"
MEMORIZED, MARGIN, FACTOR = 0.99, 0.05, 3.0
TINY = ("task.num_samples=300", "task.n_train=100", "model.d_mlp=16", "train.batch_size=50",
        "train.train_probe_size=100", *TINY_TRAIN)
SHORT = ("train.steps=10000",)  # the runs without a delay settle within 10k steps
FIXED = ("train.fixed_weight_norm=true", "train.weight_decay=0")


def runs(scale: str, seeds: int) -> list[RunSpec]:
    tiny = TINY if scale == "tiny" else ()
    short = () if scale == "tiny" else SHORT
    out = []
    for s in range(seeds):
        seed = (f"train.seed={s}",)
        out += [
            RunSpec(f"alpha8-s{s}", "omnigrok-mnist1d", (*tiny, *seed),
                    label=f"alpha 8, wd 0.1, seed {s}"),
            RunSpec(f"alpha1-s{s}", "omnigrok-mnist1d",
                    (*tiny, *short, "model.init_scale=1", *seed), label=f"alpha 1, seed {s}"),
            RunSpec(f"fixed1-s{s}", "omnigrok-mnist1d",
                    (*tiny, *short, "model.init_scale=1", *FIXED, *seed),
                    label=f"norm fixed at alpha 1, seed {s}"),
            RunSpec(f"fixed8-s{s}", "omnigrok-mnist1d", (*tiny, *short, *FIXED, *seed),
                    label=f"norm fixed at alpha 8, seed {s}"),
        ]
    return out


def level(r: Runs, name: str) -> float:
    """The test accuracy that counts as generalized: the same seed's alpha-1 run's final test
    accuracy, less 5 points."""
    return r.final(f"alpha1-{name.split('-', 1)[1]}", "acc/test") - MARGIN


def delay(r: Runs, name: str) -> dict:
    """Steps to memorize and to generalize, test accuracy when memorized, their ratio."""
    lvl = level(r, name)
    m = r.first_step(name, "acc/train", MEMORIZED)
    g = r.first_step(name, "acc/test", lvl)
    return {"memorized": m, "generalized": g, "level": lvl,
            "test_at_memorized": r.at(name, "acc/test", m) if m is not None else None,
            "ratio": g / max(m, 1) if m is not None and g is not None else None,
            "last": r.metric(name, "acc/test")[0][-1]}


def _text(r: Runs, name: str, d: dict) -> str:
    cap = d["last"]
    text = f"{r.specs[name].shown}: train {MEMORIZED} at {fmt_step(d['memorized'], cap)}"
    if d["test_at_memorized"] is not None:
        text += f" (test {d['test_at_memorized']:.2f} then)"
    text += f", test {d['level']:.2f} at {fmt_step(d['generalized'], cap)}"
    return text + (f" = {d['ratio']:.1f}x" if d["ratio"] is not None else "")


def grokked(r: Runs, prefix: str) -> Measured:
    """Memorized while test was below half the level, generalized >= 3x later."""
    names = r.names(prefix)
    ds = {n: delay(r, n) for n in names}
    ok = all(d["ratio"] is not None and d["ratio"] >= FACTOR
             and d["test_at_memorized"] < d["level"] / 2 for d in ds.values())
    return Measured("; ".join(_text(r, n, d) for n, d in ds.items()), ok, ds)


def no_delay(r: Runs, prefix: str) -> Measured:
    """Generalized by twice the memorization step (or before it)."""
    names = r.names(prefix)
    ds = {n: delay(r, n) for n in names}
    ok = all(d["generalized"] is not None and d["memorized"] is not None
             and d["generalized"] <= 2 * max(d["memorized"], 1) for d in ds.values())
    return Measured("; ".join(_text(r, n, d) for n, d in ds.items()), ok, ds)


def never(r: Runs, prefix: str) -> Measured:
    """Memorizes, and the best test accuracy stays below the level."""
    names = r.names(prefix)
    ds = {n: delay(r, n) | {"best_test": r.best(n, "acc/test")} for n in names}
    ok = all(d["memorized"] is not None and d["generalized"] is None for d in ds.values())
    return Measured("; ".join(f"{r.specs[n].shown}: train {MEMORIZED} at "
                              f"{fmt_step(d['memorized'], d['last'])}, best test "
                              f"{d['best_test']:.2f} (level {d['level']:.2f})"
                              for n, d in ds.items()), ok, ds)


STUDY = Study(
    name="omnigrok",
    title="Omnigrok on MNIST-1D: a large initialization delays generalization",
    description="An MLP (depth 3, width 200) on 1,000 MNIST-1D rows with MSE on one-hot "
                "targets: alpha 8 with weight decay, alpha 1, and the weight norm held at its "
                "initial value at alpha 1 and at alpha 8.",
    minutes={"cpu": 4, "gpu": 4},
    runs=runs,
    claims=(
        Claim("alpha 8: train accuracy saturates while test stays low, and test reaches the "
              "alpha-1 level >= 3x later", "train fits early, test rises much later (MNIST: "
              "95% at ~44k steps)", SOURCE, lambda r: grokked(r, "alpha8-")),
        Claim("alpha 1 generalizes without the delay (by 2x the memorization step)",
              "no grokking at the standard initialization", SOURCE,
              lambda r: no_delay(r, "alpha1-")),
        Claim("with the weight norm held at its alpha-1 value, no delay either",
              "constraining the weight norm removes grokking", SOURCE,
              lambda r: no_delay(r, "fixed1-")),
        Claim("with the weight norm held at its alpha-8 value, the MLP memorizes and never "
              "generalizes", "large weight norm: memorization (the landscape's overfitting "
              "phase)", SOURCE, lambda r: never(r, "fixed8-")),
    ),
)
