"""Fourier progress measures: how a model of modular addition builds its circuit, checkpoint by
checkpoint (Nanda et al. 2023, arXiv 2301.05217; methods.md section 4).

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

from groklab.analysis.sources import AnalysisError, open_source
from groklab.tasks.base import TaskData

EXPLAINED = 0.85  # a neuron belongs to a frequency cluster above this fraction (Nanda et al.)
MIN_CLUSTER = 0.01  # a key frequency is dominant for at least this fraction of the neurons
NORM_FRACTION = 0.9  # "frequencies carrying 90% of the embedding's squared norm"
DROP_FRACTION = 0.1  # a loss has "fallen" below this fraction of chance (ln p)
LOSS_OPS = {"+": 1, "-": -1}  # operations with a restricted/excluded loss: a + sign * b


# ----------------------------------------------------------------------------- the basis


def fourier_basis(p: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Orthonormal Fourier basis of Z_p as rows [p, p], each row's frequency [p], and names.

    Order: const, cos 1, sin 1, cos 2, sin 2, ... (and cos p/2 last for even p).
    """
    x = np.arange(p)
    rows, freqs, names = [np.ones(p)], [0], ["const"]
    for k in range(1, p // 2 + 1):
        rows.append(np.cos(2 * np.pi * k * x / p))
        freqs.append(k)
        names.append(f"cos {k}")
        if 2 * k == p:  # sin(pi x) vanishes on the integers
            break
        rows.append(np.sin(2 * np.pi * k * x / p))
        freqs.append(k)
        names.append(f"sin {k}")
    basis = np.stack(rows)
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    return basis, np.array(freqs), names


def frequency_energy(coeffs: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Squared norm per frequency 0..max from Fourier coefficients [..., p components, d]."""
    energy = (coeffs**2).sum(-1)  # [..., p]
    out = np.zeros(energy.shape[:-1] + (int(freqs.max()) + 1,))
    for k in range(out.shape[-1]):
        out[..., k] = energy[..., freqs == k].sum(-1)
    return out


def gini(x: np.ndarray) -> np.ndarray:
    """Gini coefficient over the last axis of nonnegative x: 0 even, (n-1)/n one spike."""
    x = np.sort(np.asarray(x, dtype=np.float64), axis=-1)
    n = x.shape[-1]
    i = np.arange(1, n + 1)
    total = x.sum(-1)
    return np.where(total > 0, ((2 * i - n - 1) * x).sum(-1) / (n * np.maximum(total, 1e-300)), 0.0)


def n_frequencies_for(energy: np.ndarray, fraction: float = NORM_FRACTION) -> np.ndarray:
    """Fewest frequencies whose squared norm reaches ``fraction`` of the total (last axis)."""
    e = np.sort(energy, axis=-1)[..., ::-1]
    cum = np.cumsum(e, axis=-1) / np.maximum(e.sum(-1, keepdims=True), 1e-300)
    return (cum < fraction - 1e-12).sum(-1) + 1


# ----------------------------------------------------------------------------- neurons


def neuron_frequency_fractions(acts: torch.Tensor, basis: np.ndarray, freqs: np.ndarray):
    """Fraction of each neuron's squared 2-D Fourier norm on each frequency.

    ``acts`` [p, p, n_neurons] over inputs (a, b). Returns [n_freq + 1, n_neurons]; row 0 is the
    const x const term (zero after centring); rows k >= 1 sum the 8 terms of frequency k.
    """
    p, _, n = acts.shape
    B = torch.as_tensor(basis, dtype=torch.float32, device=acts.device)
    acts = acts.float() - acts.float().mean((0, 1), keepdim=True)
    coef = torch.einsum("ia,abn->ibn", B, acts)
    coef = torch.einsum("jb,ibn->ijn", B, coef)  # [p, p, n]
    sq = coef.pow(2).reshape(p * p, n).double()
    fi, fj = np.meshgrid(freqs, freqs, indexing="ij")
    label = np.where(fi == fj, fi, np.where(fi == 0, fj, np.where(fj == 0, fi, -1))).reshape(-1)
    n_freq = int(freqs.max()) + 1
    onehot = torch.zeros(p * p, n_freq, dtype=torch.float64, device=acts.device)
    ok = label >= 0
    onehot[torch.as_tensor(np.flatnonzero(ok)), torch.as_tensor(label[ok])] = 1.0
    frac = onehot.T @ sq / sq.sum(0).clamp_min(1e-300)  # [n_freq, n]
    return frac.cpu().numpy()


def cluster_neurons(frac: np.ndarray, threshold: float = EXPLAINED,
                    min_cluster: float = MIN_CLUSTER) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dominant frequency per neuron, its fraction explained, and the key frequencies.

    ``frac`` [n_freq + 1, n_neurons]. A neuron's cluster is its dominant frequency when that
    explains >= ``threshold`` of its norm, else 0 (the residual cluster; also dead neurons).
    """
    dom = frac[1:].argmax(0) + 1
    explained = frac[1:].max(0)
    cluster = np.where(explained >= threshold, dom, 0)
    sizes = np.bincount(cluster, minlength=frac.shape[0])
    need = max(1, math.ceil(min_cluster * frac.shape[1]))
    key = np.flatnonzero(sizes[1:] >= need) + 1
    return cluster, explained, key


# ----------------------------------------------------------------------------- losses


def sum_directions(p: int, key_freqs, sign: int = 1) -> np.ndarray:
    """[p^2, 2 * len(key_freqs)] orthonormal directions cos/sin(w_k (a + sign * b)) over the
    flattened input grid (index a * p + b)."""
    basis, freqs, _ = fourier_basis(p)
    cols = []
    for k in key_freqs:
        k = int(k)
        if not 1 <= k <= (p - 1) // 2:
            raise AnalysisError(f"key frequency {k} is outside 1..{(p - 1) // 2} for p={p}")
        c, s = basis[2 * k - 1], basis[2 * k]
        cols.append((np.outer(c, c) - sign * np.outer(s, s)).reshape(-1) / math.sqrt(2))
        cols.append((np.outer(s, c) + sign * np.outer(c, s)).reshape(-1) / math.sqrt(2))
    if not cols:
        return np.zeros((p * p, 0))
    return np.stack(cols, axis=1)


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(torch.nn.functional.cross_entropy(logits, targets))


def restricted_and_excluded_loss(logits, targets, train_mask, key_freqs, sign: int = 1):
    """(restricted loss, excluded loss) of grid logits [p^2, p] (row a * p + b).

    ``targets`` [p^2] answers, ``train_mask`` [p^2] the training pairs. Projection is along the
    input axis, independently for each output class (methods.md trap 7).
    """
    L = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(targets, dtype=torch.long)
    p = L.shape[1]
    U = torch.as_tensor(sum_directions(p, key_freqs, sign), dtype=torch.float64)
    proj = U @ (U.T @ L)
    restricted = proj + (L - proj).mean(0, keepdim=True)
    mask = torch.as_tensor(np.asarray(train_mask, dtype=bool))
    return _ce(restricted, y), _ce((L - proj)[mask], y[mask])


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
    W_out = model.W_out if hasattr(model, "W_out") else model.blocks[-1].mlp.W_out
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

    def _phase_lines(self, ax) -> None:
        colors = {"step_memorized": "tab:red", "step_cleanup": "tab:purple",
                  "step_generalized": "tab:green"}
        for key, color in colors.items():
            step = self.phases.get(key)
            if step is not None:
                ax.axvline(step, color=color, ls="--", lw=1, alpha=0.7)

    def plot(self):
        """Losses (full, restricted, excluded), accuracies and Fourier sparsity vs step, with the
        memorization / circuit formation / cleanup boundaries as dashed lines."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        x = np.maximum(self.steps, 1)
        ax = axes[0]
        for name, y in [("train", self.train_loss), ("test", self.test_loss),
                        ("restricted", self.restricted_loss), ("excluded", self.excluded_loss)]:
            ax.plot(x, y, label=f"{name} loss")
        ax.set_yscale("log")
        ax.set_title(f"losses (key freqs {', '.join(map(str, self.key_freqs)) or 'none'})")
        ax = axes[1]
        ax.plot(x, self.train_acc, label="train")
        ax.plot(x, self.test_acc, label="test")
        ax.set_title("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax = axes[2]
        ax.plot(x, self.gini_embed, label="Gini, W_E Fourier norms")
        ax.plot(x, self.gini_wl, label="Gini, W_L Fourier norms")
        ax.plot(x, self.embed_key_fraction, label="W_E norm² in key freqs")
        ax.set_title("Fourier sparsity")
        ax.set_ylim(-0.02, 1.02)
        for ax in axes:
            self._phase_lines(ax)
            ax.set_xlabel("step")
            ax.legend(fontsize=8)
        fig.suptitle(f"Fourier progress measures, {self.op} mod {self.p} "
                     "(dashed: memorized, cleanup starts, test acc 0.99)")
        fig.tight_layout()
        return fig

    def plot_spectra(self):
        """Final embedding and neuron-logit map per frequency; embedding spectrum over steps."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        k = np.arange(self.embed_energy.shape[1])
        for ax, energy, title in [(axes[0], self.embed_energy[-1], "W_E"),
                                  (axes[1], self.wl_energy[-1], "W_L = W_out W_U")]:
            colors = ["tab:orange" if i in set(self.key_freqs.tolist()) else "tab:blue" for i in k]
            ax.bar(k, energy / max(energy.sum(), 1e-300), color=colors)
            ax.set_title(f"{title}: squared norm per frequency, step {int(self.steps[-1])}")
            ax.set_xlabel("frequency k (orange: key)")
        e = self.embed_energy / np.maximum(self.embed_energy.sum(1, keepdims=True), 1e-300)
        ax = axes[2]
        im = ax.imshow(e.T, aspect="auto", origin="lower", cmap="viridis",
                       extent=[-0.5, len(self.steps) - 0.5, -0.5, e.shape[1] - 0.5])
        ticks = np.linspace(0, len(self.steps) - 1, min(6, len(self.steps))).astype(int)
        ax.set_xticks(ticks, [str(int(self.steps[i])) for i in ticks])
        ax.set_xlabel("step (checkpoint index spacing)")
        ax.set_ylabel("frequency k")
        ax.set_title("W_E squared norm fraction per frequency")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        return fig

    def plot_neurons(self):
        """Neuron clusters by dominant frequency over steps, and the final fraction explained."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        x = np.maximum(self.steps, 1)
        n = self.neuron_cluster.shape[1]
        ax = axes[0]
        for kf in self.key_freqs:
            ax.plot(x, (self.neuron_cluster == kf).sum(1) / n, label=f"k={int(kf)}")
        ax.plot(x, (self.neuron_cluster == 0).sum(1) / n, "k--", label="residual")
        ax.set_title(f"fraction of neurons per key-frequency cluster (>= {EXPLAINED} explained)")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        self._phase_lines(ax)
        ax = axes[1]
        ax.hist(self.neuron_explained[-1], bins=40, range=(0, 1))
        ax.axvline(EXPLAINED, color="k", ls="--")
        ax.set_title(f"fraction explained by the dominant frequency, step {int(self.steps[-1])}")
        fig.tight_layout()
        return fig

    def save(self, run_dir) -> list[Path]:
        """RUN/analysis/fourier.npz + fourier.json, RUN/figures/fourier_{progress,spectra,
        neurons}.png; every file written atomically. Returns the paths."""
        import matplotlib.pyplot as plt

        from groklab.train.rundir import atomic_write_bytes, atomic_write_text

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
