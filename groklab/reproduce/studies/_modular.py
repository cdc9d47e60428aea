"""Small settings and checks shared by the modular-arithmetic studies."""

from __future__ import annotations

import json

from groklab.reproduce.base import Measured, Runs, fmt_step
from groklab.reproduce.studies._scale import TINY_TRAIN

# (a + b) mod 23 with the Nanda one-layer model, full batch: trains in seconds.
TINY_MODULAR = ("task.p=23", "model.d_model=32", "model.d_mlp=64", "model.n_heads=2",
                "model.d_vocab_out=23", "train.train_probe_size=529", *TINY_TRAIN)


def fourier(r: Runs, name: str) -> dict:
    return json.loads(r.analysis(name, "fourier.json").read_text())


def memorize_then_generalize(r: Runs, name: str, key: str = "acc/test") -> Measured:
    """train >= 0.99 first, test >= 0.99 strictly later, test < 0.9 when train got there."""
    m = r.first_step(name, "acc/train", 0.99)
    g = r.first_step(name, key, 0.99)
    cap = r.metric(name, key)[0][-1]
    at = r.at(name, key, m) if m is not None else None
    holds = m is not None and g is not None and g > m and at < 0.9
    return Measured(f"train 0.99 at {fmt_step(m, cap)}"
                    + (f" (test {at:.2f} then)" if at is not None else "")
                    + f", test 0.99 at {fmt_step(g, cap)}"
                    + (f" ({g / m:.1f}x)" if m and g else ""), holds,
                    {"memorized": m, "generalized": g, "test_at_memorized": at})
