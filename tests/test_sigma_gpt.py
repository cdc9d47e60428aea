"""sigma-GPT: the identity order is a plain GPT, orders are causal in their own order, the
training orders have the reference's shape, a tiny run learns to answer in random orders, and
bad options are refused at the CLI."""

import pytest
import torch
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import load_config
from groklab.models import HookedTransformer, ModelConfig, build_model
from groklab.tasks import IGNORE, make_task
from groklab.tasks.any_order import (
    AnyOrder,
    burst_decode,
    decode_in_order,
    make_order,
    objective_for,
    scored_tokens,
)
from groklab.train.loop import Run


def sigma(**kw):
    cfg = ModelConfig(architecture="sigma_gpt", n_layers=2, d_model=32, n_heads=4, **kw)
    return build_model(cfg.resolved(13, 12)).eval()


def test_identity_order_is_a_gpt_whose_positions_are_this_and_next():
    s = sigma()
    cfg = s.cfg.model_copy(update={"architecture": "transformer"})
    gpt = HookedTransformer(cfg).eval()
    state = {k: v for k, v in s.state_dict().items() if k != "W_pos"}
    P = s.W_pos.detach()
    state["W_pos"] = torch.cat([P[:-1], P[1:]], -1)  # concat(P[t], P[t + 1])
    gpt.load_state_dict(state)
    tokens = torch.randint(0, 13, (3, 12))
    torch.testing.assert_close(s(tokens), gpt(tokens))
    identity = torch.arange(12).expand(3, 12)
    torch.testing.assert_close(s(tokens, order=identity), gpt(tokens))


def test_predictions_depend_only_on_tokens_earlier_in_the_order():
    s = sigma()
    # token 0 first, as make_order's orders start (a prediction of token 0 has no slot)
    order = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(11)])
                         for _ in range(4)])
    a = torch.randint(0, 13, (4, 12))
    b = a.clone()
    k, rows = 6, torch.arange(4)[:, None]
    b[rows, order[:, k:]] = (b[rows, order[:, k:]] + 1) % 13  # change the tokens read from k on
    la, lb = s(a, order=order), s(b, order=order)
    seen = order[:, 1 : k + 1] - 1  # slots of the tokens predicted by steps 0..k-1
    torch.testing.assert_close(la[rows, seen], lb[rows, seen])
    later = order[:, k + 1 :] - 1
    assert (la[rows, later] - lb[rows, later]).abs().max() > 1e-3


def test_orders_put_prompt_then_shuffled_answer_then_padding():
    targets = torch.full((50, 10), IGNORE)
    targets[:, 3:7] = 1  # tokens 4..7 are the answer; 8, 9 padding
    g = torch.Generator().manual_seed(0)
    order = make_order(targets, shuffle_prompt=True, shuffle_answer=True, generator=g)
    assert (order.sort(1).values == torch.arange(10)).all()
    assert (order[:, :4].sort(1).values == torch.arange(4)).all()
    assert (order[:, 4:8].sort(1).values == torch.arange(4, 8)).all()
    assert (order[:, 8:] == torch.tensor([8, 9])).all()
    assert len({tuple(r) for r in order[:, 4:8].tolist()}) > 10  # shuffled per row
    kept = make_order(targets, shuffle_prompt=False, shuffle_answer=True, generator=g)
    assert (kept[:, :4] == torch.arange(4)).all()
    assert scored_tokens(targets)[0].nonzero().flatten().tolist() == [4, 5, 6, 7]


