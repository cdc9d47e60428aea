"""The complex-reasoning task: test_hard needs chaining through atomic values, labels follow
the values, both orders of a pair share a split, and the analyses run on it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groklab.tasks import TaskError, make_task
from groklab.tasks.complex import hard_pairs

SMALL = dict(entities=60, attributes=4, values=8, cross_fraction=0.2, test_per_label=4,
             format="compact", atomic_order="attribute_first")


def closure(n: int, facts: list[tuple[int, int, int]]) -> np.ndarray:
    """Brute force: rel[x, y] = 2 if x > y follows, 1 if x >= y follows (no strict step),
    0 if nothing; facts are (x, y, sign of x - y). Floyd-Warshall over (reach, strict)."""
    ge = np.zeros((n, n), dtype=bool)
    gt = np.zeros((n, n), dtype=bool)
    for x, y, s in facts:
        if s >= 0:
            ge[x, y] = True
            gt[x, y] |= s > 0
        if s <= 0:
            ge[y, x] = True
            gt[y, x] |= s < 0
    for k in range(n):
        for i in range(n):
            if not ge[i, k]:
                continue
            for j in range(n):
                if ge[k, j]:
                    gt[i, j] |= gt[i, k] or gt[k, j]
                    ge[i, j] = True
    return np.where(gt, 2, np.where(ge, 1, 0))


def follows(rel: np.ndarray, a: int, b: int, label: int) -> bool:
    if label > 0:
        return rel[a, b] == 2
    if label < 0:
        return rel[b, a] == 2
    return rel[a, b] >= 1 and rel[b, a] >= 1


@settings(max_examples=60, deadline=None)
@given(st.integers(5, 10), st.integers(2, 4), st.data())
def test_test_hard_is_exactly_what_chaining_adds_over_trained_comparisons(n, n_val, data):
    v = np.array(data.draw(st.lists(st.integers(0, n_val - 1), min_size=n, max_size=n)))
    n_ood = data.draw(st.integers(2, n - 2))
    ood = np.zeros((n, 1), dtype=bool)
    ood[:n_ood, 0] = True
    ids = range(n_ood, n)
    id_pairs = [p for p in itertools.combinations(ids, 2) if data.draw(st.booleans())]
    cross = [(i, o) for i in ids for o in range(n_ood) if data.draw(st.booleans())]

    def arr(pairs):
        z = np.array(pairs, dtype=np.int32).reshape(-1, 2)
        return np.zeros(len(z), dtype=np.int32), z[:, 0], z[:, 1]

    got = hard_pairs(v[:, None], ood, arr(id_pairs), arr(cross))
    got = set(zip(got[1].tolist(), got[2].tolist()))

    def fact(x, y):
        return x, y, int(np.sign(v[x] - v[y]))

    atomic_implied = [fact(x, y) for x, y in itertools.combinations(ids, 2)]
    full = closure(n, [fact(*p) for p in cross] + atomic_implied)
    train_only = closure(n, [fact(*p) for p in id_pairs + cross])
    want = {(a, b) for a, b in itertools.combinations(range(n_ood), 2)
            if follows(full, a, b, int(np.sign(v[a] - v[b])))
            and not follows(train_only, a, b, int(np.sign(v[a] - v[b])))}
    assert got == want


@pytest.fixture(scope="module")
def small():
    return make_task("complex", **SMALL)


def test_labels_and_values_agree_and_ood_facts_are_never_trained(small):
    d = small
    values, ood = d.arrays["values"], d.arrays["ood"]
    lab0 = int(d.vocab.ids_of_type("label")[0])
    val0 = int(d.vocab.ids_of_type("value")[0])
    for name, s in [("train", d.train), *d.probes.items()]:
        m, t = s.meta, s.targets.numpy()
        cmp = m["kind"] == 1
        sign = np.sign(values[m["e1"][cmp], m["attribute"][cmp]]
                       - values[m["e2"][cmp], m["attribute"][cmp]])
        assert (t[cmp] == lab0 + sign + 1).all(), name
        assert (t[~cmp] == val0 + values[m["e1"][~cmp], m["attribute"][~cmp]]).all(), name
    tm = d.train.meta
    atomic = tm["kind"] == 0
    assert not ood[tm["e1"][atomic], tm["attribute"][atomic]].any()
    assert atomic.sum() == (~ood).sum()
    both_ood = ood[tm["e1"], tm["attribute"]] & ood[np.maximum(tm["e2"], 0), tm["attribute"]]
    assert not (both_ood & ~atomic).any()  # no OOD-OOD comparison is trained
    assert d.probes["atomic_ood"].meta["e1"].size == ood.sum()


def test_both_orders_share_a_split_and_test_hard_is_balanced_and_unseen(small):
    d = small

    def pairs(s, ordered=True):
        m = s.meta
        keep = m["kind"] == 1
        z = zip(m["attribute"][keep], m["e1"][keep], m["e2"][keep])
        return {(int(a), int(x), int(y)) if ordered else (int(a), *sorted((int(x), int(y))))
                for a, x, y in z}

    hard = pairs(d.probes["test_hard"])
    assert {(a, y, x) for a, x, y in hard} == hard
    train = pairs(d.train)
    assert {(a, y, x) for a, x, y in train} == train
    assert not pairs(d.train, False) & pairs(d.probes["test_hard"], False)
    assert not pairs(d.train, False) & pairs(d.probes["test_id"], False)
    counts = np.bincount(d.probes["test_hard"].targets.numpy()
                         - int(d.vocab.ids_of_type("label")[0]), minlength=3)
    assert counts.tolist() == [4, 4, 4]
    again = make_task("complex", **SMALL)
    assert (again.probes["test_hard"].inputs == d.probes["test_hard"].inputs).all()


def test_paper_totals_and_bad_settings():
    with pytest.raises(TaskError, match="test_per_label 3 is odd"):
        make_task("complex", **{**SMALL, "test_per_label": 3})
    with pytest.raises(TaskError, match="need chaining"):
        make_task("complex", **{**SMALL, "test_per_label": 400})


def test_atomic_repeat_writes_each_id_fact_that_many_times():
    once = make_task("complex", **SMALL)
    thrice = make_task("complex", **{**SMALL, "atomic_repeat": 3})

    def rows(d, kind):
        m = d.train.meta
        keep = m["kind"] == kind
        return sorted(zip(m["attribute"][keep], m["e1"][keep], m["e2"][keep]))

    assert rows(thrice, 0) == sorted(rows(once, 0) * 3)
    assert rows(thrice, 1) == rows(once, 1)  # the comparisons and every probe are unchanged
    for k, s in once.probes.items():
        assert (s.inputs == thrice.probes[k].inputs).all(), k
    with pytest.raises(TaskError, match="atomic_repeat 0 is too small"):
        make_task("complex", **{**SMALL, "atomic_repeat": 0})
