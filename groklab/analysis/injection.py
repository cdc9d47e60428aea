"""What an injection (``groklab inject``) changed: the singular-value spectrum of every learned
weight delta, and whether the bridge entity of a two-hop query through a new fact can be read
off the residual stream at the first relation's position (the logit lens of
``groklab/analysis/logit_lens.py``).

Spectrum: a LoRA delta has rank <= r by construction; MoRA's square M at the same parameter
count can reach rank r_hat (type 1's sharing caps it at r_hat, type 6's rotation at
min(d_in, d_out)); a fine-tuned matrix is unconstrained. "Significant" singular values are
those above 1% of the largest (and the entropy effective rank, exp of the entropy of the
normalised singular values, as a threshold-free companion).

Lens: for ``compose_first`` (new first hop), ``compose_second`` (new second hop) and, as the
reference, the base run's own ``test_id`` paths, the fraction of queries whose bridge entity is
the top-1 token of the lens at position r1, per layer, in the injected model.

Tracing: ROME's hidden-flow tracing (``trace_noise`` of ``causal_tracing.py``: noise on the
head entity's embedding, one clean hidden state restored at a time) on the rows the injected
model answers correctly, for the new facts beside the old atomic facts (``atomic_id``), and for
the two-hop splits: the normalized indirect effect NIE [layer, position]. Where a new fact's
recall sits (which layers carry the head entity's state to the answer) against where the old
facts' does says whether the adapter stored it where the grokked circuit looks things up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from groklab.analysis.logit_lens import lens_ranks
from groklab.analysis.saving import pyplot, save_arrays, save_figure

NAME = "injection"
SIGNIFICANT = 0.01  # of the largest singular value


def delta_weights(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """name -> dW [d_in, d_out] of an injection directory, and its adapter.json."""
    from safetensors.torch import load_file

    from groklab.models.adapters import attach
    from groklab.models.grow import grow_vocab
    from groklab.rundir import RunDirError, load_run

    run_dir = Path(run_dir)
    meta_path = run_dir / "injection.json"
    if not meta_path.is_file() or not (run_dir / "adapter.safetensors").is_file():
        raise RunDirError(f"'{run_dir}' is not a finished injection (no injection.json or "
                          "adapter.safetensors); make one with groklab inject")
    meta = json.loads(meta_path.read_text())
    tensors = load_file(run_dir / "adapter.safetensors")
    cfg = meta["adapter"]
    if cfg["kind"] in ("full", "last"):
        return {k.removesuffix(".delta"): v for k, v in tensors.items()
                if k.endswith(".delta")}, cfg
    model = load_run(meta["base_run"]).model(meta["inject"]["checkpoint"])
    grow_vocab(model, meta["info"]["n_new_entities"])
    ic = meta["inject"]
    ad = attach(model, cfg["kind"], cfg["targets"], ic["rank"], ic["alpha"], ic["dropout"],
                ic["mora_type"])
    ad.load_state_dict(tensors)
    return ad.delta_weights(), cfg


def spectrum(dW: torch.Tensor) -> np.ndarray:
    return torch.linalg.svdvals(dW.double()).numpy()


def n_significant(s: np.ndarray, rel: float = SIGNIFICANT) -> int:
    return int((s > rel * s[0]).sum()) if len(s) and s[0] > 0 else 0


def effective_rank(s: np.ndarray) -> float:
    p = s / s.sum() if s.sum() > 0 else s
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0


@torch.no_grad()
def bridge_decoding(model, split) -> np.ndarray:
    """[n_layers + 1]: fraction of rows whose bridge is the lens's top-1 token at r1."""
    ranks = lens_ranks(model, split.inputs, {"bridge": split.meta["bridge"][:, None]})["bridge"]
    return (ranks[:, 1, :, 0] == 0).mean(axis=1)


TRACED = ("new", "atomic_id", "compose_first", "compose_second", "test_id")
MIN_ROWS = 10  # fewer correctly answered rows than this: no tracing for that split


