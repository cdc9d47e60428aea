import warnings

import pytest
import torch

from groklab.config import ConfigError, load_config
from groklab.train.cuda_graph import CudaGraphFallback, GraphStep
from groklab.train.loop import Run, train_runs
from tests.conftest import TINY_SETS


def cfg(*extra, steps=30):
    return load_config("composition", None, [*TINY_SETS, f"train.steps={steps}", *extra])


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_cuda_graph_falls_back_cleanly_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the graph is captured, not bypassed")
    eager = Run.start(cfg(), tmp_path / "eager")
    eager.train()
    graphed = Run.start(cfg("train.cuda_graph=true"), tmp_path / "graphed")
    with pytest.warns(CudaGraphFallback, match="no CUDA device"):
        summary = graphed.train()
    assert summary["status"] == "completed"
    assert strip_time(graphed.dir.read_metrics()) == strip_time(eager.dir.read_metrics())


@pytest.mark.parametrize("option", ["train.grokfast=ma", "train.weight_decay_warmup_steps=10"])
def test_options_that_cannot_be_captured_are_refused_in_one_line(option):
    with pytest.raises(ConfigError, match="cuda_graph") as e:
        cfg("train.cuda_graph=true", option)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("extra", [("train.batch_size=128",), ("train.batch_size=0",),
                                   ("train.grokfast=ema", "train.loss=stablemax")])
def test_static_buffer_step_equals_the_eager_step(tmp_path, extra):
    """The captured step's body, run eagerly on the CPU, is bit-for-bit the eager step
    (index draws into a static buffer, full batch, capture-safe accelerators)."""
    eager = Run.start(cfg(*extra), tmp_path / "eager")
    eager.train()
    static = Run.start(cfg(*extra), tmp_path / "static")
    train_runs([static], GraphStep(static, capture=False))
    assert strip_time(static.dir.read_metrics()) == strip_time(eager.dir.read_metrics())
    wa, wb = eager.dir.load_weights(30), static.dir.load_weights(30)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_step_matches_eager_on_cuda_and_resumes(tmp_path):
    eager = Run.start(cfg("train.device=cuda", steps=60), tmp_path / "eager")
    eager.train()
    graphed = Run.start(cfg("train.device=cuda", "train.cuda_graph=true", "train.resume_every=30",
                            steps=60), tmp_path / "graphed")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CudaGraphFallback)
        graphed.train()
    for a, b in zip(eager.dir.read_metrics(), graphed.dir.read_metrics()):
        assert a["step"] == b["step"]
        assert a["loss/train"] == pytest.approx(b["loss/train"], abs=1e-3)
    # resume.pt of a graphed run loads into an ordinary run, and a graphed run resumes.
    assert Run.resume(tmp_path / "graphed").step == 60
    cpu = Run.resume(tmp_path / "graphed")
    assert cpu.step == 60
