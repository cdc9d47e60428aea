"""MNIST-1D: the generator against the reference package's output, the task's keys and limits,
and the continuous-input models' shapes, hooks and the weight-norm rescaling (no training)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from groklab.models import ModelConfig, build_model
from groklab.tasks import TaskError, make_task
from groklab.tasks.mnist1d_generate import make_dataset
from groklab.train.setup import param_norm, rescale_to_norm

REFERENCE = json.loads((Path(__file__).parent / "data" / "mnist1d_reference.json").read_text())


def _sha(a: np.ndarray, dtype) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a, dtype=dtype)).tobytes()).hexdigest()


@pytest.mark.parametrize("case", REFERENCE["cases"],
                         ids=lambda c: f"{c['num_samples']}-shuffle{c['shuffle_seq']}")
def test_generator_is_bitwise_the_reference_package(case):
    # fixture: PyPI mnist1d 0.0.2.post1 make_dataset(get_dataset_args()) (tests/data)
    d = make_dataset(num_samples=case["num_samples"], shuffle_seq=case["shuffle_seq"])
    assert np.array_equal(d["x"][:3], np.array(case["x_first_rows"]))
    assert d["y"][:20].tolist() == case["y_first"]
    for key, sha in case["sha256"].items():
        dtype = np.int64 if key.startswith("y") else np.float64
        assert _sha(d[key], dtype) == sha, key


def test_task_shapes_splits_and_standardisation():
    d = make_task("mnist1d")
    assert d.train.inputs.shape == (4000, 40) and d.probes["test"].inputs.shape == (1000, 40)
    assert d.train.inputs.dtype == torch.float32 and d.continuous
    assert d.objective.kind == "classify" and d.objective.n_classes == 10
    both = torch.cat([d.train.targets, d.probes["test"].targets])
    assert torch.bincount(both).tolist() == [500] * 10  # class-balanced before the split
    x = torch.cat([d.train.inputs, d.probes["test"].inputs]).double()
    assert abs(float(x.mean())) < 1e-6 and abs(float(x.std(unbiased=False)) - 1) < 1e-6


def test_seeding_n_train_and_label_noise():
    a, b = make_task("mnist1d", num_samples=500), make_task("mnist1d", num_samples=500)
    assert torch.equal(a.train.inputs, b.train.inputs)
    c = make_task("mnist1d", num_samples=500, seed=7)
    assert not torch.equal(a.train.inputs, c.train.inputs)
    small = make_task("mnist1d", num_samples=500, n_train=100)
    assert torch.equal(small.train.inputs, a.train.inputs[:100])  # a prefix: a data-size axis
    assert torch.equal(small.probes["test"].inputs, a.probes["test"].inputs)
    noisy = make_task("mnist1d", num_samples=500, label_noise=0.5)
    assert torch.equal(noisy.train.inputs, a.train.inputs)  # labels only
    changed = (noisy.train.targets != a.train.targets).float().mean()
    assert 0.3 < float(changed) < 0.6  # half replaced, a tenth of those by the same label
    assert noisy.info["label_noise_realised"] == pytest.approx(
        float(noisy.train.meta["noisy"].mean()))


def test_shuffled_positions_are_one_fixed_permutation():
    plain = make_dataset(num_samples=200)
    shuffled = make_dataset(num_samples=200, shuffle_seq=True)
    # same rows (the shuffle draws after them), the columns permuted once for all rows
    match = [[np.allclose(shuffled["x"][:, j], plain["x"][:, i]) for i in range(40)]
             for j in range(40)]
    perm = [row.index(True) for row in match]
    assert sorted(perm) == list(range(40)) and perm != list(range(40))
    assert np.array_equal(plain["y"], shuffled["y"])


@pytest.mark.parametrize("bad, words", [
    ({"num_samples": -5}, "num_samples -5"),
    ({"n_train": -1}, "n_train -1"),
    ({"n_train": 4001}, "n_train 4001"),
    ({"template_len": 50}, "longer than the output"),
    ({"padding": (10, 5)}, "padding"),
    ({"max_translation": 0}, "max_translation 0"),
    ({"train_split": 1.0}, "train_split"),
    ({"label_noise": 1.5}, "label_noise"),
])
def test_bad_parameters_name_the_limit(bad, words):
    with pytest.raises(TaskError, match=words) as e:
        make_task("mnist1d", **bad)
    assert "\n" not in str(e.value)


def _model(arch: str, **kw):
    data = make_task("mnist1d", num_samples=100)
    cfg = ModelConfig(architecture=arch, **kw).for_task(data)
    return build_model(cfg), data


@pytest.mark.parametrize("arch, kw, hooks", [
    ("dense", {"n_layers": 0}, {"hook_embed": (5, 40), "hook_out": (5, 40)}),
    ("cnn", {"n_layers": 3, "d_model": 25, "act_fn": "relu"},
     {"hook_embed": (5, 1, 40), "blocks.0.conv.hook_pre": (5, 25, 19),
      "blocks.2.conv.hook_post": (5, 25, 5), "hook_out": (5, 125)}),
    ("gru", {"n_layers": 2, "d_model": 6},
     {"hook_embed": (5, 40, 1), "blocks.1.hook_hidden": (5, 40, 12), "hook_out": (5, 480)}),
])
def test_models_logits_hooks_and_alpha(arch, kw, hooks):
    model, data = _model(arch, **kw)
    logits, cache = model.run_with_cache(data.train.inputs[:5])
    assert logits.shape == (5, 10)
    for name, shape in hooks.items():
        assert tuple(cache[name].shape) == shape, name
    torch.manual_seed(0)  # the same draws: alpha multiplies every initial parameter
    one, _ = _model(arch, **kw)
    torch.manual_seed(0)
    eight, _ = _model(arch, init_scale=8.0, **kw)
    assert float(param_norm(eight)) == pytest.approx(8 * float(param_norm(one)), rel=1e-6)


def test_paper_sizes_match_the_reference_models():
    # notebooks/models.py: ConvBase 5,210 parameters, bidirectional GRUBase (hidden 6) 5,134
    cnn, _ = _model("cnn", n_layers=3, d_model=25)
    gru, _ = _model("gru", n_layers=1, d_model=6)
    assert sum(p.numel() for p in cnn.parameters()) == 5210
    assert sum(p.numel() for p in gru.parameters()) == 5134


def test_cnn_and_gru_refuse_token_tasks():
    data = make_task("parity", n_bits=8, k=2, n_train=20, n_test=20)
    with pytest.raises(ValueError, match="needs continuous inputs"):
        ModelConfig(architecture="cnn").for_task(data)


def test_rescale_holds_the_norm_after_a_step():
    model, data = _model("dense", n_layers=2, d_mlp=64, init_scale=8.0)
    norm0 = param_norm(model)
    moved = []
    for _ in range(5):  # a plain gradient step (an optimizer's first use costs seconds here)
        model(data.train.inputs).pow(2).mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad
                p.grad = None
        moved.append(abs(float(param_norm(model)) / float(norm0) - 1))
        rescale_to_norm(model, norm0)
        assert abs(float(param_norm(model)) / float(norm0) - 1) < 1e-6
    assert max(moved) > 1e-4  # the step did move the norm


def test_batched_sweeps_take_cnns_but_train_grus_alone():
    from groklab.config import load_config
    from groklab.train.batched import batch_key

    data = make_task("mnist1d", num_samples=100)
    assert batch_key(load_config("mnist1d-cnn", None, []), data) is not None
    assert batch_key(load_config("mnist1d-gru", None, []), data) is None  # vmap has no GRU rule


class _AlwaysZero(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()


def test_class_accuracy_counts_each_class_and_the_confusions(tmp_path):
    from groklab.analysis import class_accuracy

    data = make_task("mnist1d", num_samples=200)
    result = class_accuracy.run(_AlwaysZero(), task=data)
    assert result.acc["test"][-1].tolist() == [1.0] + [0.0] * 9  # class 0 right, the rest wrong
    conf = result.confusion["test"]
    assert conf[:, 0].sum() == len(data.probes["test"]) and conf[:, 1:].sum() == 0
    assert conf[:, 0].tolist() == torch.bincount(data.probes["test"].targets, minlength=10).tolist()
    paths = result.save(tmp_path)
    assert all(p.exists() for p in paths) and "lowest" in result.text()