def recall_tracing(model, split, samples: int = 10) -> tuple[np.ndarray, int]:
    """ROME's NIE [layers, positions up to the answer] over the rows ``model`` answers
    correctly (None when fewer than ``MIN_ROWS``), and that row count."""
    from groklab.analysis.causal_tracing import trace_noise

    with torch.no_grad():
        right = model(split.inputs, split.answer_pos).argmax(-1) == split.targets
    n = int(right.sum())
    if n < MIN_ROWS:
        return None, n
    ex = split.subset(right.nonzero()[:, 0].numpy())
    restored, low, high = trace_noise(model, ex, (0,), samples=samples)
    P = int(ex.answer_pos.max()) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        nie = (restored.mean(-1) - low.mean()) / (high.mean() - low.mean())
    return nie[:, :P].astype(np.float32), n


@dataclass
class InjectionResult:
    kind: str
    spectra: dict[str, np.ndarray] = field(repr=False)
    lens: dict[str, np.ndarray] = field(repr=False)
    tracing: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    traced_rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        sig = {n: n_significant(s) for n, s in self.spectra.items()}
        return {"kind": self.kind, "significant": sig,
                "effective_rank": {n: round(effective_rank(s), 2) for n, s in self.spectra.items()},
                "median_significant": float(np.median(list(sig.values()))) if sig else 0.0,
                "bridge_top1_at_r1": {k: [round(float(x), 4) for x in v]
                                      for k, v in self.lens.items()},
                "traced_rows": self.traced_rows,
                # NIE per layer of each restored position (h, r or h, r1, r2)
                "tracing": {k: {lab: [round(float(x), 4) for x in v[:, i]]
                                for i, lab in enumerate(_labels(v.shape[1]))}
                            for k, v in self.tracing.items()},
                # the first layer from which restoring the last input position alone recovers
                # half the effect: where the head entity's information has reached the answer
                "at_answer_from": {k: _first_above(v[:, -1], 0.5)
                                   for k, v in self.tracing.items()}}

    def text(self) -> str:
        s = self.summary()
        lines = [f"injection ({self.kind}): median {s['median_significant']:.0f} significant "
                 f"singular values per delta (> {SIGNIFICANT:.0%} of the largest)"]
        for k, v in s["bridge_top1_at_r1"].items():
            # the last entry reads the model's output at r1, its own answer to (h, r1): the
            # bridge by construction once the first hop is known; the layers before are the test
            lines.append(f"  bridge top-1 at r1 by layer: {k} "
                         f"{' '.join(f'{x:.2f}' for x in v[:-1])} (output {v[-1]:.2f})")
        for k, cols in s["tracing"].items():
            last = list(cols)[-1]
            lines.append(f"  tracing {k} ({s['traced_rows'][k]} rows right): NIE at {last} by "
                         f"layer {' '.join(f'{x:.2f}' for x in cols[last])}; >= 0.5 from layer "
                         f"{s['at_answer_from'][k]}")
        return "\n".join(lines)

    def save(self, run_dir) -> list[Path]:
        arrays = {f"spectrum.{n}": s for n, s in self.spectra.items()}
        arrays.update({f"lens.{k}": v for k, v in self.lens.items()})
        arrays.update({f"tracing.{k}": v for k, v in self.tracing.items()})
        paths = save_arrays(Path(run_dir), NAME, arrays, self.summary())
        plt = pyplot()
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        for s in self.spectra.values():
            if not len(s) or s[0] <= 0:
                continue
            ax[0].semilogy(np.arange(1, len(s) + 1), np.maximum(s / s[0], 1e-8), lw=0.8,
                           alpha=0.6)
        ax[0].axhline(SIGNIFICANT, color="k", ls=":", lw=0.8)
        ax[0].set(xlabel="singular value index", ylabel="s_i / s_1",
                  title=f"{self.kind}: spectra of the learned dW")
        for k, v in self.lens.items():
            ax[1].plot(v, marker="o", label=k)
        ax[1].set(xlabel="layer", ylabel="bridge top-1 at r1", ylim=(0, 1),
                  title="logit lens: bridge entity at r1")
        ax[1].legend(fontsize=8)
        fig.tight_layout()
        paths.append(save_figure(fig, Path(run_dir) / "figures" / f"{NAME}.png"))
        if self.tracing:
            paths.append(self._plot_tracing(Path(run_dir) / "figures" / f"{NAME}_tracing.png"))
        return paths

    def _plot_tracing(self, path: Path) -> Path:
        plt = pyplot()
        names = list(self.tracing)
        fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3.4), squeeze=False)
        for ax, k in zip(axes[0], names):
            v = self.tracing[k]
            im = ax.imshow(v, origin="lower", aspect="auto", cmap="Purples", vmin=0, vmax=1)
            ax.set(xticks=range(v.shape[1]), xticklabels=_labels(v.shape[1]), xlabel="restored position",
                   title=f"{k} ({self.traced_rows[k]})")
        axes[0][0].set_ylabel("layer (resid_pre)")
        fig.colorbar(im, ax=axes[0].tolist(), label="NIE")
        fig.suptitle(f"{self.kind}: ROME tracing, noise on h, rows answered right", fontsize=9)
        return save_figure(fig, path)


