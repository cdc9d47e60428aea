"""``groklab analyze RUN --linearity --heads --neurons`` on a tiny run: arrays and figures over
checkpoints; a model without a residual stream or heads is one line and exit 2."""

import json

import numpy as np
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import load_config
from groklab.train import Run


def test_analyze_linearity_and_heads_over_checkpoints(tmp_path, tiny_cfg):
    run_dir = tmp_path / "run"
    Run.start(tiny_cfg(steps=2), run_dir).train()
    res = CliRunner().invoke(app, ["analyze", str(run_dir), "--linearity", "--heads", "--neurons",
                                   "--checkpoints", "0,2", "--examples", "60"])
    assert res.exit_code == 0, res.output
    z = np.load(run_dir / "analysis" / "linearity.npz")
    assert z["train_inferred.linearity.tokens"].shape == (2, 2)  # [checkpoint, layer pair]
    assert ((z["train_inferred.linearity.tokens"] > 0)
            & (z["train_inferred.linearity.tokens"] <= 1)).all()
    h = np.load(run_dir / "analysis" / "heads.npz")
    assert h["class"].shape == (2, 2, 2)  # [checkpoint, layer, head]
    meta = json.loads((run_dir / "analysis" / "heads.json").read_text())
    assert set(meta["final_class"]) == {"L0H0", "L0H1", "L1H0", "L1H1"}
    figs = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {"linearity.png", "linearity_by_layer.png", "heads.png", "heads_measures.png",
            "neurons.png"} <= figs
    assert np.load(run_dir / "analysis" / "neurons.npz")["selectivity"].shape == (2, 2, 128)
    assert "layer linearity" in res.output and "L1H1" in res.output


def test_analyze_refuses_a_model_without_hooks(tmp_path):
    parity = tmp_path / "parity"
    Run.start(load_config("parity", None, ["task.n_bits=6", "task.n_train=20", "train.steps=2",
                                           "model.d_mlp=8"]), parity).train()
    for flag, msg in (("--linearity", "needs a transformer"),
                      ("--heads", "needs a model with attention heads"),
                      ("--neurons", "needs a transformer with MLP blocks")):
        r = CliRunner().invoke(app, ["analyze", str(parity), flag])
        assert r.exit_code == 2 and msg in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
    assert not (parity / "analysis").exists() and not (parity / "figures").exists()
