"""The circuit, read from the logit lens and causal tracing together across training.

Question (Wang et al. 2024, section 3.3, section 4, App. D; docs/anchors.md section 1,
Circuits row): which hidden states carry the intermediate result (composition: the bridge entity at
S[L, r1]; comparison: the two values at S[L, e1] and S[L, e2]), does the prediction causally
depend on them, and which of those links grow between memorization and the end of training?
Does the OOD failure show as the upper layers not using the state?

Method: read ``RUN/analysis/logit_lens.npz`` and ``causal_tracing.npz`` (run those first) and
compare the checkpoint in the memorization regime (``sources.early_step``: the largest
train_inferred - ID accuracy gap; the paper uses index 10 = 22k steps, just after its 14k
saturation, ID still < 10%) with the last one. A state "carries" a target
when its logit-lens MRR is >= 0.5. Middle layers are 1..n_layers-1 (not the embeddings, not
the final state). Writes ``RUN/analysis/circuit_summary.json`` (numbers and sentences),
``circuit_summary.txt`` (the sentences) and ``RUN/figures/circuit_over_training.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from groklab.analysis.causal_tracing import CausalTracingResult
from groklab.analysis.logit_lens import LogitLensResult
from groklab.analysis.saving import save_figure
from groklab.analysis.sources import AnalysisError

NAME = "circuit"
CARRY = 0.5  # logit-lens MRR at which a state is said to carry a token


def _r(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 3)


@dataclass
class CircuitSummary:
    task: str
    early_step: int
    final_step: int
    numbers: dict
    sentences: list[str]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False, default_factory=dict)
    metrics: list[dict] = field(repr=False, default_factory=list)

    def text(self) -> str:
        head = (f"circuit summary: {self.task}, early (memorization: largest train_inferred - "
                f"ID accuracy gap) = step {self.early_step}, final = step {self.final_step}")
        return "\n".join([head, *[f"- {s}" for s in self.sentences]])

    def plot(self):
        """The key links vs step, over the run's accuracy curves."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        for label, (x, y) in self.curves.items():
            ax.plot(x, y, marker=".", ms=4, label=label)
        for split, style in (("train", ":"), ("test_id", "--"), ("test_ood", "-.")):
            rows = [(m["step"], m[f"acc/{split}"]) for m in self.metrics if f"acc/{split}" in m]
            if rows:
                x, y = zip(*rows)
                ax.plot(x, y, style, color="grey", lw=1, label=f"acc {split}")
        ax.axvline(self.early_step, color="k", lw=0.6)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set_title(f"circuit over training, {self.task}", fontsize=10)
        fig.tight_layout()
        return fig

    def save(self, run_dir: str | Path) -> list[Path]:
        from groklab.rundir import atomic_write_text

        run_dir = Path(run_dir)
        js = run_dir / "analysis" / f"{NAME}_summary.json"
        txt = run_dir / "analysis" / f"{NAME}_summary.txt"
        atomic_write_text(js, json.dumps({"task": self.task, "early_step": self.early_step,
                                          "final_step": self.final_step,
                                          "summary": self.sentences, **self.numbers}, indent=1))
        atomic_write_text(txt, self.text() + "\n")
        return [js, txt, save_figure(self.plot(), run_dir / "figures" / f"{NAME}_over_training.png")]


