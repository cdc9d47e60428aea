"""Fourier progress measures (Nanda et al. 2023): the basis, key-frequency detection on hand-built
weights and activations, the limits of restricted and excluded loss, and a real grokking run
analysed end to end through the CLI."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from groklab.analysis import fourier
from groklab.cli import app
from groklab.config import load_config
from groklab.train.loop import Run


@pytest.mark.parametrize("p", [7, 8, 113])
def test_basis_is_orthonormal_with_norm_sqrt_p_over_2_before_scaling(p):
    B, freqs, names = fourier.fourier_basis(p)
    assert B.shape == (p, p)
    np.testing.assert_allclose(B @ B.T, np.eye(p), atol=1e-12)
    assert names[:3] == ["const", "cos 1", "sin 1"] and freqs.max() == p // 2
    x = np.arange(p)
    # cos 1 is cos(2 pi x / p) divided by sqrt(p/2), not sqrt(p) (trap 8).
    np.testing.assert_allclose(B[1], np.cos(2 * np.pi * x / p) / math.sqrt(p / 2), atol=1e-12)
    if p % 2 == 0:
        assert names[-1] == f"cos {p // 2}"  # even p needs the cos(pi x) row


def test_gini_limits():
    assert fourier.gini(np.ones(10)) == pytest.approx(0.0)
    assert fourier.gini(np.eye(10)[3]) == pytest.approx(0.9)  # (n - 1) / n


def test_key_frequencies_of_a_hand_built_embedding():
    p, d, keys = 59, 32, [4, 17, 23]
    rng = np.random.default_rng(0)
    x = np.arange(p)[:, None]
    W_E = sum(np.cos(2 * np.pi * k * x / p + rng.uniform(0, 2 * np.pi, d)) * rng.normal(size=d)
              for k in keys)
    W_E = W_E + 0.01 * rng.normal(size=(p, d))
    B, freqs, _ = fourier.fourier_basis(p)
    energy = fourier.frequency_energy(B @ W_E, freqs)
    assert set(np.argsort(energy)[-3:]) == set(keys)
    assert fourier.n_frequencies_for(energy) == 3
    assert fourier.gini(np.linalg.norm(B @ W_E, axis=1)) > 0.85
    dense = fourier.frequency_energy(B @ rng.normal(size=(p, d)), freqs)
    assert fourier.n_frequencies_for(dense) > 15


def test_neuron_clusters_recover_known_frequencies():
    p = 31
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    rng = np.random.default_rng(1)
    neurons = []
    for i in range(40):  # 20 neurons on frequency 5, 20 on 12: cos/sin(w (a+b)) and w a terms
        k = 5 if i < 20 else 12
        w = 2 * np.pi * k / p
        neurons.append(np.cos(w * (a + b) + rng.uniform(0, 6)) + 0.5 * np.sin(w * a) + 2.0)
    neurons += [rng.normal(size=(p, p)) for _ in range(10)]  # noise: the residual cluster
    acts = torch.tensor(np.stack(neurons, -1), dtype=torch.float32)
    B, freqs, _ = fourier.fourier_basis(p)
    frac = fourier.neuron_frequency_fractions(acts, B, freqs)
    cluster, explained, key = fourier.cluster_neurons(frac)
    assert key.tolist() == [5, 12]
    assert (cluster[:20] == 5).all() and (cluster[20:40] == 12).all() and (cluster[40:] == 0).all()
    assert explained[:40].min() > 0.99
    np.testing.assert_allclose(frac.sum(0)[:40], 1.0, atol=1e-5)  # pure frequency-k neurons


def _grid_targets(p, sign=1):
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    return torch.tensor(((a + sign * b) % p).reshape(-1))


def test_restricted_and_excluded_loss_limits():
    p = 23
    rng = np.random.default_rng(2)
    y = _grid_targets(p)
    train = rng.random(p * p) < 0.3
    all_freqs = list(range(1, (p - 1) // 2 + 1))
    s = y.numpy()
    # Logits that depend on the input only through a + b, plus a per-class bias.
    f = rng.normal(size=(p, p)) * 3
    logits = torch.tensor(f[s] + rng.normal(size=p))
    full_all = F.cross_entropy(logits, y).item()
    full_train = F.cross_entropy(logits[train], y[train]).item()
    restricted, excluded = fourier.restricted_and_excluded_loss(logits, y, train, all_freqs)
    assert restricted == pytest.approx(full_all, rel=1e-9)  # every frequency: nothing removed
    restricted0, excluded0 = fourier.restricted_and_excluded_loss(logits, y, train, [])
    assert excluded0 == pytest.approx(full_train, rel=1e-12)  # no key frequency: nothing removed
    # ... and the restricted loss with nothing kept is the loss of the per-class means alone.
    means = logits.mean(0, keepdim=True).expand_as(logits)
    assert restricted0 == pytest.approx(F.cross_entropy(means, y).item(), rel=1e-9)
    # Generic logits do not depend on a + b alone: the restricted loss changes them.
    noise = torch.tensor(rng.normal(size=(p * p, p)) * 3)
    r_noise, _ = fourier.restricted_and_excluded_loss(noise, y, train, all_freqs)
    assert abs(r_noise - F.cross_entropy(noise, y).item()) > 0.1


def test_projection_runs_along_the_input_axis():
    """The ideal circuit for one frequency, times an arbitrary (non-sparse) output profile: the
    restricted loss keeps it all and the excluded loss removes it all (trap 7). Projecting along
    the output axis instead would not."""
    p, k = 29, 6
    rng = np.random.default_rng(3)
    y = _grid_targets(p)
    s = y.numpy()
    w = 2 * np.pi * k / p
    logits = torch.tensor(np.outer(np.cos(w * s), rng.normal(size=p) * 4))
    train = np.ones(p * p, dtype=bool)
    restricted, excluded = fourier.restricted_and_excluded_loss(logits, y, train, [k])
    assert restricted == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-9)
    assert excluded == pytest.approx(math.log(p), rel=1e-9)  # nothing left: uniform logits
    # Subtraction uses cos/sin(w (a - b)): the "+" directions do not capture it.
    y_minus = _grid_targets(p, -1)
    lm = torch.tensor(np.outer(np.cos(w * y_minus.numpy()), rng.normal(size=p) * 4))
    r_minus, _ = fourier.restricted_and_excluded_loss(lm, y_minus, train, [k], sign=-1)
    r_wrong, _ = fourier.restricted_and_excluded_loss(lm, y_minus, train, [k], sign=1)
    assert r_minus == pytest.approx(F.cross_entropy(lm, y_minus).item(), rel=1e-9)
    assert abs(r_wrong - r_minus) > 0.1


# --------------------------------------------------------------------------- a real run

GROK_SETS = [  # the Nanda model at p=41, tuned to grok in a few hundred full-batch steps
    "task.p=41", "task.train_fraction=0.5", "model.d_vocab_out=41", "model.d_model=64",
    "model.d_mlp=256", "train.lr=3e-3", "train.weight_decay=5", "train.steps=450",
    "train.eval_every=25", "train.checkpoint_every=25", "train.checkpoint_per_decade=2",
]


@pytest.fixture(scope="module")
def grokked(tmp_path_factory):
    out = tmp_path_factory.mktemp("fourier") / "nanda41"
    torch.manual_seed(0)
    t0 = time.process_time()
    summary = Run.start(load_config("modular-nanda", None, GROK_SETS), out).train()
    return out, summary, time.process_time() - t0


def test_small_modular_run_groks_on_cpu(grokked):
    out, summary, cpu_seconds = grokked
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["acc/test"] < 0.1  # chance is 1/41
    mem = summary["memorization_step"]
    gen = summary["thresholds"]["test"]["0.95"]
    assert mem is not None and gen is not None and gen > mem, summary["thresholds"]
    assert summary["final"]["test"] >= 0.97, summary["final"]
    # CPU time, not wall time: the machine may be shared. ~15 CPU-seconds on this 2-core CPU.


def test_fourier_analysis_of_the_grokked_run_through_the_cli(grokked):
    out, summary, _ = grokked
    result = CliRunner().invoke(app, ["analyze", str(out), "--fourier"])
    assert result.exit_code == 0, result.output
    assert "key frequencies" in result.output
    data = np.load(out / "analysis" / "fourier.npz")
    info = json.loads((out / "analysis" / "fourier.json").read_text())
    for name in ("progress", "spectra", "neurons"):
        assert (out / "figures" / f"fourier_{name}.png").stat().st_size > 10_000
    steps = data["steps"]
    assert steps[0] == 0 and steps[-1] == 450 and len(steps) == data["test_loss"].shape[0]
    # The analysis' own accuracies agree with the trainer's log at the last step.
    assert data["test_acc"][-1] == pytest.approx(summary["final"]["test"], abs=1e-6)
    # The grokked model: a few key frequencies, a sparse embedding, a circuit that explains it.
    assert 1 <= len(info["key_freqs"]) <= 8
    assert info["final"]["embed_n_freq_90"] <= 8 < data["embed_n_freq_90"][0]
    assert data["gini_embed"][-1] > data["gini_embed"][0] + 0.2
    assert data["restricted_loss"][-1] < 0.5 < data["restricted_loss"][0]
    assert data["excluded_loss"][-1] > 10 * data["train_loss"][-1]
    assert info["step_memorized"] is not None and info["step_generalized"] is not None


def test_analyze_refuses_what_it_cannot_do(tmp_path, grokked):
    runner = CliRunner()
    r = runner.invoke(app, ["analyze", str(grokked[0])])
    assert r.exit_code == 2 and "--fourier" in r.output
    r = runner.invoke(app, ["analyze", str(tmp_path / "nothing"), "--fourier"])
    assert r.exit_code == 2 and "not a groklab run directory" in r.output
    parity = tmp_path / "parity"
    Run.start(load_config("parity", None, ["task.n_bits=6", "task.n_train=20", "train.steps=2",
                                           "model.d_mlp=8"]), parity).train()
    r = runner.invoke(app, ["analyze", str(parity), "--fourier"])
    assert r.exit_code == 2 and "needs a modular task" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (parity / "analysis").exists() and not (parity / "figures").exists()
