"""The local learning coefficient (LLC) of each checkpoint, estimated with SGLD around it, and
where it moves relative to memorization and generalization (Lau et al. 2023, "The Local
Learning Coefficient"; docs/methods.md section "Local learning coefficient").

    LLC(w*) = n beta (E_w[L_n(w)] - L_n(w*)),

with L_n the mean training loss over n rows and the expectation over the tempered local
posterior exp(-n beta L_n(w) - gamma / 2 ||w - w*||^2), sampled with SGLD:

    w <- w - (eps / 2) (n beta grad L_batch(w) + gamma (w - w*)) + N(0, eps),

the update of devinterp's ``SGMCMC.sgld`` (used when devinterp is installed; otherwise the same
update written here, and tests/test_llc.py checks the two agree step for step). E_w is the mean
minibatch loss over ``draws`` steps after ``burn_in`` steps, per chain; L_n(w*) is the exact
mean loss over the rows at the checkpoint. The loss is the task's training objective (its
loss function: softmax or StableMax cross-entropy, as the run trained). ``nbeta`` defaults to
devinterp's ``default_nbeta``, batch / log(batch); the WBIC temperature beta = 1 / log n gives
n / log n instead (pass it with ``--opt llc.nbeta=...``). The estimate depends on eps, n beta
and gamma: compare checkpoints of one run under one setting, not numbers across settings.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from groklab.analysis.saving import pyplot, save_arrays, save_figure
from groklab.analysis.sources import AnalysisError, open_source, read_saved
from groklab.tasks.base import TaskData

NAME = "llc"


def devinterp_sgld(params, *, lr, nbeta, localization):
    """devinterp's SGLD sampler, or None when devinterp is not installed."""
    try:
        import warnings

        from devinterp.optim import SGMCMC
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SGMCMC.sgld(params, lr=lr, nbeta=nbeta, localization=localization)


class PlainSGLD:
    """The update of devinterp's ``SGMCMC.sgld`` (identity preconditioner, Gaussian prior
    centred at the starting weights), noise drawn per parameter in the same order."""

    def __init__(self, params, *, lr, nbeta, localization):
        self.params = [p for p in params if p.requires_grad]
        self.start = [p.detach().clone() for p in self.params]
        self.lr, self.nbeta, self.gamma = lr, nbeta, localization

    @torch.no_grad()
    def step(self, noise_generator=None):
        for p, w0 in zip(self.params, self.start):
            if p.grad is None:
                continue
            d_p = p.grad * self.nbeta + self.gamma * (p - w0)
            p.add_(d_p, alpha=-0.5 * self.lr)
            p.add_(torch.normal(0.0, 1.0, size=p.shape, generator=noise_generator),
                   alpha=self.lr ** 0.5)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


def make_sampler(params, engine: str, **kw):
    if engine == "devinterp":
        s = devinterp_sgld(params, **kw)
        if s is None:
            raise AnalysisError("llc: engine 'devinterp' needs `pip install groklab[devinterp]`")
        return s
    return PlainSGLD(params, **kw)


def run_loss_fn(src):
    """The run's training loss (StableMax runs score with StableMax)."""
    from groklab.train.accelerators import LOSSES

    name = getattr(getattr(getattr(src.run, "config", None), "train", None), "loss",
                   "cross_entropy")
    return LOSSES.get(name, LOSSES["cross_entropy"])


@torch.no_grad()
def full_loss(model, objective, split, ce, chunk: int = 2048) -> float:
    total = 0.0
    for i in range(0, len(split), chunk):
        b = split.rows(slice(i, i + chunk))
        total += float(objective.loss(objective.forward(model, b), b, ce)) * len(b)
    return total / max(len(split), 1)


