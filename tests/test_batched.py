import shutil

import pytest
import torch

from groklab.config import load_config
from groklab.tasks import make_task
from groklab.train.batched import BatchedRun, batch_key
from groklab.train.loop import Run
from tests.conftest import TINY_SETS

# Four members that differ in seed, learning rate and weight decay (shapes are shared).
MEMBERS = [("0", "3e-3", "1.0"), ("1", "3e-3", "0.1"), ("2", "1e-3", "1.0"), ("3", "3e-3", "0.0")]


def cfg(seed="0", lr="3e-3", wd="1.0", steps=40, *extra):
    return load_config("composition", None, [*TINY_SETS, f"train.steps={steps}",
                                             f"train.seed={seed}", f"train.lr={lr}",
                                             f"train.weight_decay={wd}", "train.eval_per_decade=3",
                                             *extra])


def assert_close_runs(solo_dir, member_dir, steps):
    """Same rows, losses within 1e-4, accuracies within one example, weights within 1e-3."""
    from groklab.rundir import RunDir

    a, b = RunDir(solo_dir), RunDir(member_dir)
    ra, rb = a.read_metrics(), b.read_metrics()
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for k in x:
            if k.startswith("loss/") or k in ("train_loss", "weight_norm"):
                assert x[k] == pytest.approx(y[k], abs=1e-4, rel=1e-4), (x["step"], k)
            elif k.startswith(("acc/", "exact/")):
                assert abs(x[k] - y[k]) <= 0.012, (x["step"], k)  # one row of a small probe
    assert a.checkpoint_steps() == b.checkpoint_steps()
    wa, wb = a.load_weights(steps), b.load_weights(steps)
    for k in wa:
        # attn.b_K has an exactly zero true gradient (softmax ignores a per-query constant), so
        # Adam amplifies rounding noise in it into lr-sized steps; it changes no output.
        tol = steps * 3e-3 if k.endswith("attn.b_K") else 1e-3
        assert torch.allclose(wa[k], wb[k], atol=tol), k
    assert a.config_path.read_text() == b.config_path.read_text()


def test_batched_four_seeds_match_four_separate_runs(tmp_path):
    cfgs = [cfg(*m) for m in MEMBERS]
    batched = BatchedRun.start(cfgs, [tmp_path / f"b{i}" for i in range(4)])
    summaries = batched.train()
    assert all(s["status"] == "completed" and s["steps"] == 40 for s in summaries)
    for i, c in enumerate(cfgs):
        Run.start(c, tmp_path / f"s{i}").train()
        assert_close_runs(tmp_path / f"s{i}", tmp_path / f"b{i}", 40)
    # The members really differ (different seeds, lr, wd), so the match is not trivial.
    w = [batched.members[i].dir.load_weights(40)["W_E"] for i in range(4)]
    assert not torch.allclose(w[0], w[1], atol=1e-2)


def test_batched_members_with_different_data_match_separate_runs(tmp_path):
    # task.phi changes the training set, not the vocabulary: one batch, two datasets.
    cfgs = [cfg("0", "3e-3", "1.0", 30, "task.phi=1.0"), cfg("0", "3e-3", "1.0", 30)]
    BatchedRun.start(cfgs, [tmp_path / "b0", tmp_path / "b1"]).train()
    for i, c in enumerate(cfgs):
        Run.start(c, tmp_path / f"s{i}").train()
        assert_close_runs(tmp_path / f"s{i}", tmp_path / f"b{i}", 30)


