"""Pins the first metrics rows of every shipped preset (1 thread, CPU, a few dozen steps).

``python tests/pin_presets.py`` rewrites tests/data/preset_metrics.json; run it only when a
change is *meant* to alter training numbers, and say so in the commit. tests/test_pinned.py
trains the same short runs and asserts every row is identical (time aside).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

PIN = Path(__file__).parent / "data" / "preset_metrics.json"
# Paper-scale presets are 8 x 768 models with bf16 autocast: a handful of steps is enough.
STEPS = {"composition-paper": 3, "comparison-paper": 3, "complex-paper": 3,
         "complex-small": 10}  # 21K rows x 4 layers x batch 512: 10 small steps pin it
DEFAULT_STEPS = 30


def pin_sets(name: str) -> list[str]:
    steps = STEPS.get(name, DEFAULT_STEPS)
    every = steps if steps < 10 else 10  # a paper preset: its first and last rows (evaluations
    # of an 8 x 768 model are most of its pin)
    # An 8 x 768 model's steps and evaluations dominate its pin: 64 rows a batch and 256 a
    # probe pin its data, init, forward and update as well.
    probes = ["task.probe_size=256", "train.batch_size=64"] if name in STEPS else []
    return [*probes, f"train.steps={steps}", f"train.eval_every={every}", "train.eval_per_decade=0",
            "train.device=cpu", "train.checkpoint_every=0", "train.checkpoint_per_decade=0",
            f"train.resume_every={steps}", "train.eval_batch_size=1024"]


def preset_rows(name: str) -> list[dict]:
    import warnings

    from groklab.config import load_config
    from groklab.train.loop import Run

    torch.set_num_threads(1)
    cfg = load_config(name, None, pin_sets(name))
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Run.start(cfg, Path(d) / "run").train()
        rows = [json.loads(line) for line in (Path(d) / "run" / "metrics.jsonl").open()]
    for r in rows:
        r.pop("time", None)
    return rows


def main() -> None:
    from groklab.config import preset_names

    names = sys.argv[1:] or preset_names()
    pins = json.loads(PIN.read_text()) if PIN.exists() else {}
    for name in names:
        pins[name] = preset_rows(name)
        print(name, len(pins[name]), "rows", flush=True)
    PIN.parent.mkdir(exist_ok=True)
    PIN.write_text(json.dumps(pins, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