def _first_above(x: np.ndarray, level: float) -> int:
    above = np.nonzero(x >= level)[0]
    return int(above[0]) if len(above) else -1


def _labels(n_pos: int) -> tuple[str, ...]:
    return ("h", "r") if n_pos == 2 else ("h", "r1", "r2")[:n_pos]


def run(source, *, n_examples: int = 300, seed: int = 0, tracing: bool = True,
        samples: int = 10, **_) -> InjectionResult:
    """The injection directory ``source``: delta spectra, the bridge lens and (``tracing``)
    ROME tracing of new and old facts."""
    from groklab.rundir import load_run
    from groklab.tasks.new_facts import injection_data

    deltas, cfg = delta_weights(Path(source))
    meta = json.loads((Path(source) / "injection.json").read_text())
    run = load_run(source)
    facts = np.asarray(meta["facts"], dtype=np.int64)
    data = injection_data(run.task, facts, seed=meta["inject"]["seed"],
                          probe_size=n_examples)
    model = run.model()
    lens = {k: bridge_decoding(model, data.probes[k])
            for k in ("compose_first", "compose_second", "test_id") if k in data.probes}
    traced, rows = {}, {}
    for k in TRACED if tracing else ():
        if k in data.probes:
            nie, rows[k] = recall_tracing(model, data.probes[k], samples)
            if nie is not None:
                traced[k] = nie
    return InjectionResult(cfg["kind"], {n: spectrum(d) for n, d in deltas.items()}, lens,
                           traced, {k: rows[k] for k in traced})


def compare_spectra(run_dirs: dict[str, Path], path: Path) -> Path:
    """One panel per map kind (W_Q ... W_out): the median normalised spectrum over layers of
    every injection in ``run_dirs`` (label -> directory with analysis/injection.npz)."""
    plt = pyplot()
    kinds = ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_out")
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3.2), sharey=True)
    for label, d in run_dirs.items():
        with np.load(Path(d) / "analysis" / f"{NAME}.npz", allow_pickle=False) as z:
            for ax, kind in zip(axes, kinds):
                specs = [z[k] / z[k][0] for k in z.files
                         if k.startswith("spectrum.") and k.endswith(kind) and z[k][0] > 0]
                if specs:
                    med = np.median(np.stack(specs), axis=0)
                    ax.semilogy(np.arange(1, len(med) + 1), np.maximum(med, 1e-8), label=label)
    for ax, kind in zip(axes, kinds):
        ax.axhline(SIGNIFICANT, color="k", ls=":", lw=0.8)
        ax.set(title=kind, xlabel="index")
    axes[0].set_ylabel("s_i / s_1 (median over layers)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, Path(path))
