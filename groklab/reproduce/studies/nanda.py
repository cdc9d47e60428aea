"""Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability":
(a + b) mod 113 on a one-layer transformer; the Fourier algorithm, its few key frequencies,
restricted loss falling before test loss, and the three phases."""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, RunSpec, Runs, Study
from groklab.reproduce.studies._modular import TINY_MODULAR, fourier, memorize_then_generalize

STEPS = {"cpu": 8000, "gpu": 25000}


def runs(scale: str, seeds: int) -> list[RunSpec]:
    sets = TINY_MODULAR if scale == "tiny" else (f"train.steps={STEPS[scale]}",)
    return [RunSpec("nanda", "modular-nanda", sets, (("fourier", {"checkpoints": "all"}),),
                    label="modular-nanda")]


def _freqs(r: Runs) -> Measured:
    f = fourier(r, "nanda")
    k, acc = f["key_freqs"], f["final"]["test_acc"]
    return Measured(f"{len(k)} key frequencies {k} at test accuracy {acc:.3f}",
                    len(k) <= 8 and acc >= 0.99, {"key_freqs": k, "test_acc": acc})


def _restricted(r: Runs) -> Measured:
    f = fourier(r, "nanda")
    a, b = f.get("step_restricted_drop"), f.get("step_test_drop")
    return Measured(f"below 0.1 ln p: restricted loss at step {a}, test loss at {b}",
                    f.get("restricted_falls_first"), {"restricted": a, "test": b})


def _phases(r: Runs) -> Measured:
    f = fourier(r, "nanda")
    m, c, g = f.get("step_memorized"), f.get("step_cleanup"), f.get("step_generalized")
    holds = None not in (m, c, g) and m < c <= g
    return Measured(f"memorized {m}, circuit formation from {m} to {c}, cleanup ends with test "
                    f"0.99 at {g}", holds, {"memorized": m, "cleanup": c, "generalized": g})


STUDY = Study(
    name="nanda",
    title="Nanda et al. 2023: progress measures for grokking modular addition",
    description="modular-nanda trained past grokking, with the Fourier analysis over every "
                "checkpoint.",
    minutes={"cpu": 7, "gpu": 10},
    runs=runs,
    claims=(
        Claim("memorizes first (train 0.99 with test < 0.9), then groks (test 0.99)",
              "memorized ~140 epochs, test ~100% after ~10k", "Nanda et al. 2023, Fig. 1",
              lambda r: memorize_then_generalize(r, "nanda")),
        Claim("the grokked model uses at most 8 key frequencies", "5 key frequencies",
              "Nanda et al. 2023, section 4", _freqs),
        Claim("restricted loss falls before test loss", "restricted loss drops first",
              "Nanda et al. 2023, section 5.1, Fig. 7", _restricted),
        Claim("three phases: memorization, circuit formation, cleanup (in that order)",
              "memorization ~1.4k, formation ~1.4k-9.4k, cleanup ~9.4k-13.3k epochs",
              "Nanda et al. 2023, section 5.2", _phases),
    ),
)
