"""The family (Alice in Wonderland) task: answers against an explicitly built family, the
held-out (N, M) pairs and question types, and the analyses on a tiny run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from typer.testing import CliRunner

from groklab.cli import app
from groklab.config import load_config
from groklab.tasks import TaskError, make_task
from groklab.tasks.family import FAMILIES, answer, split_type


def brute_force(male: bool, n: int, m: int, p: int, q: int, qtype: str) -> int | None:
    """Build the people and count. Person: (group, is_male); group 0 = the subject's siblings,
    1 = the aunt's children (the cousins). Every choice of relative must give one count."""
    people = [(0, male)] + [(0, True)] * n + [(0, False)] * m + [(1, True)] * p \
        + [(1, False)] * q
    hops, ask = split_type(qtype)

    def relatives(x: int, rel: str) -> list[int]:
        g, _ = people[x]
        want_male = rel in ("brother", "mcousin", "brothers", "mcousins")
        group = g if rel.rstrip("s") in ("brother", "sister") else 1 - g
        return [y for y, (gy, my) in enumerate(people) if y != x and gy == group
                and my == want_male]

    frontier = [0]
    for h in hops:
        frontier = [y for x in frontier for y in relatives(x, h)]
        if not frontier:
            return None
    counts = {len(relatives(x, ask)) for x in frontier}
    assert len(counts) == 1, (qtype, counts)
    return counts.pop()


def test_closed_form_counts_match_an_explicit_family():
    types = [t for f in FAMILIES.values() for t in f]
    grid = list(itertools.product((False, True), range(4), range(4), range(3), range(3)))
    male, n, m, p, q = (np.array(c) for c in zip(*grid))
    for t in types:
        hops, ask = split_type(t)
        got = answer(male, n, m, p, q, hops, ask)
        want = [brute_force(*row, t) for row in grid]
        assert got.tolist() == [-1 if w is None else w for w in want], t
    # the paper's four variations (Alice's brother's sisters) and its ground truth table
    aiw = answer(np.zeros(4, bool), np.array([3, 4, 1, 4]), np.array([6, 2, 4, 1]),
                 np.zeros(4), np.zeros(4), ["brother"], "sisters")
    assert aiw.tolist() == [7, 3, 5, 2]


def test_held_out_pairs_and_types_never_reach_training():
    d = make_task("family", families=["aiw", "cousins", "two_step"],
                  heldout_types=["brother.sisters", "sister.brother.sisters"])
    types = d.info["question_types"]
    held_pairs = {tuple(p) for p in d.info["heldout_pairs"]}
    held_types = {types.index(t) for t in d.info["heldout_types"]}
    tm = d.train.meta
    assert not {(a, b) for a, b in zip(tm["n"].tolist(), tm["m"].tolist())} & held_pairs
    assert not set(tm["qtype"].tolist()) & held_types
    tp, tt = d.probes["test_pairs"].meta, d.probes["test_types"].meta
    assert {(a, b) for a, b in zip(tp["n"].tolist(), tp["m"].tolist())} <= held_pairs
    assert set(tt["qtype"].tolist()) == held_types
    assert not {(a, b) for a, b in zip(tt["n"].tolist(), tt["m"].tolist())} & held_pairs
    row = d.train.inputs[0]
    assert d.vocab.types[int(row[0])] == "entity" and d.vocab.types[int(row[1])] == "number"
    num0 = int(d.vocab.ids_of_type("number")[0])
    assert (d.train.targets.numpy() - num0 == tm["answer"]).all()
    with pytest.raises(TaskError, match="not question types"):
        make_task("family", heldout_types=["aunt.sisters"])


def test_logit_lens_and_causal_tracing_run_on_tiny_family_and_complex_runs(tmp_path):
    from groklab.train import Run

    base = ["model.n_layers=2", "model.d_model=32", "model.n_heads=2", "train.batch_size=128",
            "train.eval_every=20", "train.checkpoint_every=20", "train.steps=20",
            "train.eval_per_decade=0", "train.checkpoint_per_decade=0",
            "train.lr=3e-3"]
    tasks = {"family": ["task.n_max=4", "task.m_max=4", "task.cousins_max=1",
                        "task.families=[aiw,cousins]"],
             "complex": ["task.entities=60", "task.attributes=4", "task.values=8",
                         "task.cross_fraction=0.2", "task.test_per_label=4",
                         "task.format=compact", "task.atomic_order=attribute_first"]}
    from groklab.analysis import causal_tracing, logit_lens

    for name, sets in tasks.items():
        run_dir = tmp_path / name
        Run.start(load_config(name, None, [*base, *sets]), run_dir).train()
        if name == "family":  # the command line once; the library (no figures) for complex
            res = CliRunner().invoke(app, ["analyze", str(run_dir), "--logit-lens",
                                           "--causal-tracing", "--examples", "30",
                                           "--checkpoints", "last", "--rome", "none"])
            assert res.exit_code == 0, res.output
            valid = np.load(run_dir / "analysis" / "causal_tracing.npz")["test_id.valid"]
            # subject, N, M, P, Q, hop1, hop2, ask; some count changes every answer
            assert valid.shape[0] == 8 and valid[1:5].any(0).all()
        else:
            lens = logit_lens.run(run_dir, checkpoints="last", n_examples=30)
            assert lens.has("test_hard", "v1") and lens.has("test_hard", "answer")
            ct = causal_tracing.run(run_dir, checkpoints="last", n_examples=30, rome=False)
            assert ct.slots == ["a", "e1", "e2"] and "test_hard" in ct.splits
            assert ct.arrays["test_hard.valid"].any(1).all()
