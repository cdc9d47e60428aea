"""Which SAE features track a task variable (composition: the bridge entity; modular: a, b):
single features as detectors of one value, and linear probes on the codes, batched over
features, values and hook points (docs/methods.md section "Sparse autoencoders").

For a variable with values v and SAE codes f [rows, features], on a fixed half of the rows
(fit) and the other half (test):

* ``feature_f1``: for each value v, the feature j whose firing (f_j > 0) best predicts
  "variable == v" by F1 on the fit half; reported: its F1 on the test half, averaged over
  values (``best_feature_f1``), and the single best (feature, value) pair;
* ``feature_decoder_acc``: predict the value whose chosen feature is most active (one feature
  per value, chosen on the fit half): test accuracy. A dictionary where one feature per entity
  fires for that entity scores near 1; chance is about 1 / values;
* ``probe_acc``: a ridge-regularised least-squares one-vs-all linear probe on the codes
  (closed form), test accuracy; ``raw_probe_acc`` is the same probe on the activations the SAE
  encodes, the ceiling a linear readout of the stream reaches; ``chance`` the majority value's
  test frequency.
"""

from __future__ import annotations

import numpy as np
import torch

MEASURES = ("best_feature_f1", "feature_decoder_acc", "probe_acc", "raw_probe_acc", "chance")


def task_variables(meta: dict[str, np.ndarray], task_name: str) -> dict[str, np.ndarray]:
    """The variables a probe should find: composition's bridge entity, modular's a and b,
    else every 1-D integer meta array with at least two values (-1 marks rows without one)."""
    wanted = {"composition": ("bridge",), "modular": ("a", "b")}.get(task_name)
    out = {}
    for name, v in meta.items():
        v = np.asarray(v)
        if v.ndim != 1 or not np.issubdtype(v.dtype, np.integer) or name == "kind":
            continue
        if wanted is not None and name not in wanted:
            continue
        if len(np.unique(v[v >= 0])) >= 2:
            out[name] = v
    return out


def _f1(active: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """F1 of every feature (columns of ``active`` [n, m]) for every value (columns of the
    one-hot ``Y`` [n, C]): [m, C]."""
    tp = active.T @ Y
    return 2 * tp / (active.sum(0)[:, None] + Y.sum(0)[None]).clamp_min(1)


def _ridge_acc(Xf, Yf, Xt, yt, lam=1e-2) -> float:
    mu = Xf.mean(0)
    Xf, Xt = Xf - mu, Xt - mu
    scale = Xf.pow(2).sum(0).mean().clamp_min(1e-12)
    A = Xf.T @ Xf + lam * scale * torch.eye(Xf.shape[1], dtype=Xf.dtype)
    W = torch.linalg.solve(A, Xf.T @ (Yf - Yf.mean(0)))
    return float(((Xt @ W).argmax(1) == yt).double().mean())


@torch.no_grad()
def probe_variable(codes: torch.Tensor, acts: torch.Tensor, labels: np.ndarray,
                   seed: int = 0) -> dict:
    """codes [n, m], acts [n, d] (one hook point), labels [n] (-1: no value). Measures above,
    plus ``best_feature``, ``best_value``."""
    keep = np.flatnonzero(labels >= 0)
    perm = keep[np.random.RandomState(seed).permutation(len(keep))]
    fit, test = perm[: len(perm) // 2], perm[len(perm) // 2:]
    values, y = np.unique(labels[keep], return_inverse=True)
    y_of = dict(zip(keep.tolist(), y.tolist()))
    yf = torch.tensor([y_of[i] for i in fit])
    yt = torch.tensor([y_of[i] for i in test])
    C = len(values)
    Yf = torch.nn.functional.one_hot(yf, C).double()
    Yt = torch.nn.functional.one_hot(yt, C).double()
    cf, ct = codes[fit].double(), codes[test].double()
    f1_fit = _f1((cf > 0).double(), Yf)  # [m, C]
    best = f1_fit.argmax(0)  # [C]: the feature chosen for each value
    f1_test = _f1((ct > 0).double(), Yt)[best, torch.arange(C)]
    present = Yt.sum(0) > 0
    j = int(f1_test.masked_fill(~present, -1).argmax())
    decoded = ct[:, best].argmax(1)
    counts = np.bincount(yt.numpy(), minlength=C)
    return {"best_feature_f1": float(f1_test[present].mean()) if present.any() else 0.0,
            "feature_decoder_acc": float((decoded == yt).double().mean()),
            "probe_acc": _ridge_acc(cf, Yf, ct, yt),
            "raw_probe_acc": _ridge_acc(acts[fit].double(), Yf, acts[test].double(), yt),
            "chance": float(counts.max() / max(len(yt), 1)),
            "best_feature": int(best[j]), "best_value": int(values[j]),
            "best_pair_f1": float(f1_test[j]), "n_values": int(C), "n_rows": int(len(keep))}