def test_batched_resume_equals_uninterrupted_and_members_resume_alone(tmp_path):
    cfgs = [cfg("0", "3e-3", "1.0", 40, "train.resume_every=20"),
            cfg("1", "1e-3", "1.0", 40, "train.resume_every=20")]
    full = BatchedRun.start(cfgs, [tmp_path / "f0", tmp_path / "f1"])
    full.train()
    part = BatchedRun.start(cfgs, [tmp_path / "p0", tmp_path / "p1"])
    original = part.step_fn

    def die_at_30():
        if part.step == 30:
            raise KeyboardInterrupt
        return original()

    part.step_fn = die_at_30
    with pytest.raises(KeyboardInterrupt):
        part.train()
    shutil.copytree(tmp_path / "p0", tmp_path / "alone")  # member 0, to resume on its own
    resumed = BatchedRun.resume([tmp_path / "p0", tmp_path / "p1"])
    assert resumed.step == 20  # the rolling checkpoint (resume_every 20)
    resumed.train()
    for i in range(2):
        a = [{k: v for k, v in r.items() if k != "time"}
             for r in full.members[i].dir.read_metrics()]
        b = [{k: v for k, v in r.items() if k != "time"}
             for r in resumed.members[i].dir.read_metrics()]
        assert a == b  # a batched resume is bit-for-bit
    # A member's resume.pt is an ordinary one: Run.resume continues it alone.
    alone = Run.resume(tmp_path / "alone")
    assert alone.step == 20
    alone.train()
    assert_close_runs(tmp_path / "f0", tmp_path / "alone", 40)


def test_batch_key_groups_shapes_and_refuses_what_it_cannot_batch():
    data = make_task(cfg().task)
    base = batch_key(cfg(), data)
    assert base is not None
    assert batch_key(cfg("5", "1e-2", "0.3"), data) == base
    assert batch_key(cfg("0", "3e-3", "1.0", 40, "model.d_model=64"), data) != base
    assert batch_key(cfg("0", "3e-3", "1.0", 40, "train.batch_size=64"), data) != base
    assert batch_key(cfg("0", "3e-3", "1.0", 40, "model.dropout=0.1"), data) is None
    # Accelerators are per member: each member runs its own Run.optimizer_step.
    assert batch_key(cfg("0", "3e-3", "1.0", 40, "train.grokfast=ema"), data) == base
    assert batch_key(cfg("0", "3e-3", "1.0", 40, "train.loss=stablemax"), data) != base
    with pytest.raises(ValueError, match="share one batch_key"):
        BatchedRun([Run(cfg(), "/nonexistent/a", data=data),
                    Run(cfg("0", "3e-3", "1.0", 40, "train.batch_size=64"), "/nonexistent/b",
                        data=data)])


def test_batched_members_with_accelerators_match_separate_runs(tmp_path):
    """Grokfast, orthogonal AdamW and a weight-decay ramp run in each member's own optimizer
    step, exactly as in a solo run."""
    cfgs = [cfg("0", "3e-3", "1.0", 30, "train.grokfast=ema"),
            cfg("1", "3e-3", "1.0", 30, "train.optimizer=ortho_adamw",
                "train.weight_decay_warmup_steps=10")]
    BatchedRun.start(cfgs, [tmp_path / "b0", tmp_path / "b1"]).train()
    for i, c in enumerate(cfgs):
        Run.start(c, tmp_path / f"s{i}").train()
        assert_close_runs(tmp_path / f"s{i}", tmp_path / f"b{i}", 30)


def test_batched_span_task_matches_separate_runs(tmp_path):
    """Any objective batches: two seeds of the string-reversal span task."""
    sets = ["task.max_len=4", "task.ood_extra=1", "task.n_train=300", "task.n_test=50",
            "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "train.batch_size=64",
            "train.steps=20", "train.eval_every=10", "train.checkpoint_every=20"]
    cfgs = [load_config("strings", None, [*sets, f"train.seed={s}"]) for s in (0, 1)]
    BatchedRun.start(cfgs, [tmp_path / "b0", tmp_path / "b1"]).train()
    for i, c in enumerate(cfgs):
        Run.start(c, tmp_path / f"s{i}").train()
        assert_close_runs(tmp_path / f"s{i}", tmp_path / f"b{i}", 20)