@pytest.mark.parametrize("shuffle", [False, True])
def test_burst_decoding_equals_one_token_per_pass(shuffle):
    """An untrained model's predictions hang on the guesses of earlier tokens: burst decoding
    must still give decode_in_order's tokens (here in about one pass per token)."""
    data = make_task("addition", max_digits=3, eval_digits=5, n_train=50, n_test=48)
    model = build_model(ModelConfig(architecture="sigma_gpt", n_layers=2, d_model=32,
                                    n_heads=4).for_task(data)).eval()
    split = data.probes["ood"]
    order = make_order(split.targets, shuffle, shuffle, torch.Generator().manual_seed(1))
    tokens, passes = burst_decode(model, split.inputs, split.targets, order)
    assert torch.equal(tokens, decode_in_order(model, split.inputs, split.targets, order))
    assert (passes >= 1).all() and (passes <= scored_tokens(split.targets).sum(1)).all()


def test_tiny_run_learns_to_answer_in_random_orders(tmp_path):
    cfg = load_config("strings", None, [
        "task.max_len=3", "task.ood_extra=0", "task.n_train=600", "task.n_test=100",
        "model.architecture=sigma_gpt", "model.n_layers=2", "model.d_model=32",
        "model.n_heads=4", "train.steps=200", "train.lr=5e-3", "train.batch_size=64",
        "train.weight_decay=0.1", "train.eval_every=200", "train.eval_per_decade=0",
        "train.checkpoint_every=0", "train.checkpoint_per_decade=0"])
    run = Run.start(cfg, tmp_path / "run")
    summary = run.train()
    last = [ln for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert '"exact_random/test"' in last and summary["status"] == "completed"
    run.model.eval()
    test = run.data.probes["test"]
    scores = run.objective.evaluate(run.model, test, 512, run.eval_ce, run.autocast)
    assert scores["exact_random"] >= 0.8 and scores["exact"] >= 0.8, scores  # 0.05 at step 120
    # exact match without decoding = greedy decoding in that order, row by row
    order = make_order(test.targets, True, True, torch.Generator().manual_seed(1))
    decoded = decode_in_order(run.model, test.inputs, test.targets, order)
    out = run.model(test.inputs, order=order)
    mask = test.targets != IGNORE
    teacher = ((out.argmax(-1) == test.targets) | ~mask).all(1)
    assert torch.equal((decoded == test.inputs).all(1), teacher)
    assert 0.5 <= teacher.float().mean() <= 1.0
    # burst decoding: the same tokens in fewer passes, as the answer hangs on the prompt alone
    burst, passes = burst_decode(run.model, test.inputs, test.targets, order)
    assert torch.equal(burst, decoded)
    n_tokens = scored_tokens(test.targets).sum(1)
    assert (passes >= 1).all() and (passes <= n_tokens).all()
    assert passes.float().mean() <= 0.6 * n_tokens.float().mean()


def test_span_of_another_task_kind_and_bad_options_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    cases = [
        (["train", "strings", "--set", "model.architecture=sigmagpt"], "architecture"),
        (["train", "strings", "--set", "model.architecture=sigma_gpt", "--set",
          "model.order=sideways"], "model.order"),
        (["train", "strings", "--set", "model.architecture=sigma_gpt", "--set",
          "model.d_model=33", "--set", "model.n_heads=3"], "odd"),
        (["train", "parity", "--set", "model.architecture=sigma_gpt"], "span or lm task"),
        (["train", "strings", "--set", "model.architecture=aaren", "--set", "model.n_loops=2"],
         "n_loops must be 1"),
    ]
    for args, message in cases:
        result = runner.invoke(app, [*args, "--out", "out"])
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], result.output
        assert list(tmp_path.iterdir()) == []


def test_sigma_gpt_wraps_span_tasks_in_any_order():
    data = make_task(load_config("addition", None, ["task.max_digits=3", "task.eval_digits=4",
                                                    "task.n_train=50", "task.n_test=10"]).task)
    obj = objective_for(data, ModelConfig(architecture="sigma_gpt", order_prompt="keep"))
    assert isinstance(obj, AnyOrder) and obj.prompt == "keep" and obj.headline == "exact"
    assert "exact_random" in obj.metrics
    assert objective_for(data, ModelConfig()) is data.objective
