"""groklab's MNIST-1D generator against the reference package's ``make_dataset``, side by side.

For each sample count, both generate the dataset from the default arguments (seed 42); the
script checks the outputs are bitwise equal and prints one JSON line with the seconds of each
(best of ``--repeats``) and their ratio. Target: reference / groklab >= 20 at 50,000 samples.

The reference needs scipy and the ``mnist1d`` package, which groklab does not depend on: run
the script with a Python that has them (and numpy). It loads groklab's generator module by file
path, so torch is not needed there:

    python -m venv /tmp/m1d && /tmp/m1d/bin/pip install mnist1d==0.0.2.post1
    OMP_NUM_THREADS=1 /tmp/m1d/bin/python bench/mnist1d_generate.py [--samples 5000 50000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent.parent / "groklab" / "tasks" / "mnist1d_generate.py"


def _ours():
    spec = importlib.util.spec_from_file_location("mnist1d_generate", HERE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _best(fn, repeats: int):
    out, best = None, float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, nargs="+", default=[5000, 50000])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from mnist1d.data import get_dataset_args, make_dataset  # never get_dataset: it downloads

    ours = _ours()
    for n in args.samples:
        ref_args = get_dataset_args()
        ref_args.num_samples = n
        ref, t_ref = _best(lambda a=ref_args: make_dataset(a), args.repeats)
        mine, t_ours = _best(lambda k=n: ours.make_dataset(num_samples=k), args.repeats)
        equal = all(np.array_equal(np.asarray(ref[k]), np.asarray(mine[k]))
                    for k in ("x", "x_test", "y", "y_test", "t"))
        print(json.dumps({"samples": n, "reference_s": round(t_ref, 3),
                          "groklab_s": round(t_ours, 3), "ratio": round(t_ref / t_ours, 1),
                          "bitwise_equal": equal,
                          "threads": os.environ.get("OMP_NUM_THREADS", "unset")}))


if __name__ == "__main__":
    main()
