"""Wang et al. 2024, section 4: comparison of attribute values, which groks out of distribution.

At CPU scale ``comparison-small`` (200 entities, 10 attributes, phi 7.2) is the setting; the
paper's claim is that the grokked model compares OOD entities almost perfectly, unlike
composition.
"""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, RunSpec, Runs, Study
from groklab.reproduce.claims import final_at_least
from groklab.reproduce.studies._scale import TINY_TRAIN, seeded

TINY = ("task.entities=30", "task.attributes=3", "task.values=6", "task.phi=3.0",
        "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "train.batch_size=128",
        *TINY_TRAIN)
BASE = {"cpu": "comparison-small", "gpu": "comparison-paper", "tiny": "comparison-small"}


def runs(scale: str, seeds: int) -> list[RunSpec]:
    t = TINY if scale == "tiny" else ()
    return [RunSpec(f"seed{s}", BASE[scale], (*t, *seeded(s)), label=f"seed {s}")
            for s in range(seeds)]


def _minutes(r: Runs) -> Measured:
    secs = [float(r[n].summary.get("wall_time_s") or r[n].metrics[-1]["time"])
            for n in r.names("seed")]
    return Measured(", ".join(f"{s / 60:.1f} min" for s in secs), all(s <= 600 for s in secs),
                    {"seconds": secs})


STUDY = Study(
    name="comparison",
    title="Wang et al. 2024: grokked transformers compare, in and out of distribution",
    description="comparison-small trained to the end: ID and OOD accuracy, and its time.",
    minutes={"cpu": 9, "gpu": 60},
    runs=runs,
    claims=(
        Claim("OOD comparisons reach >= 0.9 (test_ood, final, every seed)",
              "near-perfect OOD after grokking", "Wang et al. 2024, section 4, Fig. 5",
              lambda r: final_at_least(r, r.names("seed"), "acc/test_ood", 0.9)),
        Claim("ID comparisons reach >= 0.9 (test_id, final, every seed)",
              "near-perfect ID after grokking", "Wang et al. 2024, section 4, Fig. 5",
              lambda r: final_at_least(r, r.names("seed"), "acc/test_id", 0.9)),
        Claim("a run trains in at most 10 minutes (this machine)", "(groklab's target, 2 cores)",
              "groklab issue: comparison-small at most 10 minutes on 2 CPU cores", _minutes),
    ),
)