def summarize(lens: LogitLensResult, tracing: CausalTracingResult | None,
              metrics: list[dict] | None = None) -> CircuitSummary:
    steps = lens.steps
    early = tracing.early_step if tracing is not None else int(steps[0])
    i0 = int(np.searchsorted(steps, early)) if early in steps else 0
    n = lens.n_layers
    mid = list(range(1, n)) or [0]
    main = lens.splits[0]
    numbers: dict = {"logit_lens": {}, "causal_tracing": {}}
    sentences: list[str] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # --- logit lens: where each target is carried, early vs final.
    best_layer: dict[str, int] = {}
    for target, pos in lens.targets.items():
        for split in lens.splits:
            if not lens.has(split, target):
                continue
            m = lens.mrr(split, target)[:, :, pos]  # [C, L+1]
            entry = {"position": lens.positions[pos],
                     "mrr_final_by_layer": [_r(v) for v in m[-1]],
                     "mrr_early_by_layer": [_r(v) for v in m[i0]],
                     "carried_at_layers_final": [int(l) for l in mid if m[-1, l] >= CARRY]}
            if split == main:
                best_layer[target] = int(mid[int(np.argmax(m[-1, mid]))])
            entry["best_middle_layer"] = best_layer.get(target)
            numbers["logit_lens"][f"{split}.{target}"] = entry

    def lens_at(split, target, layer, i=-1):
        if not lens.has(split, target):
            return None
        return float(lens.mrr(split, target)[i, layer, lens.targets[target]])

    # --- causal tracing: the grid at early and final, and the links that grew most.
    slot_of = {}
    t0 = tracing.index_of(early) if tracing is not None else 0
    if tracing is not None:
        for split in tracing.splits:
            s = tracing.strength(split)
            grow = s[-1] - s[t0]
            cells = [(float(grow[l, j]), l, j) for l in range(s.shape[1])
                     for j in range(s.shape[2]) if np.isfinite(grow[l, j])]
            cells.sort(reverse=True)
            numbers["causal_tracing"][split] = {
                "slots": tracing.slots,
                "strength_final": np.round(s[-1], 3).tolist(),
                "strength_early": np.round(s[t0], 3).tolist(),
                "clean_accuracy_final": _r(tracing.clean_accuracy(split)[-1]),
                "largest_growth": [{"layer": l, "slot": tracing.slots[j], "early": _r(s[t0, l, j]),
                                    "final": _r(s[-1, l, j]), "growth": _r(g)}
                                   for g, l, j in cells[:5]],
            }
        slot_of = {name: j for j, name in enumerate(tracing.slots)}

    def strength_at(split, slot, layer, early_=False):
        if tracing is None or split not in tracing.splits or slot not in slot_of:
            return None
        return float(tracing.strength(split)[t0 if early_ else -1, layer, slot_of[slot]])

    def nie_at(split, pos, layer, early_=False):
        if tracing is None or split not in tracing.splits or not tracing.has_rome(split):
            return None
        rs = list(tracing.rome_steps)
        i = (rs.index(early) if early in rs else 0) if early_ else -1
        return float(tracing.nie(split)[i, layer, pos])

    def pick_layer(target: str, slot: str) -> int:
        """The middle layer whose state both holds the target (logit-lens MRR) and matters to
        the prediction (causal strength of its slot), at the final checkpoint."""
        m = lens.mrr(main, target)[-1, :, lens.targets[target]]
        score = {l: m[l] * (strength_at(main, slot, l) if slot in slot_of else 1.0) for l in mid}
        return int(max(score, key=score.get))

    def fmt(x):
        return "n/a" if x is None else f"{x:.2f}"

    ood = "test_ood" if "test_ood" in lens.splits else None
    if lens.task == "composition" and "bridge" in best_layer:
        L = pick_layer("bridge", "r1")
        numbers["bridge_layer"] = L
        by_layer = numbers["logit_lens"][f"{main}.bridge"]
        sentences.append(
            f"bridge entity at r1 ({main}): logit-lens MRR by layer {by_layer['mrr_final_by_layer']}"
            f" at the end, {by_layer['mrr_early_by_layer']} at the early checkpoint; the state "
            f"that holds it and drives the answer is S[{L}, r1] (MRR {fmt(lens_at(main, 'bridge', L))}).")
        if "r2" in best_layer:
            L2 = best_layer["r2"]
            sentences.append(
                f"second relation: MRR of r2 at S[{L2}, r2] is {lens_at(main, 'r2', L2):.2f} at "
                f"the end vs {lens_at(main, 'r2', L2, i0):.2f} early.")
        c_f, c_e = strength_at(main, "r1", L), strength_at(main, "r1", L, True)
        n_f, n_e = nie_at(main, 1, L), nie_at(main, 1, L, True)
        if c_f is not None:
            grew = (c_f - c_e > 0.05) or (n_f is not None and n_f - n_e > 0.05)
            sentences.append(
                f"causal link S[{L}, r1] -> prediction: counterfactual strength {c_e:.2f} early -> "
                f"{c_f:.2f} at the end; ROME NIE {fmt(n_e)} -> {fmt(n_f)} "
                f"({'grew' if grew else 'did not grow'}).")
            numbers["bridge_link"] = {"strength_early": _r(c_e), "strength_final": _r(c_f),
                                      "nie_early": _r(n_e), "nie_final": _r(n_f)}
            curves[f"causal strength S[{L},r1]"] = (tracing.steps, tracing.strength(main)[
                :, L, slot_of["r1"]])
        curves[f"MRR bridge at S[{L},r1]"] = (lens.steps, lens.mrr(main, "bridge")[:, L, 1])
        if ood:
            ans = lens.targets["answer"]
            o_b = [lens_at(ood, "bridge", l) for l in range(n + 1)]
            o_ans = [lens_at(ood, "answer", l) for l in range(n + 1)]
            m_ans = [lens_at(main, "answer", l) for l in range(n + 1)]
            numbers["ood"] = {
                "split": ood, "bridge_mrr_at_r1_by_layer": [_r(v) for v in o_b],
                "answer_mrr_at_last_by_layer": [_r(v) for v in o_ans],
                f"answer_mrr_at_last_by_layer_{main}": [_r(v) for v in m_ans],
                "strength_bridge_state": _r(strength_at(ood, "r1", L)),
                "nie_bridge_state": _r(nie_at(ood, 1, L)),
            }
            sentences.append(
                f"OOD ({ood}): bridge MRR at r1 by layer {[_r(v) for v in o_b]} (vs "
                f"{by_layer['mrr_final_by_layer']} on {main}); causal strength of S[{L}, r1] "
                f"{fmt(strength_at(ood, 'r1', L))}, ROME NIE {fmt(nie_at(ood, 1, L))} (vs "
                f"{fmt(c_f)}, {fmt(n_f)}); answer MRR at {lens.positions[ans]} by layer "
                f"{[_r(v) for v in o_ans]} (vs {[_r(v) for v in m_ans]}).")
            curves[f"MRR bridge at S[{L},r1], {ood}"] = (lens.steps,
                                                         lens.mrr(ood, "bridge")[:, L, 1])
    elif lens.task in ("comparison", "complex") and "v1" in best_layer:
        e1p, e2p = lens.targets["v1"], lens.targets["v2"]
        m1 = lens.mrr(main, "v1")[-1, :, e1p]
        m2 = lens.mrr(main, "v2")[-1, :, e2p]
        both = [int(l) for l in mid if m1[l] >= CARRY and m2[l] >= CARRY]
        first1 = next((int(l) for l in range(1, n + 1) if m1[l] >= CARRY), None)
        first2 = next((int(l) for l in range(1, n + 1) if m2[l] >= CARRY), None)
        sentences.append(
            f"values: v1 at S[., e1] MRR by layer {[round(float(v), 2) for v in m1]}, v2 at "
            f"S[., e2] {[round(float(v), 2) for v in m2]} ({main}, final); both carried at "
            f"middle layers {both}; first layer carrying v1 {first1}, v2 {first2}"
            f"{' (in parallel)' if first1 is not None and first1 == first2 else ''}"
            + (" (e2 is also the answer position: its state turns into the label, so v2 need "
               "not be decodable there)" if e2p == lens.targets["answer"] else "") + ".")
        numbers["values_parallel"] = {"both_carried_middle_layers": both,
                                      "first_layer_v1": first1, "first_layer_v2": first2}
        if lens.has(main, "labels"):
            r3 = lens.recall(main, "labels", 3)[-1, :, lens.targets["labels"]]
            sentences.append(
                f"label space at S[., a]: fraction of the 3 labels in the top 3 by layer "
                f"{[round(float(v), 2) for v in r3]} (final).")
            numbers["label_space_recall@3_final_by_layer"] = [_r(v) for v in r3]
        L = pick_layer("v1", "e1")
        curves[f"MRR v1 at S[{L},e1]"] = (lens.steps, lens.mrr(main, "v1")[:, L, e1p])
        curves[f"MRR v2 at S[{L},e2]"] = (lens.steps, lens.mrr(main, "v2")[:, L, e2p])
        for slot in ("e1", "e2"):
            c = strength_at(main, slot, L)
            if c is not None:
                sentences.append(f"causal link S[{L}, {slot}] -> prediction: strength "
                                 f"{strength_at(main, slot, L, True):.2f} early -> {c:.2f} final.")
                curves[f"causal strength S[{L},{slot}]"] = (
                    tracing.steps, tracing.strength(main)[:, L, slot_of[slot]])
        if ood:
            o1 = lens_at(ood, "v1", L)
            o2 = lens_at(ood, "v2", L)
            sentences.append(f"OOD ({ood}): v1 / v2 MRR at S[{L}, e1/e2] {o1:.2f} / {o2:.2f}; "
                             f"answer MRR at the final state {lens_at(ood, 'answer', n):.2f}.")
    else:
        pos = lens.targets["answer"]
        m = lens.mrr(main, "answer")[-1, :, pos]
        sentences.append(f"answer MRR at the last position by layer {np.round(m, 2).tolist()}.")
    if tracing is not None:
        top = numbers["causal_tracing"][main]["largest_growth"][:3]
        sentences.append("links that grew most (final - early causal strength, " + main + "): "
                         + ", ".join(f"S[{c['layer']}, {c['slot']}] {c['early']} -> {c['final']}"
                                     for c in top) + ".")
    return CircuitSummary(lens.task, int(early), int(steps[-1]), numbers, sentences, curves,
                          metrics or [])


def run(source, **_) -> CircuitSummary:
    """Summarize a run directory whose logit lens (and causal tracing) results are saved."""
    from groklab.rundir import LoadedRun, load_run

    run_dir = Path(source.path if isinstance(source, LoadedRun) else source)
    if not (run_dir / "analysis" / "logit_lens.npz").exists():
        raise AnalysisError(f"'{run_dir}' has no analysis/logit_lens.npz; run "
                            "`groklab analyze RUN --logit-lens --causal-tracing` first")
    lens = LogitLensResult.load(run_dir)
    tracing = CausalTracingResult.load(run_dir) \
        if (run_dir / "analysis" / "causal_tracing.npz").exists() else None
    return summarize(lens, tracing, load_run(run_dir).metrics)
