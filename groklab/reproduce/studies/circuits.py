"""Wang et al. 2024, section 3.3, section 4 and App. D: the circuits of the grokked models, read
with the logit lens and causal tracing over checkpoints (``groklab.analysis.circuit``).

Composition: the bridge entity sits at S[L, r1] in a middle layer, the causal link from there
to the prediction grows during grokking, and r2 is "delayed": its MRR at S[L, r2] grows.
Comparison: a parallel circuit with both values carried at S[L, e1] and S[L, e2].
"""

from __future__ import annotations

import json

from groklab.reproduce.base import Claim, Measured, RunSpec, Runs, Study
from groklab.reproduce.studies import comparison, composition
from groklab.reproduce.studies._scale import TINY_COMPOSITION



def analyses(n_examples: int = 300) -> tuple:
    return (("logit_lens", {"checkpoints": "all", "n_examples": n_examples}),
            ("causal_tracing", {"checkpoints": "all", "n_examples": n_examples}),
            ("circuit", {}))


def runs(scale: str, seeds: int) -> list[RunSpec]:
    tiny = scale == "tiny"
    a = analyses(32 if tiny else 300)
    return [RunSpec("composition", composition.BASE[scale], TINY_COMPOSITION if tiny else (), a),
            RunSpec("comparison", comparison.BASE[scale], comparison.TINY if tiny else (), a)]


def _summary(r: Runs, name: str) -> dict:
    return json.loads(r.analysis(name, "circuit_summary.json").read_text())


def _bridge(r: Runs) -> Measured:
    s = _summary(r, "composition")
    lens = s["logit_lens"]["train_inferred.bridge"]
    layers = lens["carried_at_layers_final"]
    return Measured(f"bridge MRR at r1 by layer {lens['mrr_final_by_layer']} (final); carried "
                    f"(MRR >= 0.5) at middle layers {layers or 'none'}", bool(layers), lens)


def _link(r: Runs) -> Measured:
    s = _summary(r, "composition")
    link, L = s.get("bridge_link"), s.get("bridge_layer")
    if not link:
        return Measured("no causal tracing of the bridge state", None)
    grew = link["strength_final"] - link["strength_early"]
    return Measured(f"causal strength of S[{L}, r1]: {link['strength_early']} at step "
                    f"{s['early_step']:,} -> {link['strength_final']} at {s['final_step']:,}",
                    grew > 0.05, link)


def _r2(r: Runs) -> Measured:
    s = _summary(r, "composition")
    lens = s["logit_lens"].get("train_inferred.r2")
    if lens is None:
        return Measured("the logit lens has no r2 target", None)
    L = lens["best_middle_layer"]
    early, final = lens["mrr_early_by_layer"][L], lens["mrr_final_by_layer"][L]
    return Measured(f"MRR of r2 at S[{L}, r2]: {early} early -> {final} final",
                    final >= 0.5 and final - early > 0.05, lens)


def _parallel(r: Runs) -> Measured:
    s = _summary(r, "comparison")
    v = s.get("values_parallel")
    if v is None:
        return Measured("the circuit summary found no values", None)
    both = v["both_carried_middle_layers"]
    return Measured(f"v1 and v2 both carried (MRR >= 0.5) at middle layers {both or 'none'}; first "
                    f"layers v1 {v['first_layer_v1']}, v2 {v['first_layer_v2']}", bool(both), v)


STUDY = Study(
    name="circuits",
    title="Wang et al. 2024: the circuits of grokked composition and comparison",
    description="Logit lens and causal tracing over checkpoints of composition-small and "
                "comparison-small, summarized by the circuit analysis.",
    minutes={"cpu": 16, "gpu": 90},
    runs=runs,
    claims=(
        Claim("composition: the bridge entity is decodable at r1 in a middle layer",
              "b at S[5, r1] (8 layers)", "Wang et al. 2024, section 3.3, Fig. 4", _bridge),
        Claim("composition: the causal link from S[L, r1] to the prediction grows during grokking",
              "the link S[5, r1] -> prediction grows", "Wang et al. 2024, section 3.3", _link),
        Claim("composition: r2 is 'delayed': its MRR at S[L, r2] grows to >= 0.5",
              "r2 delayed to S[5, r2], its MRR grows", "Wang et al. 2024, section 3.3", _r2),
        Claim("comparison: a parallel circuit, both values carried at S[L, e1] and S[L, e2]",
              "v1, v2 at S[5, e1], S[5, e2]", "Wang et al. 2024, section 4, App. D", _parallel),
    ),
)
