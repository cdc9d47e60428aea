"""Fourier progress measures, the array math (Nanda et al. 2023; docs/methods.md section 4):
the orthonormal Fourier basis of Z_p, squared norm per frequency, the Gini coefficient, neurons'
fractions per frequency and their clusters, and the restricted / excluded loss. Pure numpy /
torch on arrays; :mod:`groklab.analysis.fourier` runs them over checkpoints.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from groklab.analysis.sources import AnalysisError

EXPLAINED = 0.85  # a neuron belongs to a frequency cluster above this fraction (Nanda et al.)
MIN_CLUSTER = 0.01  # a key frequency is dominant for at least this fraction of the neurons
NORM_FRACTION = 0.9  # "frequencies carrying 90% of the embedding's squared norm"


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
    input axis, independently for each output class (docs/methods.md, trap 7).
    """
    L = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(targets, dtype=torch.long)
    p = L.shape[1]
    U = torch.as_tensor(sum_directions(p, key_freqs, sign), dtype=torch.float64)
    proj = U @ (U.T @ L)
    restricted = proj + (L - proj).mean(0, keepdim=True)
    mask = torch.as_tensor(np.asarray(train_mask, dtype=bool))
    return _ce(restricted, y), _ce((L - proj)[mask], y[mask])
