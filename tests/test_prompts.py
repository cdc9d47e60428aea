"""The LLM bridge: prompts read back to the questions they were made from, the scorer follows
the papers' rules, and the command line round trip (with a tiny offline language model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from groklab.bridge import prompts as bp
from groklab.bridge.complex_prompts import parse_answer as parse_complex
from groklab.bridge.family_prompts import parse_answer as parse_family
from groklab.bridge.names import names
from groklab.bridge.scoring import wilson
from groklab.cli import app

COMPLEX = ["task.entities=60", "task.attributes=4", "task.values=8", "task.cross_fraction=0.2",
           "task.test_per_label=4", "task.format=compact", "task.atomic_order=attribute_first"]
FAMILY = ["task.families=[aiw,cousins,two_step]",
          "task.heldout_types=[brother.sisters,sister.brother.sisters]"]


@pytest.mark.parametrize("style", ["age", "plain"])
def test_complex_prompts_read_back_to_their_questions(style):
    full = bp.export("complex", "complex", style=style, context="full", sets=COMPLEX)
    near = bp.export("complex", "complex", style=style, context="retrieval", sets=COMPLEX)
    bare = bp.export("complex", "complex", style=style, context="none", sets=COMPLEX)
    nm = names(60, 0)
    assert len(full) == 12 and len(set(nm)) == 60
    for f, r, b in zip(full, near, bare):
        m = f["meta"]
        back = bp.parse_back(f)
        assert back["names"] == [nm[m["e1"]], nm[m["e2"]]]
        assert back["attribute"] in (None, m["attribute"])
        assert parse_complex(f["answer"], style) == m["label"]  # the gold answer parses back
        facts, kept = set(f["prompt"].splitlines()[:-1]), set(r["prompt"].splitlines()[:-1])
        assert kept < facts and len(facts) == m["n_facts"]
        # retrieval keeps every fact that names a query entity
        for line in facts - kept:
            assert not set(back["names"]) & set(line.rstrip(".").split())
        assert b["prompt"].count("\n") == 0


def test_family_prompts_read_back_to_their_questions():
    rows = bp.export("family", "family", suffix="all", sets=FAMILY)
    assert {r["meta"]["variant"] for r in rows} == {"standard", "thinking", "restricted"}
    assert {r["meta"]["split"] for r in rows} == {"test_pairs", "test_types"}
    for r in rows:
        m, back = r["meta"], bp.parse_back(r)
        assert (back["subject"], back["n"], back["m"], back["qtype"]) == \
            (m["subject"], m["n"], m["m"], m["label"])
        if "cousin" in m["label"]:
            assert (back["p"], back["q"]) == (m["p"], m["q"])
        assert r["prompt"].endswith('"### Answer: ".')
    aiw = next(r for r in rows if r["meta"]["label"] == "brother.sisters"
               and r["meta"]["subject"] == "Alice")
    m = aiw["meta"]
    assert aiw["prompt"].startswith(f"Alice has {m['n']} brother")
    assert "How many sisters does Alice's brother have?" in aiw["prompt"]
    assert aiw["answer"] == str(m["m"] + 1)
    two = next(r for r in rows if r["meta"]["label"] == "sister.brother.sisters")
    assert "does the brother of " in two["prompt"] and "'s sister have?" in two["prompt"]


def test_answers_are_scored_the_papers_way():
    assert parse_complex("Reasoning... so the final answer: older", "age") == ">"
    assert parse_complex("Dapo is younger than Begil.", "age") == "<"
    assert parse_complex("They are the same age. Final answer: same age", "age") == "="
    assert parse_complex("Final answer: I cannot decide from the facts.", "age") == "undecided"
    assert parse_complex("younger or older", "age") == "unparseable"
    assert parse_complex("final answer: higher", "plain") == ">"
    assert parse_complex("final answer: higher", "age") == "unparseable"
    assert parse_family("Let me think. 3 sisters plus Alice.\n### Answer: 4") == "4"
    assert parse_family("### Answer: 3 ... wait, ### Answer: **5**") == "5"
    assert parse_family(" 7 ") == "7"
    assert parse_family("The answer is 2.") == "2"
    assert parse_family("Alice has 2 brothers and 3 sisters.") == "unparseable"
    lo, hi = wilson(5, 10)
    assert abs(lo - 0.2366) < 1e-3 and abs(hi - 0.7634) < 1e-3
    assert wilson(0, 0) == (0.0, 1.0) and wilson(10, 10)[1] == 1.0


def _byte_lm(seed: int = 0):
    """A tiny untrained causal transformer over bytes, greedy decoding: an offline 'LLM'."""
    from groklab.models import build_model
    from groklab.models.config import ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2).resolved(d_vocab=256, n_ctx=48)
    model = build_model(cfg).eval()

    @torch.no_grad()
    def generate(prompt: str, new: int = 12) -> str:
        ids = list(prompt.encode())[-(48 - new):]
        for _ in range(new):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        return bytes(ids[-new:]).decode("latin-1")

    return generate


def test_cli_round_trip_with_an_offline_model_and_a_grokked_run(tmp_path):
    from groklab.config import load_config
    from groklab.train import Run

    run_dir = tmp_path / "run"
    Run.start(load_config("family", None, [*FAMILY, "model.n_layers=1", "model.d_model=32",
                                           "model.n_heads=2", "train.steps=20",
                                           "train.eval_every=20", "train.eval_per_decade=0",
                                           "train.checkpoint_per_decade=0"]), run_dir).train()
    pf, runner = tmp_path / "p.jsonl", CliRunner()
    res = runner.invoke(app, ["export-prompts", "family", str(run_dir), "--out", str(pf),
                              "--limit", "20"])
    assert res.exit_code == 0, res.output
    items = bp.read_prompts(pf)
    lm = _byte_lm()
    for name, fn in (("lm", lm), ("oracle", lambda p: None)):
        answers = bp.answer_with(items, fn) if name == "lm" else \
            [{"id": it["id"], "response": f"### Answer: {it['answer']}"} for it in items]
        af = tmp_path / f"{name}.jsonl"
        bp.write_jsonl(answers, af)
        res = runner.invoke(app, ["score-prompts", str(pf), str(af), "--run", str(run_dir),
                                  "--out", str(tmp_path / f"{name}.json")])
        assert res.exit_code == 0, res.output
        result = json.loads((tmp_path / f"{name}.json").read_text())
        top = result["table"][0]
        assert top["name"] == "all" and top["n"] == 40
        if name == "oracle":
            assert top["accuracy"] == 1.0 and "grokked" in res.output
        else:  # random bytes rarely say "### Answer: <the number>"
            assert top["accuracy"] < 0.5
        model_acc = np.mean([r["correct"] for r in result["rows"]])
        assert model_acc == top["accuracy"]
        assert 0.0 <= top["model_accuracy"] <= 1.0


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    runner = CliRunner()
    pf = tmp_path / "p.jsonl"
    cases = [
        (["export-prompts", "modular", "modular", "--out", str(pf)], "has no prompts"),
        (["export-prompts", "complex", "complex", "--out", str(pf), "--style", "poem"],
         "--style"),
        (["export-prompts", "complex", "family", "--out", str(pf)], "is a family task"),
        (["export-prompts", "family", "nosuch", "--out", str(pf)], "unknown task or preset"),
        (["score-prompts", str(tmp_path / "none.jsonl"), str(pf)], "does not exist"),
    ]
    for args, msg in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and msg in res.output, (args, res.output)
    assert not pf.exists()
    runner.invoke(app, ["export-prompts", "family", "family", "--out", str(pf), "--limit", "2"])
    bad = tmp_path / "a.jsonl"
    for text, msg in (("{not json", "is not JSON"),
                      ('{"id": "zzz", "response": "1"}', "ids not in the prompts"),
                      ('{"id": "x"}', "has no text")):
        bad.write_text(text + "\n")
        res = runner.invoke(app, ["score-prompts", str(pf), str(bad)])
        assert res.exit_code == 2 and msg in res.output, (text, res.output)
