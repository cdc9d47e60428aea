"""Sweeps: many runs from one spec, on one device, in local processes or on a Ray cluster.

    spec = load_spec("composition-phi")                 # or a YAML file
    rows = run_sweep(spec, "sweeps/phi", batched=True)  # resumable; rows of sweep.jsonl
    result = phase.run("sweeps/phi")                    # phase diagrams
"""

from groklab.sweep.runner import read_index, run_sweep
from groklab.sweep.spec import SweepError, SweepSpec, load_spec, parse_spec, sweep_names

__all__ = ["SweepError", "SweepSpec", "load_spec", "parse_spec", "read_index", "run_sweep",
           "sweep_names"]
