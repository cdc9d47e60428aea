"""Power et al. 2022, "Grokking": x / y mod 97 at 50% training data groks, and the steps to
generalize grow as the training fraction falls (Fig. 1 right)."""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, RunSpec, Runs, Study
from groklab.reproduce.claims import sooner_along
from groklab.reproduce.studies._scale import TINY_TRAIN

FRACTIONS = {"cpu": (0.4, 0.5, 0.7), "gpu": (0.3, 0.4, 0.5, 0.7), "tiny": (0.5, 0.8)}
STEPS = {"cpu": 20000, "gpu": 100000}
TINY = ("task.p=23", "model.n_layers=1", "model.d_model=32", "model.d_mlp=64", "model.n_heads=2",
        "train.train_probe_size=506", *TINY_TRAIN)


def runs(scale: str, seeds: int) -> list[RunSpec]:
    base = TINY if scale == "tiny" else (f"train.steps={STEPS[scale]}",
                                         f"train.eval_every={STEPS[scale] // 100}")
    return [RunSpec(f"frac{f:g}", "modular-power", (*base, f"task.train_fraction={f}"),
                    label=f"{f:.0%} train") for f in FRACTIONS[scale]]


def _fractions(r: Runs) -> tuple[list[str], list[float]]:
    names = r.names("frac")
    return names, [float(n[4:]) for n in names]


def _groks(r: Runs) -> Measured:
    name = "frac0.5" if "frac0.5" in r.specs else r.names("frac")[0]
    m = r.first_step(name, "acc/train", 0.99)
    g = r.first_step(name, "acc/test", 0.99)
    cap = r.metric(name, "acc/test")[0][-1]
    return Measured(f"{r.specs[name].shown}: train 0.99 at {m}, test 0.99 at "
                    f"{g if g is not None else f'not by {cap:,}'}", g is not None and
                    (m is None or g > m), {"memorized": m, "generalized": g})


STUDY = Study(
    name="power",
    title="Power et al. 2022: grokking on x / y mod 97",
    description="modular-power at several training fractions, to test accuracy 0.99.",
    minutes={"cpu": 40, "gpu": 30},
    runs=runs,
    claims=(
        Claim("x / y mod 97 at 50% training data reaches test accuracy 0.99, after memorizing",
              "generalizes after ~10^4-10^5 steps", "Power et al. 2022, Fig. 1", _groks),
        Claim("steps to test 0.99 grow as the training fraction falls",
              "fewer data, longer to grok (Fig. 1 right)", "Power et al. 2022, Fig. 1",
              lambda r: sooner_along(r, *_fractions(r), "acc/test", 0.99)),
    ),
)
