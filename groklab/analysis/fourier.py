"""Fourier progress measures: how a model of modular addition builds its circuit, checkpoint by
checkpoint (Nanda et al. 2023, arXiv 2301.05217; docs/methods.md section 4).

Question: a network trained on (a + b) mod p memorizes first and generalizes much later. Does
the generalizing circuit (embed a, b as cos/sin(w_k a) for a few key frequencies w_k = 2 pi k / p,
multiply them into cos/sin(w_k (a + b)), read logit(c) ~ sum_k cos(w_k (a + b - c))) form
gradually, long before test accuracy moves?

Method, at every checkpoint of a run (or one model in memory):

* Fourier basis of Z_p: rows const = 1/sqrt(p), then cos(w_k x), sin(w_k x) for k = 1..p//2,
  each divided by its norm sqrt(p/2) (trap 8: not sqrt(p)); orthonormal. For even p the k = p/2
  row is cos(pi x) alone.
* Embedding W_E (number rows) and the neuron-logit map W_L = W_out W_U (last MLP, number columns)
  in that basis: squared norm per frequency, the Gini coefficient of the p component norms
  (sparsity; G = sum_i (2i - n - 1) x_(i) / (n sum x)), and how many frequencies carry 90% of
  the embedding's squared norm.
* Neurons (the last MLP's ``hook_post`` at the answer position over all p^2 inputs, centred over
  the inputs) in the 2-D basis: each neuron's fraction of squared norm on frequency k (the const x
  cos/sin k, cos/sin k x const and the four cos/sin k x cos/sin k terms); its dominant frequency;
  neurons with >= 0.85 explained cluster by it, the rest form the residual cluster. Key
  frequencies = dominant frequencies of clusters holding at least 1% of the neurons.
* Restricted and excluded loss with the **final** checkpoint's key frequencies (trap 7): the
  logits [p^2 inputs, p numbers] (the "=" logit dropped) are projected along the p^2 **input** axis
  onto the unit directions cos(w_k(a+b)) = (cos_k x cos_k - sin_k x sin_k)/sqrt 2 and
  sin(w_k(a+b)) = (sin_k x cos_k + cos_k x sin_k)/sqrt 2 (a - b for the "-" operation).
  Restricted = projection + per-class mean of (logits - projection) over all p^2 inputs, with the
  cross-entropy over all p^2 pairs; excluded = logits - projection, cross-entropy over the
  training pairs only. Both in float64.

Phases (derived from the data, not fixed step counts):

* memorization ends at ``step_memorized``: the first checkpoint with train accuracy >= 0.99;
* circuit formation ends (cleanup begins) at ``step_cleanup``: the first checkpoint after that
  where test loss falls below its value at ``step_memorized`` (in Nanda's runs test loss rises or
  stays high while the circuit forms, then falls in cleanup);
* cleanup ends at ``step_generalized``: the first checkpoint with test accuracy >= 0.99.

"Restricted loss falls before test loss" is read off the drop steps: the first checkpoint at or
after memorization where a loss is below a tenth of the chance-level loss ln p
(``step_restricted_drop`` < ``step_test_drop``).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from groklab.analysis import fourier_figures
from groklab.analysis.fourier_measures import (  # noqa: F401  (re-exported: the public API)
    EXPLAINED,
    MIN_CLUSTER,
    NORM_FRACTION,
    _ce,
    cluster_neurons,
    fourier_basis,
    frequency_energy,
    gini,
    n_frequencies_for,
    neuron_frequency_fractions,
    restricted_and_excluded_loss,
    sum_directions,
)
from groklab.analysis.sources import AnalysisError, open_source
from groklab.tasks.base import TaskData

DROP_FRACTION = 0.1  # a loss has "fallen" below this fraction of chance (ln p)
LOSS_OPS = {"+": 1, "-": -1}  # operations with a restricted/excluded loss: a + sign * b


# ----------------------------------------------------------------------------- the model side


def _check_task(task: TaskData) -> tuple[int, int | None]:
    if task.name != "modular" or task.info.get("op") in ("s5", "s5conj", "s5aba"):
        raise AnalysisError(
            f"the Fourier analysis needs a modular task on Z_p; this run's task is "
            f"'{task.name}'{' (' + task.info['op'] + ')' if task.name == 'modular' else ''}"
        )
    return int(task.info["n_elements"]), LOSS_OPS.get(task.info["op"])


def grid_inputs(task: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair (a, b), row a * p + b, in the task's own format, and answer positions."""
    p = int(task.info["n_elements"])
    a, b = (t.reshape(-1) for t in torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij"))
    eq = torch.full_like(a, task.vocab.id("="))
    ops = task.vocab.ids_of_type("operator")
    cols = [a, torch.full_like(a, int(ops[0])), b, eq] if len(ops) else [a, b, eq]
    inputs = torch.stack(cols, dim=1)
    return inputs, torch.full((p * p,), inputs.shape[1] - 1, dtype=torch.long)


def _neuron_hook(model) -> str:
    if "mlp.hook_post" in model.hook_dict:  # pair_mlp
        return "mlp.hook_post"
    names = [n for n in model.hook_dict if n.endswith("mlp.hook_post")]
    if not names:
        raise AnalysisError(f"{type(model).__name__} has no MLP neurons (mlp.hook_post)")
    return sorted(names, key=lambda n: int(n.split(".")[1]))[-1]  # the last block's MLP


def _neuron_logit_map(model, p: int) -> np.ndarray:
    """W_L = W_out W_U [d_mlp, p]: what each neuron writes to each number's logit."""
    W_out = model.W_out  # a transformer's is stacked [layers, d_mlp, d_model]: the last
    W_out = W_out[-1] if W_out.dim() == 3 else W_out
    return (W_out @ model.W_U[:, :p]).detach().double().cpu().numpy()


@torch.no_grad()
def _snapshot(model, inputs, answer_pos, basis, freqs):
    """Everything measured at one checkpoint except the key-frequency losses."""
    p = basis.shape[0]
    hook = _neuron_hook(model)
    logits, cache = model.run_with_cache(inputs, answer_pos, names_filter=hook)
    acts = cache[hook]
    if acts.dim() == 3:  # transformer: [batch, pos, d_mlp] -> the answer position
        acts = acts[torch.arange(acts.shape[0]), answer_pos]
    frac = neuron_frequency_fractions(acts.reshape(p, p, -1), basis, freqs)
    W_E = model.W_E[:p].detach().double().cpu().numpy()
    W_U = model.W_U[:, :p].detach().double().cpu().numpy()  # [d, p]
    W_L = _neuron_logit_map(model, p)
    coef_E = basis @ W_E  # [p components, d]
    coef_U = basis @ W_U.T
    coef_L = basis @ W_L.T  # Fourier over the output (number) axis
    return {
        "logits": logits[:, :p].double(),  # the "=" (and operator) logits dropped
        "frac": frac,
        "embed_energy": frequency_energy(coef_E, freqs),
        "unembed_energy": frequency_energy(coef_U, freqs),
        "wl_energy": frequency_energy(coef_L, freqs),
        "gini_embed": float(gini(np.linalg.norm(coef_E, axis=1))),
        "gini_wl": float(gini(np.linalg.norm(coef_L, axis=1))),
        "weight_norm": math.sqrt(sum(float(q.double().pow(2).sum()) for q in model.parameters())),
    }


# ----------------------------------------------------------------------------- result


@dataclass
class FourierResult:
    """Fourier progress measures over checkpoints. Arrays are indexed by checkpoint [T] first.

    ``*_energy`` [T, p//2 + 1] squared norms per frequency (0 = const); ``neuron_cluster`` [T,
    n_neurons] the dominant frequency of each neuron (0 = residual); ``neuron_explained`` [T,
    n_neurons]; ``key_freqs`` the final checkpoint's key frequencies, used for every checkpoint's
    restricted/excluded loss; ``n_key_freqs`` [T] each checkpoint's own count.
    """

    p: int
    op: str
    steps: np.ndarray
    key_freqs: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    restricted_loss: np.ndarray
    excluded_loss: np.ndarray
    embed_energy: np.ndarray
    unembed_energy: np.ndarray
    wl_energy: np.ndarray
    gini_embed: np.ndarray
    gini_wl: np.ndarray
    embed_n_freq_90: np.ndarray
    embed_key_fraction: np.ndarray
    n_key_freqs: np.ndarray
    neuron_cluster: np.ndarray
    neuron_explained: np.ndarray
    weight_norm: np.ndarray
    phases: dict = field(default_factory=dict)

    # -- phases ---------------------------------------------------------------------------

    def _drop(self, curve: np.ndarray, start: int | None) -> int | None:
        """First checkpoint at or after ``start`` with the loss below DROP_FRACTION * ln p."""
        if start is None:
            return None
        i = np.flatnonzero((self.steps >= start) & (curve < DROP_FRACTION * math.log(self.p)))
        return int(self.steps[i[0]]) if i.size else None

    def compute_phases(self) -> dict:
        def first(mask) -> int | None:
            i = np.flatnonzero(mask)
            return int(self.steps[i[0]]) if i.size else None

        mem = first(self.train_acc >= 0.99)
        cleanup = gen = None
        if mem is not None:
            at_mem = self.test_loss[self.steps == mem][0]
            cleanup = first((self.steps > mem) & (self.test_loss < at_mem))
        gen = first(self.test_acc >= 0.99)
        self.phases = {
            "step_memorized": mem,
            "step_cleanup": cleanup,
            "step_generalized": gen,
            "step_restricted_drop": self._drop(self.restricted_loss, mem),
            "step_test_drop": self._drop(self.test_loss, mem),
        }
        return self.phases

    def text(self) -> str:
        s = self.summary()
        f = s["final"]
        return "\n".join([
            f"fourier ({s['op']} mod {s['p']}, {s['n_checkpoints']} checkpoints): key frequencies "
            f"{s['key_freqs']}; at step {s['steps'][1]}: test acc {f['test_acc']:.3f}, "
            f"{f['embed_n_freq_90']} frequencies carry 90% of W_E's squared norm "
            f"({f['embed_key_fraction']:.2f} in the key ones), Gini W_E {f['gini_embed']:.2f}",
            f"phases: memorized {s['step_memorized']}, cleanup from {s['step_cleanup']}, "
            f"test acc 0.99 at {s['step_generalized']}; below 0.1 ln p: restricted loss at "
            f"{s['step_restricted_drop']}, test loss at {s['step_test_drop']}"])

    def summary(self) -> dict:
        """Headline numbers of the last checkpoint plus the phase steps (JSON-ready)."""
        s = {
            "p": self.p,
            "op": self.op,
            "steps": [int(self.steps[0]), int(self.steps[-1])],
            "n_checkpoints": int(self.steps.size),
            "key_freqs": [int(k) for k in self.key_freqs],
            "final": {
                "train_acc": float(self.train_acc[-1]),
                "test_acc": float(self.test_acc[-1]),
                "test_loss": float(self.test_loss[-1]),
                "restricted_loss": float(self.restricted_loss[-1]),
                "excluded_loss": float(self.excluded_loss[-1]),
                "gini_embed": float(self.gini_embed[-1]),
                "gini_wl": float(self.gini_wl[-1]),
                "embed_n_freq_90": int(self.embed_n_freq_90[-1]),
                "embed_key_fraction": float(self.embed_key_fraction[-1]),
            },
            **self.phases,
        }
        a, b = s.get("step_restricted_drop"), s.get("step_test_drop")
        s["restricted_falls_first"] = None if a is None or b is None else bool(a < b)
        return s

    # -- output ---------------------------------------------------------------------------

    def plot(self):
        """Losses (full, restricted, excluded), accuracies and Fourier sparsity vs step, with the
        memorization / circuit formation / cleanup boundaries as dashed lines."""
        return fourier_figures.plot_progress(self)

    def plot_spectra(self):
        """Final embedding and neuron-logit map per frequency; embedding spectrum over steps."""
        return fourier_figures.plot_spectra(self)

    def plot_neurons(self):
        """Neuron clusters by dominant frequency over steps, and the final fraction explained."""
        return fourier_figures.plot_neurons(self)

    def save(self, run_dir) -> list[Path]:
        """RUN/analysis/fourier.npz + fourier.json, RUN/figures/fourier_{progress,spectra,
        neurons}.png; every file written atomically. Returns the paths."""
        import matplotlib.pyplot as plt

        from groklab.rundir import atomic_write_bytes, atomic_write_text

        run_dir = Path(run_dir)
        arrays = {k: np.asarray(v) for k, v in asdict(self).items()
                  if k not in ("p", "op", "phases")}
        buf = io.BytesIO()
        np.savez_compressed(buf, p=self.p, op=self.op, **arrays)
        paths = [run_dir / "analysis" / "fourier.npz", run_dir / "analysis" / "fourier.json"]
        atomic_write_bytes(paths[0], buf.getvalue())
        atomic_write_text(paths[1], json.dumps(self.summary(), indent=1) + "\n")
        for name, make in [("progress", self.plot), ("spectra", self.plot_spectra),
                           ("neurons", self.plot_neurons)]:
            fig = make()
            png = io.BytesIO()
            fig.savefig(png, dpi=110)
            plt.close(fig)
            path = run_dir / "figures" / f"fourier_{name}.png"
            atomic_write_bytes(path, png.getvalue())
            paths.append(path)
        return paths


# ----------------------------------------------------------------------------- entry point


def run(run_dir_or_model, *, task: TaskData | None = None, checkpoints="all",
        key_freqs=None, device: str = "cpu") -> FourierResult:
    """Fourier progress measures at every checkpoint of a run (or for one model and ``task``).

    ``key_freqs`` overrides the final checkpoint's key frequencies for the restricted/excluded
    loss. Raises :class:`AnalysisError` for a task that is not a binary operation on Z_p.
    """
    src = open_source(run_dir_or_model, task=task, checkpoints=checkpoints, device=device)
    p, sign = _check_task(src.task)
    basis, freqs, _ = fourier_basis(p)
    inputs, answer_pos = grid_inputs(src.task)
    inputs, answer_pos = inputs.to(device), answer_pos.to(device)
    table = src.task.arrays["table"]
    train_mask = src.task.arrays["train_mask"].reshape(-1)
    valid = (table >= 0).reshape(-1)
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    test_mask = valid & ~train_mask
    if src.task.info.get("pairs") == "unordered":
        test_mask &= (a <= b).reshape(-1)
    targets = torch.as_tensor(np.where(valid, table.reshape(-1), 0))

    def measure(step: int) -> dict:
        snap = _snapshot(src.model_at(step).to(device), inputs, answer_pos, basis, freqs)
        snap["cluster"], snap["explained"], snap["key"] = cluster_neurons(snap.pop("frac"))
        return snap

    # The restricted/excluded losses of every checkpoint use the final circuit's frequencies.
    final = measure(src.steps[-1])
    key = np.asarray(key_freqs if key_freqs is not None else final["key"], dtype=np.int64)
    tm, sm = torch.as_tensor(train_mask), torch.as_tensor(test_mask)
    snaps = []
    for step in src.steps:
        snap = final if step == src.steps[-1] else measure(step)
        logits = snap.pop("logits").cpu()
        snap["train_loss"] = _ce(logits[tm], targets[tm])
        snap["test_loss"] = _ce(logits[sm], targets[sm])
        pred = logits.argmax(-1)
        snap["train_acc"] = float((pred[tm] == targets[tm]).double().mean())
        snap["test_acc"] = float((pred[sm] == targets[sm]).double().mean())
        if sign is None:  # no sum structure to project on for this operation
            snap["restricted"] = snap["excluded"] = np.nan
        else:
            snap["restricted"], snap["excluded"] = restricted_and_excluded_loss(
                logits, targets, train_mask, key, sign)
        snaps.append(snap)

    def stack(k):
        return np.array([s[k] for s in snaps])

    embed_energy = stack("embed_energy")
    result = FourierResult(
        p=p,
        op=src.task.info["op"],
        steps=np.array(src.steps, dtype=np.int64),
        key_freqs=key,
        train_loss=stack("train_loss"),
        test_loss=stack("test_loss"),
        train_acc=stack("train_acc"),
        test_acc=stack("test_acc"),
        restricted_loss=stack("restricted"),
        excluded_loss=stack("excluded"),
        embed_energy=embed_energy,
        unembed_energy=stack("unembed_energy"),
        wl_energy=stack("wl_energy"),
        gini_embed=stack("gini_embed"),
        gini_wl=stack("gini_wl"),
        embed_n_freq_90=n_frequencies_for(embed_energy),
        embed_key_fraction=embed_energy[:, key].sum(1) / np.maximum(embed_energy.sum(1), 1e-300),
        n_key_freqs=np.array([len(s["key"]) for s in snaps]),
        neuron_cluster=stack("cluster"),
        neuron_explained=stack("explained"),
        weight_norm=stack("weight_norm"),
    )
    result.compute_phases()
    return result
