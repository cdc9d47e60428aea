"""The one list of analyses. The CLI (``groklab analyze RUN --NAME``), the API
(``groklab.analyses()``, ``groklab.analyze``) and the report (titles and descriptions) read it.

An analysis is a module with ``run(source, **options) -> result``; ``source`` is a run
directory (every checkpoint asked for) or a model with ``task=``. A result saves itself
(``result.save(run_dir) -> [paths]``: arrays to RUN/analysis/<name>.npz, figures to
RUN/figures/<name>*.png) and says what it found (``result.text() -> str``). Modules are
imported only when an analysis runs, so listing them costs nothing.

To add an analysis: write the module, then add one :class:`Analysis` line below. ``options``
names the shared CLI options it takes; ``reads`` names analyses whose saved results it reads
(it runs after them, and automatically whenever one of them was run).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Analysis:
    name: str
    module: str
    result_type: str
    title: str
    description: str  # one line: what it measures, and whose method
    options: tuple[str, ...] = ("checkpoints",)
    reads: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()  # run() keywords settable with --opt NAME.KEY=VALUE

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def load(self):
        return importlib.import_module(self.module)

    def run(self, source, **options):
        return self.load().run(source, **options)


ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    Analysis(
        "logit_lens", "groklab.analysis.logit_lens", "LogitLensResult", "Logit lens",
        "Each hidden state passed through the final LayerNorm and the unembedding: the 0-based "
        "rank of the target tokens (bridge entity, second relation, answer) at every layer and "
        "position, across checkpoints (nostalgebraist 2020; Wang et al. 2024).",
        options=("checkpoints", "n_examples")),
    Analysis(
        "causal_tracing", "groklab.analysis.causal_tracing", "CausalTracingResult",
        "Causal tracing",
        "Which hidden states the prediction depends on: the state of a run with one token "
        "replaced (same type, different answer) patched into the clean run at each (layer, "
        "position); causal strength = fraction of examples whose top-1 prediction changes "
        "(Wang et al. 2024); and the noise-corruption variant of Meng et al. 2022.",
        options=("checkpoints", "n_examples", "rome")),
    Analysis(
        "fourier", "groklab.analysis.fourier", "FourierResult", "Fourier progress measures",
        "The embedding and unembedding in the Fourier basis of Z_p, key frequencies, the Gini "
        "coefficient of Fourier norms, restricted and excluded loss (Nanda et al. 2023).",
        options=("checkpoints",)),
    Analysis(
        "class_accuracy", "groklab.analysis.class_accuracy", "ClassAccuracyResult",
        "Per-class accuracy",
        "Accuracy on each class of a classify task across checkpoints, for the training rows "
        "and every probe, and the confusion matrix at the last checkpoint (MNIST-1D's per-digit "
        "errors; does an Omnigrok run generalize digit by digit?).",
        options=("checkpoints",)),
    Analysis(
        "linearity", "groklab.analysis.linearity", "LinearityResult", "Layer linearity",
        "How linear each block is: 1 - the least-squares residual between consecutive "
        "centred, Frobenius-normalised hidden states, and the same for the block's update "
        "alone, per layer across checkpoints (Razzhigaev et al. 2024).",
        options=("checkpoints", "n_examples")),
    Analysis(
        "heads", "groklab.analysis.heads", "HeadsResult", "Attention-head classes",
        "Per head and checkpoint: attention by relative distance, entropy, previous-token "
        "score, how much a position-only pattern explains, Gould et al.'s successor score on "
        "number tokens, and a class (successor, previous-token, positional, content).",
        options=("checkpoints", "n_examples")),
    Analysis(
        "neurons", "groklab.analysis.neurons", "NeuronsResult", "MLP neurons",
        "Per MLP neuron and checkpoint: its top-activating probe rows, its selectivity for one "
        "token (the largest squared correlation with a token-at-position indicator) and, on "
        "modular tasks, its dominant Fourier frequency (Nanda et al. 2023).",
        options=("checkpoints", "n_examples")),
    Analysis(
        "sae", "groklab.analysis.sae", "SAEResult", "Sparse autoencoders",
        "Sparse autoencoders (standard L1, TopK, BatchTopK, JumpReLU) on a hook point's "
        "activations at the checkpoints asked for (default: last): L0, explained variance, dead "
        "features, loss recovered when spliced in, top inputs, features that track the task's "
        "variables (the bridge entity; a, b); saved in SAELens' format (Bricken et al. 2023, "
        "Gao et al. 2024, Rajamanoharan et al. 2024).",
        options=("checkpoints",),
        settings=("hooks", "position", "kind", "d_sae", "expansion", "k", "l1", "l0", "steps",
                  "batch_size", "lr", "seed", "split", "eval_rows", "max_rows")),
    Analysis(
        "llc", "groklab.analysis.llc", "LLCResult", "Local learning coefficient",
        "The local learning coefficient of each checkpoint, estimated with SGLD (devinterp's "
        "sampler) on the training rows and the task's loss, against the memorization and "
        "generalization steps (Lau et al. 2023).",
        options=("checkpoints",),
        settings=("lr", "nbeta", "gamma", "chains", "draws", "burn_in", "batch_size", "seed",
                  "n_rows", "engine")),
    Analysis(
        "length_grid", "groklab.analysis.length_grid", "LengthGridResult",
        "Length generalization grid",
        "Exact match of an arithmetic run on every (digits of a, digits of b) cell up to the "
        "task's eval_digits, inside and beyond the training lengths, as a heatmap (McLeish et "
        "al. 2024).",
        options=()),
    Analysis(
        "circuit", "groklab.analysis.circuit", "CircuitSummary", "Circuit summary",
        "Logit lens and causal tracing read together across training: which states carry the "
        "bridge entity, and which links grow as the model groks.",
        options=(), reads=("logit_lens", "causal_tracing")),
    Analysis(
        "injection", "groklab.analysis.injection", "InjectionResult", "Injected facts",
        "Of a groklab inject output: the singular-value spectrum of every learned weight delta "
        "(LoRA vs MoRA, Jiang et al. 2024), the logit lens's bridge entity at r1 for "
        "two-hop queries through the new facts, and ROME tracing (NIE per layer and position) "
        "of the new facts beside the old ones.",
        options=("n_examples",), settings=("tracing", "samples", "seed")),
)}

# Not analyses of a run, but what the report shows under these names.
REPORT_ONLY = {
    "patching": ("Activation patching",
                 "Denoising patches over hook names (residual stream, attention and MLP outputs, "
                 "heads), as [layer, position] or [layer, head] grids."),
    "forecast": ("Forecast", "An early prediction of whether and when the run generalizes, "
                             "from the first part of its curves."),
}


def get(name: str) -> Analysis:
    key = name.replace("-", "_")
    if key not in ANALYSES:
        close = difflib.get_close_matches(key, list(ANALYSES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown analysis '{name}'{hint} available: {', '.join(ANALYSES)}")
    return ANALYSES[key]


def titles() -> dict[str, tuple[str, str]]:
    """name -> (title, description), for the report."""
    return {**{a.name: (a.title, a.description) for a in ANALYSES.values()}, **REPORT_ONLY}
