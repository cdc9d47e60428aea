"""Lee et al. 2024, "Grokfast": a moving-average (MA) filter that amplifies the slow gradient
component accelerates grokking; published about 50x fewer steps on modular multiplication.
Measured on the canonical slow recipe it was published against (modular-nanda: AdamW lr 1e-3,
wd 1), with and without the MA filter (window 100, lambda 5)."""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, RunSpec, Runs, Study, fmt_step
from groklab.reproduce.studies._modular import TINY_MODULAR

STEPS = {"cpu": 8000, "gpu": 25000}


def runs(scale: str, seeds: int) -> list[RunSpec]:
    base = TINY_MODULAR if scale == "tiny" else (f"train.steps={STEPS[scale]}",
                                                 "train.checkpoint_every=1000")
    return [RunSpec("canonical", "modular-nanda", base, label="AdamW (canonical)"),
            RunSpec("grokfast-ma", "modular-nanda", (*base, "train.grokfast=ma"),
                    label="AdamW + Grokfast MA")]


def _faster(r: Runs) -> Measured:
    a = r.first_step("canonical", "acc/test", 0.99)
    b = r.first_step("grokfast-ma", "acc/test", 0.99)
    cap = r.metric("canonical", "acc/test")[0][-1]
    if b is None:
        return Measured(f"canonical {fmt_step(a, cap)}, Grokfast MA {fmt_step(b, cap)}", False)
    factor = (a or cap) / b
    bound = "" if a is not None else ">= "
    return Measured(f"steps to test 0.99: canonical {fmt_step(a, cap)}, Grokfast MA {b:,}: "
                    f"{bound}{factor:.1f}x fewer", factor > 1.0,
                    {"canonical": a, "grokfast": b, "factor": factor, "lower_bound": a is None})


STUDY = Study(
    name="grokfast",
    title="Grokfast 2024: amplifying slow gradients accelerates grokking",
    description="modular-nanda with and without the Grokfast MA filter, steps to test 0.99.",
    minutes={"cpu": 12, "gpu": 10},
    runs=runs,
    claims=(
        Claim("the MA filter reaches test accuracy 0.99 in fewer steps (factor measured)",
              "~50x fewer steps (modular multiplication)", "Lee et al. 2024, Fig. 2", _faster),
    ),
)