def estimate_llc(model, objective, split, ce, *, lr: float, nbeta: float, gamma: float,
                 chains: int, draws: int, burn_in: int, batch_size: int, seed: int,
                 engine: str) -> dict:
    """LLC per chain, the loss traces [chains, draws] and L_n(w*), for one model."""
    init = full_loss(model, objective, split, ce)
    n = len(split)
    traces = np.zeros((chains, draws))
    for c in range(chains):
        m = copy.deepcopy(model).train()
        for mod in m.modules():  # sampling is about the weights: no dropout noise
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        sampler = make_sampler(m.parameters(), engine, lr=lr, nbeta=nbeta, localization=gamma)
        g = torch.Generator().manual_seed(seed * 1000 + c)
        for t in range(burn_in + draws):
            idx = torch.randint(n, (min(batch_size, n),), generator=g)
            b = split.rows(idx)
            loss = objective.loss(objective.forward(m, b), b, ce)
            sampler.zero_grad(set_to_none=True)
            loss.backward()
            sampler.step(noise_generator=g)
            if t >= burn_in:
                traces[c, t - burn_in] = loss.item()
        if not np.isfinite(traces[c]).all():
            raise AnalysisError(f"llc: SGLD diverged (chain {c}); lower --opt llc.lr (now "
                                f"{lr:g}) or raise llc.gamma (now {gamma:g})")
    per_chain = nbeta * (traces.mean(1) - init)
    return {"llc": per_chain, "traces": traces, "init_loss": init}


@dataclass
class LLCResult:
    """``llc`` [checkpoint, chain]; ``traces`` [checkpoint, chain, draw]; ``init_loss``
    [checkpoint]; marks: memorization / generalization steps from summary.json."""

    task: str
    steps: np.ndarray
    llc: np.ndarray
    traces: np.ndarray = field(repr=False)
    init_loss: np.ndarray = field(repr=False)
    settings: dict = field(default_factory=dict)
    marks: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)  # "acc/<split>" -> [[step, value], ...]

    @property
    def mean(self) -> np.ndarray:
        return self.llc.mean(1)

    def text(self) -> str:
        s = self.settings
        lines = [f"local learning coefficient ({self.task}, {len(self.steps)} checkpoints; "
                 f"SGLD via {s.get('engine')}: eps {s.get('lr'):g}, n beta "
                 f"{s.get('nbeta'):.3g}, gamma {s.get('gamma'):g}, {s.get('chains')} chains x "
                 f"{s.get('draws')} draws, n {s.get('n_rows')}):"]
        cells = [f"{int(st)}: {m:.2f}±{sd:.2f}" for st, m, sd in
                 zip(self.steps, self.mean, self.llc.std(1))]
        lines.append("  step: llc  " + ", ".join(cells))
        marks = ", ".join(f"{k} {v}" for k, v in self.marks.items() if v is not None)
        if marks:
            lines.append(f"  marks: {marks}")
        if len(self.steps) > 1:
            i = int(np.argmax(self.mean))
            lines.append(f"  peak at step {int(self.steps[i])} ({self.mean[i]:.2f}); first "
                         f"{self.mean[0]:.2f}, last {self.mean[-1]:.2f}")
        return "\n".join(lines)

    def plot(self):
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        ax.errorbar(self.steps, self.mean, yerr=self.llc.std(1), marker="o", ms=3, capsize=2,
                    label="LLC (mean ± sd over chains)")
        styles = {"memorization_step": ("tab:orange", "memorization"),
                  "generalization_step_id": ("tab:green", "generalization (ID)"),
                  "generalization_step_ood": ("tab:red", "generalization (OOD)")}
        for key, (color, label) in styles.items():
            if self.marks.get(key) is not None:
                ax.axvline(self.marks[key], color=color, ls="--", lw=1, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("estimated LLC")
        if self.curves:  # accuracy on a second axis: where the LLC moves against the curves
            acc = ax.twinx()
            for i, (name, pts) in enumerate(self.curves.items()):
                pts = np.asarray(pts, dtype=float)
                acc.plot(pts[:, 0], pts[:, 1], ":", lw=1, color=f"C{4 + i}", label=name)
            acc.set_ylim(-0.02, 1.02)
            acc.set_ylabel("accuracy")
            acc.legend(fontsize=7, loc="lower right")
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"local learning coefficient over training, {self.task}", fontsize=10)
        fig.tight_layout()
        return fig

    def save(self, run_dir: str | Path) -> list[Path]:
        """RUN/analysis/llc.npz (+ .json) and RUN/figures/llc.png."""
        run_dir = Path(run_dir)
        meta = {"task": self.task, "steps": self.steps.tolist(), "settings": self.settings,
                "marks": self.marks, "curves": self.curves, "llc_mean": [round(float(v), 4) for v in self.mean],
                "llc_std": [round(float(v), 4) for v in self.llc.std(1)]}
        paths = save_arrays(run_dir, NAME, {"steps": self.steps, "llc": self.llc,
                                            "traces": self.traces,
                                            "init_loss": self.init_loss}, meta)
        paths.append(save_figure(self.plot(), run_dir / "figures" / f"{NAME}.png"))
        return paths

    @classmethod
    def load(cls, run_dir: str | Path) -> "LLCResult":
        meta, z = read_saved(run_dir, NAME, "--llc")
        try:
            return cls(meta["task"], z["steps"], z["llc"], z["traces"], z["init_loss"],
                       meta["settings"], meta["marks"], meta.get("curves", {}))
        except (KeyError, TypeError) as e:
            raise AnalysisError(f"'{run_dir}/analysis/{NAME}' lacks {e}; rerun `groklab analyze "
                                f"{run_dir} --llc` to rewrite it") from None


