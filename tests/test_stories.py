"""The stories task: grammar, probes, split, a tiny LM learning agreement, sampling, curriculum."""

import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import ConfigError, load_config
from groklab.sampling import encode_prompt, sample
from groklab.tasks import TaskError, make_task
from groklab.tasks.stories import StoriesConfig, generate
from groklab.tasks.story_check import violations
from groklab.tasks.story_generate import write_story
from groklab.tasks.story_grammar import lexicon
from groklab.train import Run
from groklab.train.curriculum import BatchSampler
from tests.conftest import TINY_SETS, train_until_killed

SMALL = {"name": "stories", "vocab": "small", "n_train": 300, "n_val": 40, "n_probe": 40}
FEATS = {"dialogue": 0.5, "twist": 0.5, "moral": 0.5, "bad_ending": 0.3}


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_task(SMALL), make_task(SMALL)
    assert torch.equal(a.train.inputs, b.train.inputs)
    assert all(torch.equal(a.probes[k].inputs, b.probes[k].inputs) for k in a.probes)
    c = make_task({**SMALL, "seed": 1})
    assert not torch.equal(a.train.inputs, c.train.inputs)


@pytest.mark.parametrize("tier,tense", [("small", "past"), ("large", "present")])
def test_every_story_parses_and_every_corruption_breaks_a_rule(tier, tense):
    lex = lexicon(tier)
    kinds = set()
    for i in range(40):
        s = write_story(lex, tense, random.Random(f"t:{i}"), FEATS)
        assert violations(s.tokens, lex) == [], " ".join(s.tokens)
        for site in s.sites:
            assert s.tokens[site.pos: site.pos + len(site.good)] == list(site.good)
            bad = s.tokens[: site.pos] + list(site.bad) + s.tokens[site.pos + len(site.good):]
            assert violations(bad, lex), (site, " ".join(bad))
            kinds.add(site.kind)
    assert kinds == {"article", "number", "tense", "pronoun", "entity", "consistency",
                     "negation"}


def test_the_checker_is_not_vacuous():
    lex = lexicon("small")
    s = write_story(lex, "past", random.Random("x"), FEATS).tokens
    swapped = ["is" if t == "was" else t for t in s]  # one verb in the wrong tense
    assert any("story" in v for v in violations(swapped, lex))
    assert violations([t if t != "an" else "a" for t in s] + ["an", "red", "ball"], lex)


def test_train_and_val_are_disjoint_and_probes_are_minimal_pairs():
    cfg = StoriesConfig(**SMALL)
    stories = generate(cfg)
    train = {(s.hero, s.obj) for s in stories["train"]}
    val = {(s.hero, s.obj) for s in stories["val"]}
    assert not train & val
    assert not {tuple(s.tokens) for s in stories["train"]} & {tuple(s.tokens)
                                                              for s in stories["val"]}
    data = make_task(SMALL)
    for skill in data.info["skills"]:
        p = data.probes[skill]
        assert p.inputs.shape[1] == 2 and len(p) > 0
        differ = (p.inputs[:, 0] != p.inputs[:, 1])
        scored = (p.targets[:, 0] != -100)
        assert differ.any(1).all()  # the members differ ...
        assert (differ & ~scored.roll(1, 1)).sum() == 0  # ... only on scored tokens
    with pytest.raises(TaskError, match="probability"):
        make_task({**SMALL, "twist": 1.5})


TINY = ["task.vocab=small", "task.n_train=300", "task.n_val=20", "task.n_probe=50",
        "model.n_layers=1", "model.d_model=32", "model.n_heads=2", "train.batch_size=16",
        "train.lr=1e-2", "train.weight_decay=0.0", "train.eval_every=40",
        "train.eval_per_decade=0", "train.train_probe_size=20", "train.checkpoint_every=40",
        "train.resume_every=40", "train.warmup_steps=0", "train.lr_schedule=constant"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config("stories-1layer", None, [*TINY, "train.steps=40"])
    out = tmp_path_factory.mktemp("stories") / "run"
    Run.start(cfg, out).train()
    return out


def test_a_tiny_lm_learns_agreement(tiny_run):
    from groklab.rundir import load_run

    rows = load_run(tiny_run).metrics
    first, last = rows[0], rows[-1]
    assert first["acc/agreement"] < 0.7  # at chance (0.5) before training
    assert last["acc/agreement"] >= 0.8, last
    assert last["loss/val"] < first["loss/val"] - 1.0


def test_sampling_is_reproducible_and_bad_input_exits_2(tiny_run):
    a = sample(tiny_run, "once upon a time", n=2, seed=3, max_tokens=20)
    assert a == sample(tiny_run, "once upon a time", n=2, seed=3, max_tokens=20)
    assert a != sample(tiny_run, "once upon a time", n=2, seed=4, max_tokens=20)
    assert all(t.startswith("once upon a time") for t in a)
    runner = CliRunner()
    ok = runner.invoke(app, ["sample", str(tiny_run), "--prompt", "Once upon a time,",
                             "--seed", "1", "--max-tokens", "5"])
    assert ok.exit_code == 0 and ok.stdout.startswith("once upon a time ,")
    bad = runner.invoke(app, ["sample", str(tiny_run), "--prompt", "once upon a zebra qux"])
    assert bad.exit_code == 2
    assert "'zebra', 'qux'" in bad.output and len(bad.output.strip().splitlines()) <= 2
    assert runner.invoke(app, ["sample", str(tiny_run), "--top-k", "0"]).exit_code == 2
    assert encode_prompt('lily said , "hi"', ["<pad>", "lily", "said", ",", '"', "hi"]) == [
        1, 2, 3, 4, 5, 4]


def test_curriculum_draws_easy_rows_first_and_resumes_exactly(tmp_path):
    cfg = load_config("composition", None, [*TINY_SETS, "train.steps=50",
                                            "train.curriculum=difficulty",
                                            "train.curriculum_steps=40",
                                            "train.curriculum_start=0.2"])
    data = make_task(cfg.task)
    diff = data.train.meta["difficulty"]
    sampler = BatchSampler(cfg.train, data.train, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    early = sampler(0, g).numpy()
    assert (diff[early] == 0).all()  # atomic facts only at first ...
    assert sampler.pool(0) == (diff == 0).sum() and sampler.pool(40) == len(diff)  # ... all
    again = BatchSampler(cfg.train, data.train, torch.device("cpu"))
    assert np.array_equal(again(0, torch.Generator().manual_seed(0)).numpy(), early)

    full = Run.start(cfg, tmp_path / "full")
    full.train()
    part = Run.start(cfg, tmp_path / "part")
    train_until_killed(part, 45)
    Run.resume(tmp_path / "part").train()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa
    assert strip(full.dir.read_metrics()) == strip(part.dir.read_metrics())

    with pytest.raises(ConfigError, match="difficulty"):
        Run.start(load_config("modular", None, ["train.curriculum=difficulty"]),
                  tmp_path / "none")
    assert not (tmp_path / "none").exists()
