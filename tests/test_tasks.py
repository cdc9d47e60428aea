"""Property tests of the composition and comparison generators at small sizes."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from groklab.tasks import TaskError, make_task
from groklab.tasks.export import export_task

COMP = {"entities": 200, "relations": 20, "out_degree": 10, "phi": 9.0}
CMP = {"entities": 200, "attributes": 10, "values": 20, "phi": 7.2}


@pytest.fixture(scope="module")
def comp():
    return make_task("composition", **COMP)


@pytest.fixture(scope="module", params=[("compact", "attribute_first"), ("paper", "entity_first")])
def cmp(request):
    fmt, order = request.param
    return make_task("comparison", **CMP, format=fmt, atomic_order=order)


# --------------------------------------------------------------------------- composition


def _keys(split):
    """(h, r1, r2) of the inferred rows of a composition split."""
    m = split.meta["kind"] == 1
    return {tuple(x) for x in split.inputs.numpy()[m]}


def test_composition_sizes_match_formulas(comp):
    i = comp.info
    n, r, d = COMP["entities"], COMP["relations"], COMP["out_degree"]
    assert i["n_atomic"] == n * d
    assert i["n_atomic_ood"] == round(0.05 * n * d) == int(comp.arrays["ood"].sum())
    assert i["n_atomic_id"] == i["n_atomic"] - i["n_atomic_ood"]
    assert i["n_paths"] == n * d * d
    assert (
        i["n_train_pool"] + i["n_test_id_pool"] + i["n_test_ood"] + i["n_dropped"] == i["n_paths"]
    )
    assert i["n_train_inferred"] == round(COMP["phi"] * i["n_atomic_id"])
    assert i["phi_realised"] == i["n_train_inferred"] / i["n_atomic_id"]
    assert i["phi_max"] == i["n_train_pool"] / i["n_atomic_id"]
    assert len(comp.train) == i["n_atomic"] + i["n_train_inferred"] == i["n_train"]
    assert (comp.train.meta["kind"] == 1).sum() == i["n_train_inferred"]
    assert len(comp.probes["test_ood"]) == min(i["n_test_ood"], 3000)
    assert len(comp.probes["atomic_ood"]) == i["n_atomic_ood"]
    assert json.loads(json.dumps(comp.info)) == comp.info  # plain JSON values only
    # Graph shape: out_degree distinct relations per head.
    tails = comp.arrays["tails"]
    assert tails.shape == (n, r) and ((tails >= 0).sum(1) == d).all()


def test_composition_no_test_fact_in_train(comp):
    train = _keys(comp.train)
    assert len(train) == comp.info["n_train_inferred"]  # sampled without replacement
    for name in ("test_id", "test_ood"):
        assert not (_keys(comp.probes[name]) & train), name
    assert _keys(comp.probes["train_inferred"]) <= train


def test_composition_hops_and_targets(comp):
    tails, ood = comp.arrays["tails"], comp.arrays["ood"]
    n = COMP["entities"]
    for name, split in [("train", comp.train), *comp.probes.items()]:
        x, m = split.inputs.numpy(), split.meta
        inf = m["kind"] == 1
        h, r1, r2 = x[inf, 0], x[inf, 1] - n, x[inf, 2] - n
        b = tails[h, r1]
        assert (b >= 0).all() and (tails[b, r2] >= 0).all()
        assert (split.targets.numpy()[inf] == tails[b, r2]).all(), name
        assert (m["bridge"][inf] == b).all() and (m["bridge"][~inf] == -1).all()
        assert (m["hop1"][inf] == np.stack([h, r1, b], 1)).all()
        assert (m["hop2"][inf] == np.stack([b, r2, tails[b, r2]], 1)).all()
        assert (m["hop2"][~inf] == -1).all()
        o1, o2 = ood[h, r1], ood[b, r2]
        if name == "test_ood":
            assert inf.all() and (o1 & o2).all()
        else:  # train, train_inferred, test_id: both hops ID, never exactly one OOD
            assert not (o1 | o2).any(), name
        # Atomic rows: [h, r, pad] -> t at position 1.
        ah, ar = x[~inf, 0], x[~inf, 1] - n
        assert (split.targets.numpy()[~inf] == tails[ah, ar]).all()
        assert (x[~inf, 2] == len(comp.vocab) - 1).all()
        assert (split.answer_pos.numpy() == np.where(inf, 2, 1)).all()


def test_composition_ood_atomic_in_train_and_types(comp):
    ood = comp.arrays["ood"]
    x = comp.train.inputs.numpy()[comp.train.meta["kind"] == 0]
    n_ood_in_train = ood[x[:, 0], x[:, 1] - COMP["entities"]].sum()
    assert n_ood_in_train == comp.info["n_atomic_ood"] > 0
    ent = set(comp.vocab.ids_of_type("entity").tolist())
    for split in [comp.train, *comp.probes.values()]:
        assert split.inputs.shape[1] == 3 and split.inputs.dtype == torch.int64
        assert set(split.targets.tolist()) <= ent
    assert comp.vocab.tokens[-1] == "<pad>" and comp.vocab.types[-1] == "special"


def test_composition_determinism():
    a = make_task("composition", **COMP, seed=3)
    b = make_task("composition", **COMP, seed=3)
    c = make_task("composition", **COMP, seed=4)
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(
        a.train.targets, b.train.targets
    )
    for k in a.probes:
        assert torch.equal(a.probes[k].inputs, b.probes[k].inputs)
    assert not torch.equal(a.train.targets, c.train.targets)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"entities": 0}, "entities 0"),
        ({"relations": -1}, "relations -1"),
        ({"out_degree": 0}, "out_degree 0"),
        ({"probe_size": 0}, "probe_size 0"),
        ({"relations": 20, "out_degree": 30}, "out_degree 30 exceeds relations 20"),
        ({"ood_fraction": 1.0}, "ood_fraction 1.0 is outside [0, 1)"),
        ({"test_id_fraction": -0.1}, "test_id_fraction -0.1"),
        ({"phi": -1.0}, "phi -1.0"),
        ({"seed": -1}, "seed -1"),
        ({"phi": 12.0}, "feasible maximum 9.45"),
    ],
)
def test_composition_validation(kw, needle):
    cfg = {**COMP, **kw}
    with pytest.raises(TaskError) as e:
        make_task("composition", **cfg)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_composition_paper_size_builds_fast():
    t0 = time.perf_counter()
    d = make_task("composition", entities=2000, relations=200, out_degree=20, phi=7.2)
    assert time.perf_counter() - t0 < 10
    assert d.info["n_atomic_id"] == 38_000 and d.info["n_train_inferred"] == 273_600
    assert len(d.train) == 40_000 + 273_600
    assert 600_000 < d.info["n_train_pool"] < 800_000


# --------------------------------------------------------------------------- comparison


def test_comparison_sizes(cmp):
    i = cmp.info
    n, a = CMP["entities"], CMP["attributes"]
    n_ood = round(0.1 * n)
    assert i["n_atomic"] == n * a and i["n_atomic_ood"] == n_ood * a
    assert i["n_pairs"] == a * n * (n - 1)
    assert (
        i["n_train_pool"] + i["n_test_id_pool"] + i["n_test_ood"] + i["n_dropped"] == i["n_pairs"]
    )
    assert i["n_test_ood"] == a * n_ood * (n_ood - 1)
    assert i["n_train_inferred"] == round(CMP["phi"] * i["n_atomic_id"])
    assert len(cmp.train) == i["n_atomic"] + i["n_train_inferred"]
    # ~10% of the ID pairs go to test_id.
    assert 0.07 < i["n_test_id_pool"] / (i["n_test_id_pool"] + i["n_train_pool"]) < 0.13
    assert json.loads(json.dumps(cmp.info)) == cmp.info


def test_comparison_labels_values_and_splits(cmp):
    values, ood = cmp.arrays["values"], cmp.arrays["ood"]
    paper = "<q>" in cmp.vocab.tokens
    label_ids = set(cmp.vocab.ids_of_type("label").tolist())
    value_ids = set(cmp.vocab.ids_of_type("value").tolist())
    for name, split in [("train", cmp.train), *cmp.probes.items()]:
        m, y = split.meta, split.targets.numpy()
        c = m["kind"] == 1
        k, e1, e2 = m["attribute"][c], m["e1"][c], m["e2"][c]
        assert (e1 != e2).all()
        v1, v2 = values[e1, k], values[e2, k]
        assert (m["v1"][c] == v1).all() and (m["v2"][c] == v2).all()
        lab = np.sign(v1 - v2) + 1
        words = [cmp.vocab.tokens[t] for t in y[c]]
        expect = [
            f"<attr_{kk}_{ll}>" if paper else ("<lt>", "<eq>", "<gt>")[ll] for kk, ll in zip(k, lab)
        ]
        assert words == expect, name
        assert set(y[c].tolist()) <= label_ids and set(y[~c].tolist()) <= value_ids
        assert (split.answer_pos.numpy()[c] == (4 if paper else 2)).all()
        assert (split.answer_pos.numpy()[~c] == 1).all()
        # Atomic targets are the value tokens.
        ak, ae = m["attribute"][~c], m["e1"][~c]
        assert [cmp.vocab.tokens[t] for t in y[~c]] == [f"<v_{v}>" for v in values[ae, ak]]
        o1, o2 = ood[e1, k], ood[e2, k]
        if name == "test_ood":
            assert c.all() and (o1 & o2).all()
        else:
            assert not (o1 | o2).any(), name
    # OOD atomic facts are trained on.
    t = cmp.train.meta
    a = t["kind"] == 0
    assert ood[t["e1"][a], t["attribute"][a]].sum() == cmp.info["n_atomic_ood"]


def test_comparison_both_orders_same_split():
    # Small enough that the probes hold whole splits, so "the other order is in this split"
    # can be checked directly.
    d = make_task("comparison", entities=30, attributes=3, values=5, phi=5.0, probe_size=10**6)
    pairs = {}
    for name in ("test_id", "test_ood"):
        m = d.probes[name].meta
        s = set(zip(m["attribute"].tolist(), m["e1"].tolist(), m["e2"].tolist()))
        assert all((k, b, a) in s for k, a, b in s), name
        pairs[name] = s
    m = d.train.meta
    c = m["kind"] == 1
    train = set(zip(m["attribute"][c].tolist(), m["e1"][c].tolist(), m["e2"][c].tolist()))
    for name, s in pairs.items():  # neither order of a test pair is trained on
        assert not (s & train), name
    assert len(train) == d.info["n_train_inferred"]


def test_comparison_ood_split_is_per_attribute(cmp):
    ood = cmp.arrays["ood"]
    assert (ood.sum(0) == round(0.1 * CMP["entities"])).all()
    sets = {tuple(np.flatnonzero(ood[:, k])) for k in range(CMP["attributes"])}
    assert len(sets) == CMP["attributes"]


def test_comparison_formats():
    compact = make_task("comparison", **CMP, format="compact", atomic_order="attribute_first")
    v = compact.vocab
    assert (
        compact.seq_len == 3 and "<q>" not in v.tokens and {"<lt>", "<eq>", "<gt>"} <= set(v.tokens)
    )
    row = compact.train.inputs[0].tolist()
    assert (
        v.types[row[0]] == "attribute"
        and v.types[row[1]] == "entity"
        and v.tokens[row[2]] == "<pad>"
    )
    paper = make_task("comparison", **CMP, format="paper", atomic_order="entity_first")
    v = paper.vocab
    assert paper.seq_len == 5 and len(v.ids_of_type("label")) == 3 * CMP["attributes"]
    row = paper.train.inputs[0].tolist()
    assert v.types[row[0]] == "entity" and v.types[row[1]] == "attribute"
    c = np.flatnonzero(paper.train.meta["kind"] == 1)[0]
    assert [v.types[t] for t in paper.train.inputs[c].tolist()] == [
        "attribute",
        "special",
        "entity",
        "special",
        "entity",
    ]


def test_comparison_determinism():
    a = make_task("comparison", **CMP, seed=1)
    b = make_task("comparison", **CMP, seed=1)
    c = make_task("comparison", **CMP, seed=2)
    assert torch.equal(a.train.inputs, b.train.inputs)
    for k in a.probes:
        assert torch.equal(a.probes[k].inputs, b.probes[k].inputs)
    assert np.array_equal(a.arrays["ood"], b.arrays["ood"])
    assert not torch.equal(a.train.inputs, c.train.inputs)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"entities": 1}, "entities 1"),
        ({"attributes": 0}, "attributes 0"),
        ({"values": 1}, "values 1"),
        ({"probe_size": 0}, "probe_size 0"),
        ({"ood_fraction": 1.5}, "ood_fraction 1.5"),
        ({"test_id_fraction": 1.0}, "test_id_fraction 1.0"),
        ({"entities": 10, "ood_fraction": 0.95}, "at least 2"),
        ({"phi": -0.5}, "phi -0.5"),
        ({"seed": -2}, "seed -2"),
        ({"entities": 10, "phi": 1000.0}, "feasible maximum"),
    ],
)
def test_comparison_validation(kw, needle):
    with pytest.raises(TaskError) as e:
        make_task("comparison", **{**CMP, **kw})
    assert needle in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- export


def test_export_composition(tmp_path):
    d = make_task("composition", entities=30, relations=6, out_degree=3, phi=2.0, probe_size=50)
    out = tmp_path / "comp"
    export_task(d, out)
    names = {p.name for p in out.iterdir()}
    assert names == {"vocab.json", "info.json", "train.jsonl", *(f"{k}.jsonl" for k in d.probes)}
    assert json.loads((out / "info.json").read_text()) == d.info
    assert json.loads((out / "vocab.json").read_text())["tokens"] == d.vocab.tokens
    rows = [json.loads(s) for s in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == len(d.train)
    inf = [r for r in rows if r["kind"] == "inferred"]
    r = inf[0]
    assert len(r["input"]) == r["answer_pos"] + 1 == 3 and r["split"] == "train"
    (h, r1, b), (b2, r2, t) = r["hops"]
    assert [h, r1, r2] == r["input"] and b == b2 and t == r["target"]
    atom = next(r for r in rows if r["kind"] == "atomic")
    assert len(atom["input"]) == 2 and "hops" not in atom
    with pytest.raises(TaskError, match="not empty"):
        export_task(d, out)
    # An existing empty directory is fine; no temp directories are left behind.
    (tmp_path / "empty").mkdir()
    export_task(d, tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comp", "empty"]


def test_export_comparison(tmp_path):
    d = make_task("comparison", entities=20, attributes=2, values=5, phi=2.0, probe_size=40)
    export_task(d, tmp_path / "x")
    rows = [json.loads(s) for s in (tmp_path / "x" / "test_ood.jsonl").read_text().splitlines()]
    assert rows and all(r["kind"] == "inferred" and len(r["values"]) == 2 for r in rows)
    assert rows[0]["attribute"] == rows[0]["input"][0]
    atom = json.loads((tmp_path / "x" / "atomic_id.jsonl").read_text().splitlines()[0])
    assert atom["values"][1] is None and atom["target"] == f"<v_{atom['values'][0]}>"
