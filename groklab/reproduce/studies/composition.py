"""Wang et al. 2024, "Grokked Transformers are Implicit Reasoners", section 3: composition.

Claims: the model memorizes the training facts, then generalizes in distribution much later;
out of distribution it stays near zero; a larger phi (inferred / atomic facts) generalizes
sooner; a larger weight decay generalizes sooner; cross-layer parameter sharing (App. E.2)
helps OOD. Memorization is the paper's: accuracy on the trained inferred facts
(``train_inferred``) >= 0.99; the whole train split also holds the OOD atomic facts, which
weight decay keeps just below 0.99 (docs/anchors.md, "memorization").
"""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, Runs, RunSpec, Study
from groklab.reproduce.claims import GEN, at_most, delay, sooner_along
from groklab.reproduce.studies._scale import TINY_COMPOSITION, seeded

PHI_BASE = {"cpu": 9.0, "gpu": 7.2, "tiny": 2.0}  # the base preset's phi (the seed runs')
PHIS = {"cpu": (5.4, 7.2, 9.0), "gpu": (3.6, 5.4, 7.2), "tiny": (1.0, 1.5, 2.0)}
WDS = {"cpu": (0.5, 1.0), "gpu": (0.03, 0.1), "tiny": (0.1, 1.0)}  # the second is the base's
BASE = {"cpu": "composition-small", "gpu": "composition-paper", "tiny": "composition-small"}


def _tiny(scale: str) -> tuple[str, ...]:
    return TINY_COMPOSITION if scale == "tiny" else ()


def runs(scale: str, seeds: int) -> list[RunSpec]:
    base, t = BASE[scale], _tiny(scale)
    out = [RunSpec(f"seed{s}", base, (*t, *seeded(s)), label=f"seed {s}") for s in range(seeds)]
    phi_base = PHI_BASE[scale]
    out += [RunSpec(f"phi{p:g}", base, (*t, f"task.phi={p}"), label=f"phi {p:g}")
            for p in PHIS[scale] if p != phi_base]
    wd_base = WDS[scale][1]
    out += [RunSpec(f"wd{w:g}", base, (*t, f"train.weight_decay={w}"), label=f"wd {w:g}")
            for w in WDS[scale] if w != wd_base]
    shared = ("model.n_layers=1", "model.n_loops=2") if scale == "tiny" else ()
    out.append(RunSpec("shared", "composition-shared" if scale != "tiny" else base,
                       (*t, *shared), label="shared layers"))
    return out


def _seeds(r: Runs) -> list[str]:
    return r.names("seed")


def _phi_names(r: Runs) -> tuple[list[str], list[float]]:
    phi_base = PHI_BASE[r.scale]
    vals = list(PHIS[r.scale])
    return [("seed0" if p == phi_base else f"phi{p:g}") for p in vals], vals


def _wd_names(r: Runs) -> tuple[list[str], list[float]]:
    wd = [n for n in r.names("wd")]
    low = float(wd[0][2:])
    base = float(r["seed0"].config.train.weight_decay)
    return [wd[0], "seed0"], [low, base]


def _sharing(r: Runs) -> Measured:
    v, s = r.best("seed0", "acc/test_ood"), r.best("shared", "acc/test_ood")
    step = min(r.metric("seed0", "acc/test_ood")[0][-1], r.metric("shared", "acc/test_ood")[0][-1])
    v_at, s_at = r.at("seed0", "acc/test_ood", step), r.at("shared", "acc/test_ood", step)
    return Measured(f"test_ood at step {step:,}: shared {s_at:.3f}, vanilla {v_at:.3f} "
                    f"(best {s:.3f} vs {v:.3f})", s_at >= 0.1 and v_at <= 0.05,
                    {"step": step, "shared": s_at, "vanilla": v_at})


STUDY = Study(
    name="composition",
    title="Wang et al. 2024: grokked transformers compose (two-hop facts)",
    description="Memorize, then generalize in distribution; not out of distribution; phi and "
                "weight decay set the speed; parameter sharing and OOD.",
    minutes={"cpu": 30, "gpu": 120},
    runs=runs,
    claims=(
        Claim("trained facts memorized (train_inferred >= 0.99) while test_id < 0.5; test_id "
              f">= {GEN} at >= 3x that step, for every seed",
              "train > 99% at ~14k steps with ID <= 9.2%; ID ~100% ~50x later (phi 7.2)",
              "Wang et al. 2024, section 3.2, Fig. 1",
              lambda r: delay(r, _seeds(r), "acc/train_inferred", "acc/test_id")),
        Claim("OOD composition stays near zero (best test_ood <= 0.1 for every seed)",
              "OOD ~0 up to 2M steps", "Wang et al. 2024, section 3.2",
              lambda r: at_most(r, _seeds(r), "acc/test_ood", 0.1)),
        Claim("a larger phi generalizes sooner (steps to test_id 0.95 fall with phi)",
              "generalization speed tracks phi, not the graph's size",
              "Wang et al. 2024, section 3.2, Fig. 2",
              lambda r: sooner_along(r, *_phi_names(r), "acc/test_id")),
        Claim("a larger weight decay generalizes sooner", "larger weight decay, faster grokking",
              "Wang et al. 2024, App. E.1",
              lambda r: sooner_along(r, *_wd_names(r), "acc/test_id")),
        Claim("cross-layer parameter sharing gives OOD accuracy (>= 0.1) where the vanilla "
              "model stays near 0 (<= 0.05), at matched steps",
              "sharing improves OOD composition", "Wang et al. 2024, App. E.2",
              _sharing),
    ),
)
