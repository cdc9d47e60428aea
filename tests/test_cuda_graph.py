import warnings

import pytest
import torch

from groklab.config import load_config
from groklab.train.cuda_graph import CudaGraphFallback, GraphedStep, unsupported_reason
from groklab.train.loop import Run
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
    assert "no CUDA device" in unsupported_reason(graphed)
    # Options whose code is not capture-safe are named, whatever the device.
    assert "train.grokfast" in unsupported_reason(Run(cfg("train.grokfast=ema"), tmp_path / "x"))


@pytest.mark.parametrize("batch", ["128", "0"])  # index draws into a static buffer; full batch
def test_static_buffer_step_equals_the_eager_step(tmp_path, batch):
    """The captured step's body, run eagerly on the CPU, is bit-for-bit Run.train_step."""
    eager = Run.start(cfg(f"train.batch_size={batch}"), tmp_path / "eager")
    eager.train()
    static = Run.start(cfg(f"train.batch_size={batch}"), tmp_path / "static")
    static.train_step = GraphedStep(static, capture=False)
    static.train()
    assert strip_time(static.dir.read_metrics()) == strip_time(eager.dir.read_metrics())
    wa, wb = eager.dir.load_weights(30), static.dir.load_weights(30)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_step_matches_eager_on_cuda(tmp_path):
    eager = Run.start(cfg("train.device=cuda", steps=60), tmp_path / "eager")
    eager.train()
    graphed = Run.start(cfg("train.device=cuda", "train.cuda_graph=true", steps=60),
                        tmp_path / "graphed")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CudaGraphFallback)
        graphed.train()
    for a, b in zip(eager.dir.read_metrics(), graphed.dir.read_metrics()):
        assert a["step"] == b["step"]
        assert a["loss/train"] == pytest.approx(b["loss/train"], abs=1e-3)
    # resume.pt of a graphed run loads into an ordinary run.
    assert Run.resume(tmp_path / "graphed").step == 60
