"""Refactors must not change what training computes: the first metrics rows of every shipped
preset (1 thread, CPU, a few dozen steps) are pinned in tests/data/preset_metrics.json, written
by tests/pin_presets.py, and must come out identical (time aside)."""

import json

import pytest

from groklab.config import preset_names
from tests.pin_presets import PIN, preset_rows

PINNED = json.loads(PIN.read_text())
# The paper-scale presets build 8 x 768 models: pinned too, in the slow tier.
HEAVY = {"composition-paper", "comparison-paper", "complex-paper"}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in preset_names()])
def test_preset_metrics_are_unchanged(name):
    assert name in PINNED, f"preset {name} is not pinned: run python tests/pin_presets.py {name}"
    assert preset_rows(name) == PINNED[name]
