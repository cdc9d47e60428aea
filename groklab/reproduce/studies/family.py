"""Nezhurina et al. 2024 ("Alice in Wonderland") as a training task: can a small transformer
learn kinship counting, generalize to unseen (N, M), and to a question type it never saw?

``family-small``: the six AIW question types over 0-9 brothers and sisters; 20% of the (N, M)
pairs and the AIW question itself (brother.sisters) held out.
"""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, Runs, RunSpec, Study
from groklab.reproduce.claims import GEN, delay, final_at_least, steps_to
from groklab.reproduce.studies._scale import TINY_TRAIN, seeded

TINY = ("task.n_max=4", "task.m_max=4", "task.cousins_max=1", "model.n_layers=1",
        "model.d_model=32", "model.n_heads=2", "train.batch_size=128", *TINY_TRAIN)


def runs(scale: str, seeds: int) -> list[RunSpec]:
    t = TINY if scale == "tiny" else ()
    return [RunSpec(f"seed{s}", "family-small", (*t, *seeded(s)), label=f"seed {s}")
            for s in range(seeds)]


def _steps(r: Runs) -> Measured:
    got = [steps_to(r, n, "acc/test_pairs", GEN) for n in r.names("seed")]
    text = ", ".join(f"{s:,}" if s is not None else f"not by {cap:,}" for s, cap in got)
    return Measured(f"steps to test_pairs {GEN}: {text}", all(s is not None for s, _ in got),
                    {"steps": [s for s, _ in got]})


STUDY = Study(
    name="family",
    title="Alice in Wonderland: a small transformer counts siblings, and where it stops",
    description="family-small trained to the end: held-out (N, M) pairs, the held-out AIW "
                "question type, and whether generalization comes after memorization.",
    minutes={"cpu": 2, "gpu": 1},
    runs=runs,
    claims=(
        Claim("held-out (N, M) pairs reach 0.95 (test_pairs, every seed)",
              "LLMs fail the AIW question (most below 0.5)", "Nezhurina et al. 2024",
              _steps),
        Claim("the held-out question type (brother.sisters, the AIW question) is answered "
              "(test_types >= 0.95, final)", "(no published number: groklab's question)",
              "groklab issue 19", lambda r: final_at_least(r, r.names("seed"),
                                                            "acc/test_types", 0.95)),
        Claim("generalization to held-out pairs comes >= 3x after memorization (grokking)",
              "(no published number: groklab's question)", "groklab issue 19",
              lambda r: delay(r, r.names("seed"), "acc/train", "acc/test_pairs")),
    ),
)
