"""``groklab demo``: grokking seen with one's own eyes, and the circuit that formed, on a laptop.

Two runs. Modular addition (the Nanda one-layer transformer at a weight decay that makes it
grok within the budget) shows the phenomenon unmistakably: training accuracy reaches 0.99 while
test accuracy is far below 0.5, and test accuracy reaches 0.95 many times later; its Fourier
circuit is read off the weights. Two-hop composition (Wang et al. 2024) shows the implicit
reasoning circuit: the bridge entity decoded at r1 in a middle layer and the causal links that
grow, read at the memorization-regime and final checkpoints. At this scale composition learns
its facts and the rule nearly together (docs/tasks.md section 1.6 has the sweep); the table
measures its delay against the same criterion and says whether it holds.

``groklab reproduce demo --seeds 3`` checks the criteria over seeds 0-2.
"""

from __future__ import annotations

from groklab.reproduce.base import Claim, Measured, Runs, RunSpec, Study
from groklab.reproduce.claims import at_most, delay
from groklab.reproduce.studies._modular import TINY_MODULAR, fourier
from groklab.reproduce.studies._scale import TINY_COMPOSITION, seeded

MODULAR, COMPOSITION = "modular-demo", "composition-fast"
CIRCUIT = (("logit_lens", {"checkpoints": "early,last"}),
           ("causal_tracing", {"checkpoints": "early,last"}), ("circuit", {}))


def runs(scale: str, seeds: int) -> list[RunSpec]:
    tiny = scale == "tiny"
    out = []
    for s in range(seeds):
        out.append(RunSpec(f"modular-s{s}", MODULAR, (*(TINY_MODULAR if tiny else ()), *seeded(s)),
                           (("fourier", {"checkpoints": "all"}),), label=f"modular, seed {s}"))
        out.append(RunSpec(f"composition-s{s}", COMPOSITION,
                           (*(TINY_COMPOSITION if tiny else ()), *seeded(s)), CIRCUIT,
                           label=f"composition, seed {s}"))
    return out


def _circuit(r: Runs) -> Measured:
    import json

    s = json.loads(r.analysis("composition-s0", "circuit_summary.json").read_text())
    lens = s["logit_lens"]["train_inferred.bridge"]
    layers = lens["carried_at_layers_final"]
    link = s.get("bridge_link") or {}
    return Measured(f"bridge MRR at r1 by layer {lens['mrr_final_by_layer']}; carried at "
                    f"{layers or 'no'} middle layer(s); causal strength of S[{s.get('bridge_layer')},"
                    f" r1] {link.get('strength_early')} -> {link.get('strength_final')}",
                    bool(layers), {"lens": lens, "link": link})


def _fourier(r: Runs) -> Measured:
    f = fourier(r, "modular-s0")
    k = f["key_freqs"]
    return Measured(f"{len(k)} key frequencies {k}; test accuracy {f['final']['test_acc']:.3f}",
                    len(k) <= 8 and f["final"]["test_acc"] >= 0.95, {"key_freqs": k})


STUDY = Study(
    name="demo",
    title="groklab demo: modular addition groks; composition forms its circuit",
    description="The runs of `groklab demo`, with its criteria as claims (seeds via --seeds).",
    minutes={"cpu": 5, "gpu": 3},
    runs=runs,
    claims=(
        Claim("modular: train >= 0.99 while test < 0.5, then test >= 0.95 at >= 3x that step",
              "memorization ~140 steps, test ~100% after ~10k (40x at lr 1e-3, wd 1)",
              "Nanda et al. 2023, Fig. 1; Power et al. 2022",
              lambda r: delay(r, r.names("modular-"), "acc/train", "acc/test")),
        Claim("modular: the grokked model uses at most 8 key Fourier frequencies",
              "5 key frequencies", "Nanda et al. 2023, section 4", _fourier),
        Claim("composition: train_inferred >= 0.99 while test_id < 0.5, then test_id >= 0.95 at "
              ">= 3x that step", "ID ~100% ~50x after train saturates (paper scale)",
              "Wang et al. 2024, section 3.2",
              lambda r: delay(r, r.names("composition-"), "acc/train_inferred", "acc/test_id")),
        Claim("composition: test_ood stays <= 0.1", "OOD ~0 up to 2M steps",
              "Wang et al. 2024, section 3.2",
              lambda r: at_most(r, r.names("composition-"), "acc/test_ood", 0.1)),
        Claim("composition: the bridge entity is decodable at r1 in a middle layer",
              "b at S[5, r1] (8 layers)", "Wang et al. 2024, section 3.3", _circuit),
    ),
)
