"""The PAIR explorable "Do Machine Learning Models Memorize or Generalize?" (2023): a one-layer
MLP groks modular addition with a periodic (Fourier-sparse) embedding; a small MLP on sparse
parity memorizes, then generalizes."""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, RunSpec, Runs, Study
from groklab.reproduce.studies._modular import fourier, memorize_then_generalize
from groklab.reproduce.studies._scale import TINY_TRAIN

TINY_MLP = ("task.p=23", "model.d_embed=64", "model.d_mlp=16", "model.d_vocab_out=23",
            "train.train_probe_size=276", *TINY_TRAIN)
TINY_PARITY = ("task.n_bits=10", "task.k=2", "task.n_train=200", "task.n_test=200",
               "model.d_mlp=16", "train.train_probe_size=200", *TINY_TRAIN)


def runs(scale: str, seeds: int) -> list[RunSpec]:
    tiny = scale == "tiny"
    out = []
    for s in range(seeds):
        seed = (f"task.seed={s}", f"train.seed={s}")
        out += [RunSpec(f"mlp-s{s}", "modular-mlp", (*(TINY_MLP if tiny else ()), *seed),
                        (("fourier", {"checkpoints": "all"}),) if s == 0 else (),
                        label=f"modular MLP, seed {s}"),
                RunSpec(f"parity-s{s}", "parity", (*(TINY_PARITY if tiny else ()), *seed),
                        label=f"sparse parity, seed {s}")]
    return out


def _each(r: Runs, prefix: str) -> Measured:
    parts = [memorize_then_generalize(r, n) for n in r.names(prefix)]
    return Measured("; ".join(f"{r.specs[n].shown}: {m.value}" for n, m in
                              zip(r.names(prefix), parts)),
                    all(m.holds for m in parts), {n: m.detail for n, m in
                                                  zip(r.names(prefix), parts)})


def _sparse(r: Runs) -> Measured:
    f = fourier(r, "mlp-s0")
    fin = f["final"]
    holds = fin["test_acc"] >= 0.99 and len(f["key_freqs"]) <= 8
    return Measured(f"test {fin['test_acc']:.3f}; {len(f['key_freqs'])} key frequencies "
                    f"{f['key_freqs']}; 90% of W_E's norm in {fin['embed_n_freq_90']} of "
                    f"{f['p'] // 2} frequencies (Gini {fin['gini_embed']:.2f})", holds, fin)


STUDY = Study(
    name="pair",
    title="PAIR 2023: do machine learning models memorize or generalize?",
    description="The explorable's one-layer MLP on (a + b) mod 67 and its sparse-parity MLP.",
    minutes={"cpu": 4, "gpu": 4},
    runs=runs,
    claims=(
        Claim("the one-layer MLP memorizes modular addition, then generalizes (test 0.99 later)",
              "train 100% early, test jumps later", "PAIR explorable, 2023",
              lambda r: _each(r, "mlp-")),
        Claim("its embedding becomes periodic: at most 8 key frequencies after grokking",
              "a handful of frequencies (5 in the explorable's figure)", "PAIR explorable, 2023",
              _sparse),
        Claim("sparse parity: memorizes, then generalizes", "test accuracy rises after train's",
              "PAIR explorable, 2023; Barak et al. 2022", lambda r: _each(r, "parity-")),
    ),
)
