"""MNIST-1D (Greydanus & Kobak, arXiv 2011.14439): logistic regression, an MLP, a CNN and a GRU
separate clearly on 4,000 + 1,000 sequences of 40 floats, and shuffling the positions hurts
the models with a spatial bias (CNN, GRU) while the others do not notice."""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, Runs, RunSpec, Study, median
from groklab.reproduce.studies._scale import TINY_TRAIN

SOURCE = "Greydanus & Kobak 2024 (arXiv 2011.14439), README table"
# published test accuracy: (plain, shuffled positions)
PUBLISHED = {"logistic": (0.32, 0.32), "mlp": (0.68, 0.68), "cnn": (0.94, 0.56),
             "gru": (0.91, 0.57)}
SHOWN = {"logistic": "logistic regression", "mlp": "MLP", "cnn": "CNN", "gru": "GRU"}
TOLERANCE = 0.03  # "within 3 points" of the published figure
TINY = ("task.num_samples=300", "train.batch_size=50", "train.train_probe_size=240",
        *TINY_TRAIN)


def _name(model: str, shuffled: bool, seed: int) -> str:
    return f"{model}{'-shuffled' if shuffled else ''}-s{seed}"


def runs(scale: str, seeds: int) -> list[RunSpec]:
    out = []
    for model in PUBLISHED:
        for shuffled in (False, True):
            for s in range(seeds):
                sets = (*(TINY if scale == "tiny" else ()), f"train.seed={s}",
                        *(("task.shuffle_seq=true",) if shuffled else ()))
                label = f"{SHOWN[model]}{', shuffled' if shuffled else ''}, seed {s}"
                out.append(RunSpec(_name(model, shuffled, s), f"mnist1d-{model}", sets,
                                   label=label))
    return out


def _names(r: Runs, model: str, shuffled: bool) -> list[str]:
    group = f"{model}{'-shuffled' if shuffled else ''}"  # "cnn-s0" and "cnn-shuffled-s0" differ
    return [n for n in r.names() if n.rsplit("-s", 1)[0] == group]


def _test_acc(r: Runs, model: str, shuffled: bool) -> tuple[float, list[float]]:
    vals = [r.final(n, "acc/test") for n in _names(r, model, shuffled)]
    return median(vals), vals


def within(r: Runs, model: str, shuffled: bool) -> Measured:
    """The median final test accuracy over seeds within 3 points of the published one."""
    published = PUBLISHED[model][shuffled]
    mid, vals = _test_acc(r, model, shuffled)
    spread = f" (seeds: {', '.join(f'{100 * v:.1f}' for v in vals)})" if len(vals) > 1 else ""
    gap = 100 * (mid - published)
    return Measured(f"{100 * mid:.1f}%{spread}, {gap:+.1f} points", abs(gap) <= 100 * TOLERANCE,
                    {"median": mid, "values": vals, "published": published})


def shuffle_effect(r: Runs) -> Measured:
    """Shuffling costs the CNN at least 20 points and the MLP at most 3 (published: 38 and 0)."""
    drop = {m: _test_acc(r, m, False)[0] - _test_acc(r, m, True)[0] for m in ("mlp", "cnn")}
    holds = drop["cnn"] >= 0.20 and abs(drop["mlp"]) <= TOLERANCE
    return Measured(f"CNN {100 * drop['cnn']:+.1f} points lost, MLP {100 * drop['mlp']:+.1f}",
                    holds, {"drop": drop})


def _claim(model: str, shuffled: bool) -> Claim:
    where = " with shuffled positions" if shuffled else ""
    pub = PUBLISHED[model][shuffled]
    return Claim(f"{SHOWN[model]}{where} reaches {100 * pub:.0f}% test accuracy (within 3 points)",
                 f"{100 * pub:.0f}%", SOURCE, lambda r: within(r, model, shuffled))


STUDY = Study(
    name="mnist1d",
    title="MNIST-1D: four models separate on a laptop-sized dataset",
    description="Logistic regression, MLP, CNN and GRU on MNIST-1D (generated offline, seed 42, "
                "4,000 + 1,000 rows), each also on shuffled positions; the paper's recipe (Adam "
                "lr 1e-2, batch 100, 8,000 steps). Measured: final test accuracy, median over "
                "seeds.",
    minutes={"cpu": 10, "gpu": 10},
    runs=runs,
    claims=(Claim("shuffling positions hurts the CNN (a spatial bias) but not the MLP",
                  "CNN 94% -> 56%, MLP 68% -> 68%", SOURCE, shuffle_effect),
            *(_claim(m, False) for m in PUBLISHED), *(_claim(m, True) for m in PUBLISHED)),
)
