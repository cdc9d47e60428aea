"""Multi-digit addition, Abacus and rotary positions, looped depth with input injection, batched
greedy decoding and the length grid."""

import json

import pytest
import torch
from typer.testing import CliRunner

from groklab.cli import app
from groklab.models import HookedTransformer, ModelConfig
from groklab.models.fast import forward
from groklab.models.positions import abacus_positions, rotary_tables, rotate
from groklab.tasks import make_task
from groklab.tasks.addition import decode_numbers
from groklab.tasks.objectives import greedy_decode, span_bounds

DIGITS = torch.zeros(14, dtype=torch.bool)
DIGITS[:10] = True


def _ids(text: str) -> torch.Tensor:
    """Tokens of the addition vocabulary: digits are ids 0-9, then + = <eos>(E) <pad>(P)."""
    table = {**{str(d): d for d in range(10)}, "+": 10, "=": 11, "E": 12, "P": 13}
    return torch.tensor([table[ch] for ch in text])


@pytest.mark.parametrize("text, want", [
    ("12+345=753E", [1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 0]),
    ("+7=7", [0, 1, 0, 1]),
    ("9999", [1, 2, 3, 4]),
    ("1+2=3EPP", [1, 0, 1, 0, 1, 0, 0, 0]),
])
def test_abacus_positions_number_each_digit_within_its_number(text, want):
    assert abacus_positions(_ids(text), DIGITS).tolist() == want
    assert abacus_positions(_ids(text)[None].repeat(3, 1), DIGITS).tolist() == [want] * 3


def _model(data, **kw):
    cfg = ModelConfig(**{"n_layers": 1, "d_model": 32, "n_heads": 2, **kw}).for_task(data)
    torch.manual_seed(0)
    return HookedTransformer(cfg)


@pytest.fixture(scope="module")
def small():
    return make_task("addition", max_digits=3, eval_digits=5, n_train=300, n_test=40)


def test_abacus_embedding_uses_one_offset_per_batch_in_training_none_in_eval(small):
    model = _model(small, positional="abacus", abacus_max_offset=7)
    x = small.train.inputs[:6]
    idx = abacus_positions(x, model.is_digit)
    _, cache = model.eval().run_with_cache(x)
    assert torch.equal(cache["hook_pos_embed"], model.W_abacus[idx])
    offsets = set()
    for seed in range(20):
        torch.manual_seed(seed)
        _, cache = model.train().run_with_cache(x)
        got = [k for k in range(8) if torch.equal(cache["hook_pos_embed"],
                                                   model.W_abacus[torch.where(idx > 0, idx + k, 0)])]
        assert len(got) == 1  # the same k for every digit of every row
        offsets.add(got[0])
    assert len(offsets) > 3 and offsets <= set(range(8))


@pytest.mark.parametrize("op, reverse", [("add", True), ("add", False), ("subtract", True),
                                         ("multiply", True)])