def run(source, *, task: TaskData | None = None, checkpoints="all", lr: float = 1e-4,
        nbeta: float = 0.0, gamma: float = 100.0, chains: int = 4, draws: int = 200,
        burn_in: int = 0, batch_size: int = 256, seed: int = 0, n_rows: int = 0,
        engine: str = "auto", device: str = "cpu") -> LLCResult:
    """LLC at every checkpoint asked for (or of one model with ``task``); ``nbeta`` 0 means
    devinterp's default, batch / log(batch); ``n_rows`` 0: every training row."""
    for name, v in (("lr", lr), ("chains", chains), ("draws", draws), ("batch_size",
                                                                         batch_size)):
        if not v > 0:
            raise AnalysisError(f"llc: {name} must be positive, not {v}")
    if gamma < 0 or nbeta < 0 or burn_in < 0 or n_rows < 0:
        raise AnalysisError("llc: gamma, nbeta, burn_in and n_rows must be >= 0")
    if engine not in ("auto", "devinterp", "groklab"):
        raise AnalysisError(f"llc: engine '{engine}' is not auto, devinterp or groklab")
    if engine == "auto":
        engine = "devinterp" if devinterp_sgld([torch.zeros(1)], lr=1e-3, nbeta=2.0,
                                               localization=0.0) is not None else "groklab"
    src = open_source(source, task=task, checkpoints=checkpoints, device=device)
    task = src.task
    split = task.train
    if n_rows and n_rows < len(split):
        split = split.subset(np.random.RandomState(seed).choice(len(split), n_rows, False))
    b = min(batch_size, len(split))
    nbeta = nbeta or b / math.log(max(b, 2))
    ce = run_loss_fn(src)
    per = []
    for step in src.steps:
        model = src.model_at(step)
        per.append(estimate_llc(model, task.objective, split, ce, lr=lr, nbeta=nbeta,
                                gamma=gamma, chains=chains, draws=draws, burn_in=burn_in,
                                batch_size=b, seed=seed, engine=engine))
    summary = (src.run.summary if src.run is not None else {}) or {}
    marks = {k: summary.get(k) for k in ("memorization_step", "generalization_step_id",
                                         "generalization_step_ood")}
    curves = {}
    metrics = src.run.metrics if src.run is not None else []
    for sp in dict.fromkeys([task.memorization_split, task.id_split, task.ood_split]):
        pts = [[m["step"], m[f"acc/{sp}"]] for m in metrics if sp and f"acc/{sp}" in m]
        if pts:
            curves[f"acc/{sp}"] = pts
    settings = {"engine": engine, "lr": lr, "nbeta": nbeta, "gamma": gamma, "chains": chains,
                "draws": draws, "burn_in": burn_in, "batch_size": b, "seed": seed,
                "n_rows": len(split)}
    return LLCResult(task.name, np.asarray(src.steps, dtype=np.int64),
                     np.stack([p["llc"] for p in per]), np.stack([p["traces"] for p in per]),
                     np.array([p["init_loss"] for p in per]), settings, marks, curves)
