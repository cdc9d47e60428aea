"""The ecosystem: Hugging Face GPT-2 export and import with logits compared, TensorBoard event
files next to metrics.jsonl, and clear refusals."""

import json

import pytest
import torch
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import ConfigError, load_config
from groklab.models import ModelConfig, build_model
from groklab.models.hf import ExportError, export_model, load_hf, to_gpt2_state_dict
from groklab.tasks import make_task
from groklab.train.loop import train as train_run
from tests.conftest import TINY_SETS

runner = CliRunner()
transformers = pytest.importorskip("transformers", reason="transformers not installed")


@pytest.fixture(scope="module")
def task():
    return make_task("composition", entities=40, relations=6, out_degree=3, phi=2.0)


def random_model(task, **over):
    """Every parameter random (LayerNorm gains and all biases too), so a misplaced tensor in the
    mapping cannot hide behind an init value of 0 or 1."""
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, **over).resolved(len(task.vocab),
                                                                            task.seq_len)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        if not cfg.tie_word_embeddings:
            model.b_U.zero_()  # GPT-2's lm_head has no bias
    return model.eval()


def tokens(task):
    return torch.cat([task.train.inputs[:64], task.probes["test_ood"].inputs])


@pytest.mark.parametrize("over", [{}, {"act_fn": "relu"}, {"act_fn": "gelu"},
                                  {"tie_word_embeddings": False}])
def test_hf_export_gives_groklab_logits_and_loads_back(task, tmp_path, over):
    model = random_model(task, **over)
    out = export_model(model, task.vocab, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    x = tokens(task)
    with torch.no_grad():
        ours, theirs = model(x), hf(x).logits
    assert ours.abs().max() > 1.0  # non-trivial logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()
    assert hf.config.tie_word_embeddings == model.cfg.tie_word_embeddings
    back = load_hf(out)
    with torch.no_grad():
        assert torch.allclose(back(x), ours, atol=1e-6, rtol=0)
    assert back.cfg.act_fn == model.cfg.act_fn and back.cfg.n_heads == model.cfg.n_heads


def test_tokenizer_reads_task_tokens(task, tmp_path):
    out = export_model(random_model(task), task.vocab, tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    for row in task.probes["test_id"].inputs[:5]:
        text = " ".join(task.vocab.decode(row))
        assert tok(text)["input_ids"] == row.tolist()
    assert tok.pad_token == "<pad>"
    info = json.loads((out / "groklab.json").read_text())
    assert info["token_types"] == task.vocab.types


def test_export_refuses_what_gpt2_cannot_express(task, tmp_path):
    with pytest.raises(ExportError, match="n_loops=2 shares parameters across layers"):
        to_gpt2_state_dict(random_model(task, n_loops=2))
    untied = random_model(task, tie_word_embeddings=False)
    with torch.no_grad():
        untied.b_U.fill_(0.5)
    with pytest.raises(ExportError, match="untied unembedding has a bias"):
        export_model(untied, task.vocab, tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    cfg = load_config("composition", None, [*TINY_SETS, "train.steps=60", "train.tensorboard=true"])
    train_run(cfg, out)
    return out


def test_cli_export_of_a_trained_run(tiny_run, tmp_path):
    import groklab

    out = tmp_path / "hf"
    result = runner.invoke(app, ["export", str(tiny_run), "--format", "hf", "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = groklab.load_run(tiny_run)
    x = torch.cat([s.inputs for s in run.task.probes.values()])
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, run.model()(x), atol=1e-5, rtol=0)
    assert json.loads((out / "groklab.json").read_text())["step"] == run.checkpoint_steps[-1]


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx"], "unknown --format 'onnx'; formats: hf"),
    (["--step", "7"], "no checkpoint at step 7"),
])
def test_cli_export_bad_input(tiny_run, tmp_path, args, message):
    out = tmp_path / "hf"
    result = runner.invoke(app, ["export", str(tiny_run), "--out", str(out), *args])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()


def test_tensorboard_events_hold_every_metrics_row(tiny_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(tiny_run.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tiny_run))
    acc.Reload()
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    for key in ("acc/train", "loss/test_id", "weight_norm", "lr"):
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [r["step"] for r in rows]
        assert [v for _, v in got] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_missing_tensorboard_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    from groklab.train import loggers

    monkeypatch.setattr(loggers, "_has", lambda module: False)
    cfg = load_config("composition", None, [*TINY_SETS, "train.tensorboard=true"])
    with pytest.raises(ConfigError, match="train.tensorboard needs the tensorboard package"):
        train_run(cfg, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    result = runner.invoke(app, ["train", "composition", *sets, "--wandb", "--out", "r"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "groklab: error: train.wandb needs the wandb package: pip install wandb"]
    assert list(tmp_path.iterdir()) == []


def test_wandb_offline_run_is_written_when_asked(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config("composition", None, [*TINY_SETS, "train.steps=10", "train.wandb=true"])
    train_run(cfg, tmp_path / "run")
    run_id = (tmp_path / "run" / "wandb_id.txt").read_text().strip()
    files = list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1 and files[0].stat().st_size > 1000