def test_rows_read_back_as_true_arithmetic(op, reverse):
    d = make_task("addition", op=op, reverse=reverse, max_digits=4, eval_digits=6, n_train=200,
                  n_test=30)
    fn = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b,
          "multiply": lambda a, b: a * b}[op]
    for name, split in {"train": d.train, **d.probes}.items():
        for i in range(len(split)):
            row = split.inputs[i].tolist()
            a, b, c = decode_numbers(row, d.vocab, reverse)
            assert c == fn(a, b), (name, a, b, c)
            # the targets are the answer and <eos>, each predicted one position early
            start, n = (t[0].item() for t in span_bounds(split.targets[i : i + 1]))
            assert row[start : start + n] == split.targets[i, start - 1 : start - 1 + n].tolist()
            assert row[start + n - 1] == d.vocab.id("<eos>")
        if name == "ood":
            assert split.meta["len_a"].min() > 4 and split.meta["len_b"].max() <= 6
        else:
            assert split.meta["len_a"].max() <= 4 and split.meta["len_b"].min() >= 1
    # every (len a, len b) bucket of the training lengths is an equal share
    counts = torch.bincount(torch.as_tensor(d.train.meta["len_a"] * 10 + d.train.meta["len_b"]))
    assert counts[counts > 0].tolist() == [200 // 16 + (i < 200 % 16) for i in range(16)]


def test_one_loop_equals_the_unlooped_model_and_loops_share_one_block(small):
    x = small.train.inputs[:5]
    plain = _model(small, n_layers=2).eval()
    once = _model(small, n_layers=2, loop_injection="add").eval()
    once.load_unique_state_dict(plain.unique_state_dict())
    assert torch.equal(plain(x), once(x))
    # one block looped twice without injection = a 2-layer model whose blocks are equal
    looped = _model(small, n_loops=2).eval()
    stacked = _model(small, n_layers=2).eval()
    sd = looped.unique_state_dict()
    stacked.load_unique_state_dict({**sd, **{k.replace("blocks.0.", "blocks.1."): v
                                             for k, v in sd.items() if k.startswith("blocks.0.")}})
    assert torch.allclose(looped(x), stacked(x), atol=1e-6)


def test_input_injection_and_eval_loops(small):
    x = small.train.inputs[:5]
    model = _model(small, n_loops=2, eval_loops=3, loop_injection="add", positional="abacus")
    assert len(model.blocks) == 3 and model.cfg.n_effective_layers == 3
    model.eval()
    logits, cache = model.run_with_cache(x)
    embedded = cache["hook_embed"] + cache["hook_pos_embed"]
    for layer in (1, 2):  # every pass after the first starts from the last one + the input
        assert torch.allclose(cache[f"blocks.{layer}.hook_resid_pre"],
                              cache[f"blocks.{layer - 1}.hook_resid_post"] + embedded)
    assert torch.allclose(forward(model, x), logits, atol=1e-5)
    mid = model(x, stop_at_layer=2)
    assert torch.allclose(mid, cache["blocks.2.hook_resid_pre"])
    assert torch.allclose(model(mid, start_at_layer=2, tokens=x), logits, atol=1e-5)
    model.train()  # two passes while training
    assert "blocks.2.hook_resid_pre" not in model.run_with_cache(x)[1]
    assert torch.allclose(forward(model.eval(), x), logits, atol=1e-5)


def test_rotary_scores_depend_on_distance_only(small):
    q, k = torch.randn(1, 1, 1, 8).expand(1, 12, 1, 8), torch.randn(1, 1, 1, 8).expand(1, 12, 1, 8)
    cos, sin = rotary_tables(12, 8, 10000.0)
    s = torch.einsum("bqhd,bkhd->qk", rotate(q, cos, sin), rotate(k, cos, sin))
    for shift in (1, 5):
        assert torch.allclose(s[shift:, shift:], s[:-shift, :-shift], atol=1e-5)
    assert not torch.allclose(s[0, 1], s[0, 3])
    # in a model: the same token everywhere, rotary the only positional signal -> layer 0's
    # scores are a function of query - key
    model = _model(small, positional="rotary").eval()
    x = torch.full((2, 10), 7)
    logits, cache = model.run_with_cache(x)
    scores = cache["blocks.0.attn.hook_attn_scores"]
    assert "blocks.0.attn.hook_rot_q" in cache and "hook_pos_embed" not in cache
    assert torch.allclose(scores[..., 3:, 3:], scores[..., :-3, :-3], atol=1e-5)
    assert torch.allclose(forward(model, small.train.inputs[:4]), model(small.train.inputs[:4]),
                          atol=1e-5)


def test_default_positions_are_the_learned_table(small):
    model = _model(small)
    assert model.cfg.positional == "learned" and hasattr(model, "W_pos")
    x = small.train.inputs[:3]
    _, cache = model.run_with_cache(x)
    assert torch.equal(cache["hook_pos_embed"][0], model.W_pos[: x.shape[1]])


# 1-2 digit operands, one block, Abacus positions without the offset: about 10 s on one core
LEARN = ["task.max_digits=2", "task.eval_digits=3", "task.n_train=2000", "task.n_test=200",
         "model.n_layers=1", "model.positional=abacus", "model.abacus_max_offset=0",
         "model.d_model=64", "model.n_heads=4", "train.batch_size=64", "train.lr=1e-2",
         "train.warmup_steps=30", "train.weight_decay=0", "train.steps=300",
         "train.eval_every=300", "train.eval_per_decade=0",
         "train.checkpoint_every=0", "train.checkpoint_per_decade=0", "train.train_probe_size=200"]


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("addition") / "run"
    result = CliRunner().invoke(app, ["train", "addition", "--out", str(out), "--no-progress",
                                      *[a for s in LEARN for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    return out


def test_a_tiny_addition_run_learns_and_decoding_agrees(learned_run):
    from groklab.rundir import load_run

    summary = json.loads((learned_run / "summary.json").read_text())
    assert summary["metric"] == "exact"
    # whole answers right (2-3 tokens and <eos>) on unseen rows, from 0 at initialisation
    assert summary["final"]["id"] >= 0.5
    run = load_run(learned_run)
    model, data = run.model().eval(), run.task
    split = data.probes["id"]
    start, length = span_bounds(split.targets)
    eos = data.vocab.id("<eos>")
    out = greedy_decode(model, split.inputs, start, length, eos)
    decoded = [decode_numbers(r.tolist(), data.vocab, True) for r in out]
    right = sum(a + b == c for a, b, c in decoded) / len(decoded)
    assert right == pytest.approx(summary["final"]["id"], abs=1e-6)  # = teacher-forced exact
    one_by_one = torch.cat([greedy_decode(model, split.inputs[i : i + 1], start[i : i + 1],
                                          length[i : i + 1], eos) for i in range(12)])
    assert torch.equal(one_by_one, out[:12])


def test_length_grid_scores_every_cell(learned_run):
    from groklab.analysis.registry import get

    result = get("length_grid").run(learned_run, rows=4)
    assert result.exact.shape == (3, 3)
    assert result.region(True) >= 0.4 and result.region(True) > result.region(False)
    paths = result.save(learned_run)
    assert {p.name for p in paths} == {"length_grid.npz", "length_grid.json", "length_grid.png"}
    saved = json.loads((learned_run / "analysis" / "length_grid.json").read_text())
    assert saved["train_digits"] == [1, 2] and set(saved["exact_by_longest"]) == {"1", "2", "3"}


@pytest.mark.parametrize("sets, message", [
    (["task.min_digits=0"], "min_digits 0"),
    (["model.positional=sinusoidal"], "positional"),
    (["model.positional=abacus", "model.abacus_max_offset=5", "model.abacus_table=20"],
     "abacus_table 20 is too small"),
    (["model.abacus_max_offset=-1"], "abacus_max_offset"),
    (["model.abacus_zero_fraction=1"], "abacus_zero_fraction must be in [0, 1)"),
    (["model.positional=abacus", "model.abacus_learned=false"], "needs model.abacus_init"),
    (["model.n_loops=2", "model.eval_loops=1"], "eval_loops"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, sets, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "addition", "--out", str(out), "--no-progress",
                                      "--set", "task.n_train=50",
                                      *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_rotary_model_matches_transformer_lens(small):
    pytest.importorskip("transformer_lens")
    from groklab.models import to_transformer_lens

    model = _model(small, n_layers=2, positional="rotary").eval()
    tl = to_transformer_lens(model)
    x = small.train.inputs[:3]
    assert torch.allclose(tl(x), model(x), atol=1e-5)
    _, cache = tl.run_with_cache(x)
    _, ours = model.run_with_cache(x)
    assert torch.allclose(cache["blocks.1.attn.hook_rot_k"], ours["blocks.1.attn.hook_rot_k"],
                          atol=1e-5)


@pytest.mark.parametrize("positional", ["learned", "abacus", "rotary", "none"])
def test_cached_decoding_equals_full_forward_decoding(small, positional, monkeypatch):
    from groklab.models import decode

    ood, short = small.probes["ood"], small.probes["id"]
    width = ood.inputs.shape[1]
    pad = small.vocab.id("<pad>")
    inputs = torch.cat([ood.inputs, torch.nn.functional.pad(
        short.inputs, (0, width - short.inputs.shape[1]), value=pad)])  # prompts of all lengths
    targets = torch.cat([ood.targets, torch.nn.functional.pad(
        short.targets, (0, width - short.targets.shape[1]), value=-100)])
    start, length = span_bounds(targets)
    model = _model(small, n_loops=2, eval_loops=3, loop_injection="add", positional=positional,
                   abacus_max_offset=3).eval()
    eos = small.vocab.id("<eos>")
    cached = greedy_decode(model, inputs, start, length, eos)
    # a stop token the model writes often, so rows stop at many different steps
    written = cached[(torch.arange(width) >= start[:, None]) & (torch.arange(width) <
                                                                (start + length)[:, None])]
    stop = int(written.mode().values)
    stopped = greedy_decode(model, inputs, start, length, stop)
    monkeypatch.setattr(decode, "supported", lambda m: False)  # the full-forward loop
    assert torch.equal(cached, greedy_decode(model, inputs, start, length, eos))
    assert not torch.equal(cached, inputs)
    assert torch.equal(stopped, greedy_decode(model, inputs, start, length, stop))
    assert not torch.equal(stopped, cached)  # some rows did stop early


def _offsets(model, x, idx, row) -> list[int]:
    """The offsets k whose shifted table rows equal what row ``row`` of ``x`` was given."""
    pos = model.position_embedding(x)[row]
    return [k for k in range(model.cfg.abacus_max_offset + 1)
            if torch.equal(pos, model.W_abacus[torch.where(idx[row] > 0, idx[row] + k, 0)])]


def test_abacus_row_offsets_are_one_per_row_and_vary_across_rows(small):
    model = _model(small, positional="abacus", abacus_max_offset=7, abacus_offset="row")
    x = small.train.inputs[:16]
    idx = abacus_positions(x, model.is_digit)
    torch.manual_seed(0)
    got = [_offsets(model.train(), x, idx, r) for r in range(len(x))]
    assert all(len(k) == 1 for k in got)  # a, b and c of a row share their offset
    assert len({k[0] for k in got}) > 3
    assert all(_offsets(model.eval(), x, idx, r) == [0] for r in range(len(x)))


def test_abacus_sinusoidal_init_gives_digit_rows_a_relative_structure(small):
    from groklab.models.positions import sinusoidal_rows

    model = _model(small, positional="abacus", abacus_max_offset=3, abacus_init="sinusoidal")
    table = model.W_abacus.detach()
    assert torch.allclose(table[1:], sinusoidal_rows(len(table), 32, 0.02)[1:])
    assert abs(table[1:].std().item() - 0.02) < 0.004  # the size a normal draw has
    # row i . row i+d depends on d alone: one linear map shifts every index by one
    dots = (table[1:-3] * table[4:]).sum(-1)
    assert torch.allclose(dots, dots[0].expand_as(dots), atol=1e-6)
    plain = _model(small, positional="abacus", abacus_max_offset=3).W_abacus.detach()
    near = (plain[1:-3] * plain[4:]).sum(-1)
    assert near.std() > 10 * dots.std()
    assert not table[0].any()  # non-digits start with no position


def test_abacus_frozen_table_is_fixed_sines_whatever_its_size_and_no_step_moves_it(small):
    from groklab.models.positions import FROZEN_SPAN, sinusoidal_rows

    kw = dict(positional="abacus", abacus_max_offset=3, abacus_init="sinusoidal",
              abacus_learned=False)
    model = _model(small, **kw)
    table = model.W_abacus.detach().clone()
    assert not model.W_abacus.requires_grad
    # a larger table (a longer evaluation grid) gives the same rows their same values
    bigger = _model(small, **kw, abacus_table=len(table) + 40).W_abacus.detach()
    assert torch.equal(bigger[: len(table)], table)
    # rows of norm 1 (std d_model ** -0.5), the size a learned table grows to
    assert torch.allclose(table[1:], sinusoidal_rows(len(table), 32, 32 ** -0.5, FROZEN_SPAN)[1:])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = small.train.inputs[:8]
    model.train()(x).logsumexp(-1).mean().backward()
    opt.step()
    assert model.W_abacus.grad is None and torch.equal(model.W_abacus, table)
    learned = _model(small, **{**kw, "abacus_learned": True})
    assert learned.W_abacus.requires_grad  # the default still learns its table


def test_abacus_zero_fraction_draws_offset_zero_at_its_rate():
    from groklab.models.positions import abacus_offset

    pos = torch.tensor([[1, 2, 0, 1]]).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    k = (abacus_offset(pos, 9, True, "row", 0.5, gen) - pos)[:, 0]
    # P(k = 0) = p + (1 - p) / 10; every other k keeps (1 - p) / 10
    assert abs((k == 0).float().mean().item() - 0.55) < 0.015
    assert abs((k == 9).float().mean().item() - 0.05) < 0.006 and k.max() == 9
    plain = (abacus_offset(pos, 9, True, "row", 0.0, gen) - pos)[:, 0]
    assert abs((plain == 0).float().mean().item() - 0.1) < 0.01
    assert torch.equal(abacus_offset(pos, 9, False, "row", 0.5, gen), pos)
