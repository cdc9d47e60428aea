"""groklab inject: a tiny composition run learns injected facts through LoRA and MoRA; bad input
gets one line, exit 2, and nothing written."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import load_config
from groklab.rundir import load_run
from groklab.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    cfg = load_config("composition", None, [
        "task.entities=30", "task.relations=6", "task.out_degree=3", "task.phi=1.0",
        "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "train.steps=30",
        "train.eval_every=30", "train.eval_per_decade=0", "train.checkpoint_per_decade=0"])
    out = tmp_path_factory.mktemp("inject") / "base"
    train(cfg, out)
    return out


def inject(base, out, *args):
    return runner.invoke(app, ["inject", str(base), "--out", str(out), "--steps", "60",
                               "--lr", "1e-2", "--n-facts", "16", *args])


@pytest.mark.parametrize("adapter,facts,path", [("mora", "new-relations", "activation"),
                                               ("lora", "new-entities", "auto")])
def test_a_tiny_injection_learns_the_new_facts(base, tmp_path, adapter, facts, path):
    res = inject(base, tmp_path / "inj", "--adapter", adapter, "--rank", "4", "--facts", facts,
                 "--adapter-path", path)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "inj" / "summary.json").read_text())
    assert summary["final"]["new"] >= 0.9  # learned from chance (1 / 30 entities)
    rows = [json.loads(line) for line in (tmp_path / "inj/metrics.jsonl").read_text().splitlines()]
    assert rows[0]["acc/new"] < 0.3
    assert {"acc/compose_first", "acc/atomic_id", "acc/test_id"} <= set(rows[-1])
    tensors = load_file(tmp_path / "inj" / "adapter.safetensors")
    key = "mora_M" if adapter == "mora" else "lora_B"
    assert any(k.endswith(key) for k in tensors)
    info = json.loads((tmp_path / "inj" / "injection.json").read_text())
    assert info["adapter"]["path"] == ("activation" if path == "activation" else "weight")
    if adapter == "mora":  # its update is high-rank: more significant singular values than 4
        from groklab.analysis.injection import run as injection

        result = injection(tmp_path / "inj", n_examples=50)
        assert result.summary()["median_significant"] > 4
        assert set(result.lens) == {"compose_first", "compose_second", "test_id"}
        # ROME tracing of the new facts the model now recalls: restoring the clean head state
        # at the input (layer 0, position 0) recovers the whole effect, by construction of NIE
        nie = result.tracing["new"]
        assert nie.shape == (2, 2) and result.traced_rows["new"] >= 10
        assert nie[0, 0] == pytest.approx(1.0, abs=1e-5) and nie[0, 1] == pytest.approx(0.0, abs=1e-5)
        result.save(tmp_path / "inj")
        assert (tmp_path / "inj" / "figures" / "injection.png").is_file()
        assert (tmp_path / "inj" / "figures" / "injection_tracing.png").is_file()
    merged = load_run(tmp_path / "inj").model()  # the merged weights read back as a run
    W_E = load_run(base).model().W_E
    if facts == "new-entities":
        n_new = info["info"]["n_new_entities"]
        assert n_new >= 1 and merged.W_E.shape[0] == W_E.shape[0] + n_new
        assert torch.equal(merged.W_E[: W_E.shape[0]], W_E)  # old rows frozen
        assert torch.equal(tensors["W_E.new_rows"], merged.W_E[W_E.shape[0]:])
    # trainable = the adapter tensors (+ the new token rows), not the frozen table
    assert info["n_params"] == sum(t.numel() for t in tensors.values())


def test_bad_input_is_one_line_exit_2_and_nothing_written(base, tmp_path):
    tails = load_run(base).task.arrays["tails"]
    r = int((tails[0] >= 0).nonzero()[0][0])
    edit = tmp_path / "facts.txt"
    edit.write_text(f"# an existing slot\n<e_0> <r_{r}> <e_1>\n")
    cases = [("--rank", "33"), ("--target", "blocks.5.mlp.W_in"), ("--adapter", "dora"),
             ("--adapter-path", "fused"),
             ("--facts", str(tmp_path / "missing.txt")), ("--facts", str(edit))]
    for args in cases:
        res = inject(base, tmp_path / "out", *args)
        assert res.exit_code == 2, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert not (tmp_path / "out").exists()
    res = inject(tmp_path, tmp_path / "out")
    assert res.exit_code == 2 and "not a groklab run" in res.output
    train(load_config("parity", None, ["train.steps=1", "train.eval_per_decade=0",
                                       "train.checkpoint_per_decade=0"]), tmp_path / "parity")
    res = inject(tmp_path / "parity", tmp_path / "out")
    assert res.exit_code == 2 and "needs a composition run" in res.output, res.output
    assert not (tmp_path / "out").exists()
