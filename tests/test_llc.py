"""Local learning coefficient: on a regular model (linear regression, Gaussian noise) the LLC is
d / 2, so the SGLD estimate must land near 1 for d = 2 and near 4 for d = 8; the fallback
sampler is devinterp's update step for step; `groklab analyze --llc` runs over checkpoints."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from groklab.analysis import llc
from groklab.cli import app
from groklab.tasks.base import Split


class GaussianRegression:
    """Negative log-likelihood (up to a constant) of y ~ N(w x, 1): a regular model whose
    learning coefficient is half its parameter count."""

    def forward(self, model, batch):
        return model(batch.inputs).squeeze(-1)

    def loss(self, out, batch, ce):
        return 0.5 * (out - batch.targets).pow(2).mean()


def regression(d, n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, generator=g) + torch.randn(n, generator=g)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():  # w* = the least-squares optimum
        model.weight.copy_(torch.linalg.lstsq(x, y[:, None]).solution.T)
    return model, Split(x, None, y)


def test_llc_of_linear_regression_is_half_the_parameter_count():
    # the built-in sampler; test_fallback_sampler_is_devinterps_update ties it to devinterp's
    estimates = {}
    for d in (2, 8):
        model, split = regression(d)
        n = len(split)
        r = llc.estimate_llc(model, GaussianRegression(), split, None, lr=5e-4,
                             nbeta=n / math.log(n), gamma=1.0, chains=2, draws=1000,
                             burn_in=200, batch_size=n, seed=0, engine="groklab")
        assert np.isfinite(r["llc"]).all() and (r["llc"] > 0).all()
        estimates[d] = r["llc"].mean()
    assert estimates[2] == pytest.approx(1.0, rel=0.25), estimates
    assert estimates[8] == pytest.approx(4.0, rel=0.25), estimates


def test_fallback_sampler_is_devinterps_update():
    pytest.importorskip("devinterp")
    out = []
    for engine in ("devinterp", "groklab"):
        model, split = regression(3, n=100)
        s = llc.make_sampler(model.parameters(), engine, lr=1e-2, nbeta=20.0, localization=5.0)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            loss = GaussianRegression().loss(model(split.inputs).squeeze(-1), split, None)
            s.zero_grad(set_to_none=True)
            loss.backward()
            s.step(noise_generator=g)
        out.append(model.weight.detach().clone())
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-6)


def test_analyze_llc_over_checkpoints(tmp_path):
    from groklab.config import load_config
    from groklab.train import Run

    run_dir = tmp_path / "run"
    sets = ["task.entities=40", "task.relations=6", "task.out_degree=3", "task.phi=2.0",
            "model.n_layers=1", "model.d_model=16", "model.n_heads=2", "train.batch_size=64",
            "train.lr=3e-3", "train.steps=40", "train.checkpoint_every=20"]
    Run.start(load_config("composition", None, sets), run_dir).train()
    res = CliRunner().invoke(app, ["analyze", str(run_dir), "--llc", "--checkpoints", "0,40",
                                   "--opt", "llc.chains=2", "--opt", "llc.draws=20"])
    assert res.exit_code == 0, res.output
    z = np.load(run_dir / "analysis" / "llc.npz")
    assert z["llc"].shape == (2, 2) and z["traces"].shape == (2, 2, 20)
    assert np.isfinite(z["llc"]).all()
    meta = json.loads((run_dir / "analysis" / "llc.json").read_text())
    assert set(meta["marks"]) == {"memorization_step", "generalization_step_id",
                                  "generalization_step_ood"}
    assert {"acc/train_inferred", "acc/test_id"} <= set(meta["curves"])  # beside the LLC
    assert (run_dir / "figures" / "llc.png").exists() and "local learning" in res.output
    bad = CliRunner().invoke(app, ["analyze", str(run_dir), "--llc", "--opt", "llc.lr=-1"])
    assert bad.exit_code == 2 and "lr must be positive" in bad.output
