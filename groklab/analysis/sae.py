"""Sparse autoencoders on a run's activations, at the checkpoints asked for (default: the
last): L0, explained variance, dead features, the loss recovered when the reconstruction is
spliced into the model, the top inputs of every feature, which features track the task's
variables, and every SAE saved in SAELens' format (docs/methods.md section "Sparse
autoencoders").

Per checkpoint: the activations of every hook asked for (``hooks``, default the middle
residual stream ``blocks.{n_layers // 2}.hook_resid_pre``; one layer: ``hook_resid_mid``) at
``position`` ("answer", "all" positions up to the answer, or one index: composition's r1 is 1)
are collected from the training rows in chunks of forward passes, for that checkpoint only;
hook points of one width train as one :class:`~groklab.analysis.sae_train.SAEBank` (stacked weights, bmm). Measures are
on ``eval_rows`` rows of a probe split (default: train_inferred where the task has it):

* ``l0``, ``explained_variance`` (1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)), ``dead`` (the
  fraction of features that never fire on those rows);
* ``ce_clean``, ``ce_sae``, ``ce_zero``: the task loss (softmax cross-entropy of the answer)
  clean, with the SAE's reconstruction spliced in at the hook and positions, and with those
  activations zeroed; ``ce_score`` = (ce_zero - ce_sae) / (ce_zero - ce_clean) (SAELens' and
  Anthropic's "loss recovered"); ``acc_clean`` / ``acc_sae``. All hook points in one forward
  pass: the rows are repeated once per hook point and each hook edits only its own copy;
* the variables' probes of :mod:`groklab.analysis.sae_probe` and each feature's top rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from groklab.analysis.sae_probe import MEASURES, probe_variable, task_variables
from groklab.analysis.sae_train import SAEBank, SAEConfig, evaluate, train_bank
from groklab.analysis.saving import pyplot, save_arrays, save_figure
from groklab.analysis.sources import (
    AnalysisError,
    open_source,
    probe_sample,
    read_saved,
    require_transformer,
)
from groklab.tasks.base import Split, TaskData

NAME = "sae"
TOP_K = 5
SCALARS = ("l0", "explained_variance", "dead", "mse", "ce_clean", "ce_sae", "ce_zero",
           "ce_score", "acc_clean", "acc_sae", "train_steps_per_s")


def default_hook(model) -> str:
    """The middle of the residual stream; a one-layer model's is between attention and MLP
    (its block input at the answer is only that token's embedding)."""
    n = model.cfg.n_effective_layers
    if n == 1 and "blocks.0.hook_resid_mid" in model.hook_dict:
        return "blocks.0.hook_resid_mid"
    return f"blocks.{n // 2}.hook_resid_pre"


def check_hooks(model, hooks) -> list[str]:
    names = [h.strip() for h in (hooks.split(",") if isinstance(hooks, str) else hooks or [])
             if h.strip()] or [default_hook(model)]
    missing = [h for h in names if h not in model.hook_dict]
    grids = [h for h in names if h.endswith(("hook_pattern", "hook_attn_scores"))]
    if grids:
        raise AnalysisError(f"sae: {grids} are [query, key] grids, not per-position vectors; "
                            "use a residual, MLP or attention-output hook")
    if missing:
        resid = [n for n in model.hook_dict if "resid" in n][:6]
        raise AnalysisError(f"sae: no hook point {missing} in this model; e.g. "
                            f"{', '.join(resid)} (model.hook_dict lists all)")
    return list(dict.fromkeys(names))


def check_position(position, seq_len: int):
    if position in ("answer", "all"):
        return position
    try:
        p = int(position)
    except (TypeError, ValueError):
        p = None
    if p is None or not 0 <= p < seq_len:
        raise AnalysisError(f"sae: position '{position}' is not answer, all or an index in "
                            f"0..{seq_len - 1}")
    return p


@torch.no_grad()
def collect(model, split: Split, hooks: list[str], position, chunk: int = 512,
            max_rows: int | None = None) -> torch.Tensor:
    """[hooks, vectors, d] float32: each chunk's forward pass keeps only the hook points
    asked for, reduced to the positions asked for, before the next chunk runs."""
    n = len(split) if max_rows is None else min(len(split), max_rows)
    parts = []
    for i in range(0, n, chunk):
        b = split.rows(slice(i, min(i + chunk, n)))
        _, cache = model.run_with_cache(b.inputs, names_filter=hooks)
        # per-head hooks (hook_z: [b, pos, heads, d_head]) flatten as SAELens' hook_z mode does
        a = torch.stack([cache[h].flatten(2) for h in hooks]).float()  # [H, b, pos, d]
        rows = torch.arange(a.shape[1])
        ap = b.answer_pos if b.answer_pos is not None else torch.full_like(rows, a.shape[2] - 1)
        if position == "answer":
            parts.append(a[:, rows, ap])
        elif position == "all":
            parts.append(a[:, torch.arange(a.shape[2])[None] <= ap[:, None]])
        else:
            parts.append(a[:, :, position])
        del cache, a
    return torch.cat(parts, 1)


def _positions_mask(inputs, answer_pos, position) -> torch.Tensor:
    n, P = inputs.shape
    ap = answer_pos if answer_pos is not None else torch.full((n,), P - 1)
    if position == "answer":
        return torch.arange(P)[None] == ap[:, None]
    if position == "all":
        return torch.ones(n, P, dtype=torch.bool)
    return (torch.arange(P) == position)[None].expand(n, P)


@torch.no_grad()
def spliced_loss(model, task: TaskData, ex: Split, hooks: list[str], position,
                 saes: dict[str, tuple[SAEBank, int]]) -> dict[str, np.ndarray]:
    """Clean, SAE-spliced and zero-ablated task loss and accuracy per hook point."""
    H, n = len(hooks), len(ex)
    inputs = ex.inputs.repeat(H, 1)
    ap = None if ex.answer_pos is None else ex.answer_pos.repeat(H)
    mask = _positions_mask(inputs, ap, position)  # [H n, P]

    def run(mode):
        def edit(h):
            block = slice(h * n, (h + 1) * n)

            def fn(act, hook):
                act = act.clone()
                m = mask[block]
                x = act[block][m]  # [vectors, d] (or [vectors, heads, d_head])
                if mode == "zero":
                    new = torch.zeros_like(x)
                else:
                    bank, j = saes[hooks[h]]
                    X = x.flatten(1)[None].expand(bank.n, -1, -1).float()
                    new = bank(X)[j].to(x.dtype).view_as(x)
                part = act[block]
                part[m] = new
                act[block] = part
                return act
            return fn
        hooks_ = [] if mode == "clean" else [(hk, edit(h)) for h, hk in enumerate(hooks)]
        out = model.run_with_hooks(inputs, *([] if ap is None else [ap]), fwd_hooks=hooks_)
        targets = ex.targets.repeat(H, *[1] * (ex.targets.dim() - 1))
        if out.dim() == 3:  # sequence objectives: every scored token
            valid = targets >= 0
            per = F.cross_entropy(out.flatten(0, 1).float(), targets.clamp(min=0).flatten(),
                                  reduction="none").view(targets.shape)
            loss = (per * valid).sum(1) / valid.sum(1).clamp(min=1)
            right = ((out.argmax(-1) == targets) | ~valid).all(1).double()
        else:
            loss = F.cross_entropy(out.float(), targets, reduction="none")
            right = (out.argmax(-1) == targets).double()
        return loss.view(H, n).mean(1).numpy(), right.view(H, n).mean(1).numpy()

    (clean, acc_clean), (sae, acc_sae), (zero, _) = run("clean"), run("sae"), run("zero")
    denom = zero - clean
    score = np.where(np.abs(denom) > 1e-6, (zero - sae) / np.where(denom == 0, 1, denom),
                     np.nan)
    return {"ce_clean": clean, "ce_sae": sae, "ce_zero": zero, "ce_score": score,
            "acc_clean": acc_clean, "acc_sae": acc_sae}


@dataclass
class SAEResult:
    """``scalars[name]`` [checkpoint, hook]; ``per_hook["hook/what"]`` [checkpoint, ...]
    (frequency [C, d_sae], top_rows / top_values [C, d_sae, k]); ``probes["var.measure"]``
    [checkpoint, hook]; ``saes[(step, hook)]`` = (bank, member) for saving."""

    task: str
    steps: np.ndarray
    hooks: list[str]
    position: object
    split: str
    config: dict
    scalars: dict[str, np.ndarray] = field(repr=False)
    per_hook: dict[str, np.ndarray] = field(repr=False)
    probes: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    best: dict = field(default_factory=dict)  # var -> hook -> best pair at the last step
    example_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    saes: dict = field(default_factory=dict, repr=False)
    model_name: str = "groklab"
    context_size: int = 0
    vocab_tokens: list[str] = field(default_factory=list)

    def text(self) -> str:
        s = self.scalars
        lines = [f"sparse autoencoders ({self.task}, {self.config['kind']}, d_sae "
                 f"{self.config['d_sae']}, position {self.position}, {len(self.steps)} "
                 f"checkpoint(s); last step {int(self.steps[-1])}):"]
        for h, hook in enumerate(self.hooks):
            lines.append(
                f"  {hook}: L0 {s['l0'][-1, h]:.1f}, explained variance "
                f"{s['explained_variance'][-1, h]:.3f}, dead {s['dead'][-1, h]:.1%}, loss "
                f"recovered {s['ce_score'][-1, h]:.3f} (ce clean {s['ce_clean'][-1, h]:.3f}, "
                f"SAE {s['ce_sae'][-1, h]:.3f}, zero {s['ce_zero'][-1, h]:.3f}; acc "
                f"{s['acc_clean'][-1, h]:.3f} -> {s['acc_sae'][-1, h]:.3f})")
            for var, by_hook in self.best.items():
                b = by_hook.get(hook)
                if b is None:
                    continue
                p = {m: self.probes[f"{var}.{m}"][-1, h] for m in MEASURES}
                lines.append(
                    f"    {var} ({b['n_values']} values): best feature {b['best_feature']} "
                    f"for {var}={b['best_value']} F1 {b['best_pair_f1']:.3f}; mean best-"
                    f"feature F1 {p['best_feature_f1']:.3f}; one-feature-per-value decoder acc "
                    f"{p['feature_decoder_acc']:.3f}; linear probe on codes "
                    f"{p['probe_acc']:.3f} (raw activations {p['raw_probe_acc']:.3f}, chance "
                    f"{p['chance']:.3f})")
        return "\n".join(lines)

    def plot(self):
        plt = pyplot()
        probes = sorted({k.split(".")[0] for k in self.probes})
        fig, axes = plt.subplots(1, 4 + bool(probes), figsize=(13 + 3 * bool(probes), 3.2))
        for ax, key, title in zip(axes, ("l0", "explained_variance", "ce_score"),
                                  ("L0", "explained variance", "loss recovered")):
            for h, hook in enumerate(self.hooks):
                ax.plot(self.steps, self.scalars[key][:, h], marker="o", ms=3, label=hook)
            ax.set_xlabel("checkpoint step")
            ax.set_title(title, fontsize=9)
        axes[0].legend(fontsize=6)
        for hook in self.hooks:
            freq = self.per_hook[f"{hook}/frequency"][-1]
            axes[3].hist(np.log10(freq[freq > 0]), bins=30, alpha=0.6, label=hook)
        axes[3].set_xlabel("log10 feature firing frequency (last step)")
        axes[3].set_title("feature density", fontsize=9)
        for var in probes[:2]:  # the variables' probes: linear on codes, one feature per value
            for h, hook in enumerate(self.hooks):
                for meas, style in (("probe_acc", "-"), ("feature_decoder_acc", ":")):
                    axes[4].plot(self.steps, self.probes[f"{var}.{meas}"][:, h], style,
                                 marker="o", ms=3, color=f"C{h}", label=f"{var} {meas} {hook}")
            axes[4].set_title("decoding " + ", ".join(probes[:2]) + " from codes", fontsize=9)
            axes[4].set_xlabel("checkpoint step")
            axes[4].legend(fontsize=5)
        fig.suptitle(f"sparse autoencoders ({self.config['kind']}), {self.task}", fontsize=10)
        fig.tight_layout()
        return fig

    def save(self, run_dir: str | Path) -> list[Path]:
        """RUN/analysis/sae.npz (+ .json), RUN/figures/sae.png and one SAELens folder per
        (checkpoint, hook): RUN/analysis/sae/step_<S>/<hook>/{cfg.json,
        sae_weights.safetensors}."""
        from groklab.analysis.sae_format import save_sae

        run_dir = Path(run_dir)
        folders = {}
        for (step, hook), (bank, j) in self.saes.items():
            folder = run_dir / "analysis" / NAME / f"step_{step}" / hook
            save_sae(folder, bank, j, hook_name=hook, model_name=self.model_name,
                     context_size=self.context_size,
                     extra={"run": str(run_dir), "step": int(step), "position": self.position})
            folders[f"{step}/{hook}"] = str(folder.relative_to(run_dir))
        meta = {"task": self.task, "steps": self.steps.tolist(), "hooks": self.hooks,
                "position": self.position, "split": self.split, "config": self.config,
                "best": self.best, "saelens_folders": folders, "model_name": self.model_name,
                "context_size": self.context_size, "vocab_tokens": self.vocab_tokens,
                "final": {k: [round(float(v), 4) for v in a[-1]] for k, a in
                          {**self.scalars, **self.probes}.items()}}
        arrays = {"steps": self.steps, "example_index": self.example_index, **self.scalars,
                  **{f"per_hook/{k}": v for k, v in self.per_hook.items()},
                  **{f"probe/{k}": v for k, v in self.probes.items()}}
        paths = save_arrays(run_dir, NAME, arrays, meta)
        paths.append(save_figure(self.plot(), run_dir / "figures" / f"{NAME}.png"))
        return paths + [run_dir / f for f in folders.values()]

    @classmethod
    def load(cls, run_dir: str | Path) -> "SAEResult":
        meta, z = read_saved(run_dir, NAME, "--sae")
        try:
            return cls(meta["task"], z["steps"], meta["hooks"], meta["position"],
                       meta["split"], meta["config"],
                       {k: z[k] for k in SCALARS},
                       {k[9:]: v for k, v in z.items() if k.startswith("per_hook/")},
                       {k[6:]: v for k, v in z.items() if k.startswith("probe/")},
                       meta["best"], z["example_index"], {}, meta["model_name"],
                       meta["context_size"], meta.get("vocab_tokens", []))
        except (KeyError, TypeError) as e:
            raise AnalysisError(f"'{run_dir}/analysis/{NAME}' lacks {e}; rerun `groklab analyze "
                                f"{run_dir} --sae` to rewrite it") from None


def run(source, *, task: TaskData | None = None, checkpoints="last", hooks=None,
        position="answer", kind: str = "topk", d_sae: int = 0, expansion: float = 8.0,
        k: float = 16.0, l1: float = 1.0, l0: float = 1.0, steps: int = 2000,
        batch_size: int = 256, lr: float = 3e-4, seed: int = 0, split: str | None = None,
        eval_rows: int = 2000, max_rows: int = 200_000, device: str = "cpu",
        log=None) -> SAEResult:
    """Train and measure SAEs at every checkpoint asked for (or on one model with ``task``)."""
    if eval_rows < 10 or max_rows < 1:
        raise AnalysisError(f"sae: eval_rows must be >= 10 and max_rows >= 1 (got {eval_rows}, "
                            f"{max_rows})")
    src = open_source(source, task=task, checkpoints=checkpoints, device=device)
    task = src.task
    first = src.model_at(src.steps[0])
    require_transformer(first, "sae")
    hooks = check_hooks(first, hooks)
    position = check_position(position, task.seq_len)
    split, ex, idx = probe_sample(task, split, eval_rows, seed)
    variables = task_variables(ex.meta, task.name)
    widths = {}
    for h in hooks:  # the hook's width, from one row
        widths[h] = collect(first, ex.rows(slice(0, 1)), [h], position).shape[-1]
    try:
        base = SAEConfig(kind=kind, d_in=1, d_sae=1, k=k, l1=l1, l0=l0, steps=steps,
                         batch_size=batch_size, lr=lr, seed=seed)
        sizes = {h: int(d_sae) or max(1, int(round(expansion * w))) for h, w in widths.items()}
        for h in hooks:
            SAEConfig(**{**base.to_dict(), "d_in": widths[h], "d_sae": sizes[h]}).check()
    except ValueError as e:
        raise AnalysisError(f"sae: {e}") from None
    groups: dict[tuple[int, int], list[str]] = {}
    for h in hooks:
        groups.setdefault((widths[h], sizes[h]), []).append(h)
    per: dict[str, list] = {}
    saes = {}
    best: dict = {}
    for step in src.steps:
        model = src.model_at(step)
        row = {}
        for (w, m), hs in groups.items():
            acts = collect(model, task.train, hs, position, max_rows=max_rows)
            cfg = SAEConfig(**{**base.to_dict(), "d_in": w, "d_sae": m})
            bank, info = train_bank(acts, cfg, log=log)
            del acts
            ev_acts = collect(model, ex, hs, position)
            ev = evaluate(bank, ev_acts)
            codes = torch.cat([bank.encode(ev_acts[:, i: i + 4096])
                               for i in range(0, ev_acts.shape[1], 4096)], 1).detach()
            for j, h in enumerate(hs):
                saes[(int(step), h)] = (bank, j)
                row[h] = {key: float(ev[key][j]) for key in ("l0", "explained_variance",
                                                             "dead", "mse")}
                row[h]["train_steps_per_s"] = info["steps_per_s"]
                per.setdefault(f"{h}/frequency", []).append(ev["frequency"][j].float().numpy())
                kk = min(TOP_K, codes.shape[1])
                top = codes[j].topk(kk, dim=0)
                per.setdefault(f"{h}/top_rows", []).append(top.indices.T.numpy().astype(np.int32))
                per.setdefault(f"{h}/top_values", []).append(top.values.T.numpy())
                if position == "all":
                    continue  # vectors are not rows: the variables label rows
                for var, labels in variables.items():
                    r = probe_variable(codes[j], ev_acts[j], labels, seed)
                    for meas in MEASURES:
                        row[h][f"probe/{var}.{meas}"] = r[meas]
                    best.setdefault(var, {})[h] = {key: r[key] for key in (
                        "best_feature", "best_value", "best_pair_f1", "n_values", "n_rows")}
        ce = spliced_loss(model, task, ex, hooks, position, saes_at(saes, step, hooks))
        for i, h in enumerate(hooks):
            row[h].update({key: float(v[i]) for key, v in ce.items()})
        for key in row[hooks[0]]:
            per.setdefault(key, []).append(np.array([row[h].get(key, np.nan) for h in hooks]))
    stacked = {k_: np.stack(v) for k_, v in per.items()}
    config = {**base.to_dict(), "d_sae": sizes[hooks[0]], "d_sae_by_hook": sizes,
              "expansion": expansion, "max_rows": max_rows, "eval_rows": eval_rows}
    return SAEResult(
        task.name, np.asarray(src.steps, dtype=np.int64), hooks, position, split, config,
        {k_: stacked[k_] for k_ in SCALARS},
        {k_: v for k_, v in stacked.items() if "/" in k_ and not k_.startswith("probe/")},
        {k_[6:]: v for k_, v in stacked.items() if k_.startswith("probe/")}, best, idx, saes,
        model_name=f"groklab/{getattr(src.run_dir, 'name', 'model')}",
        context_size=task.seq_len, vocab_tokens=list(task.vocab.tokens))


def saes_at(saes: dict, step, hooks) -> dict[str, tuple[SAEBank, int]]:
    return {h: saes[(int(step), h)] for h in hooks}
