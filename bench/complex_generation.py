"""Generation of the complex-reasoning task at the paper's size (1,000 entities, 20 attributes,
20 values, 563K training rows): wall time and peak memory, beside the comparison task built from
the same value table in the same process (so shared load on the machine cancels in the ratio).

    OMP_NUM_THREADS=1 python bench/complex_generation.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import time

from groklab.tasks import make_task


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    base = peak_mb()
    times: dict[str, list[float]] = {"complex": [], "comparison": []}
    peaks = {}
    for _ in range(args.repeat):
        for name, kw in (("complex", {}), ("comparison", {"phi": 7.2})):
            t = time.perf_counter()
            d = make_task(name, **kw)
            times[name].append(time.perf_counter() - t)
            peaks[name] = peak_mb()
            if name == "complex":
                info = d.info
            del d
    c, p = min(times["complex"]), min(times["comparison"])
    print(f"complex (paper size): {c:.2f} s, {info['n_train']:,} train rows, hard pool "
          f"{info['n_hard_pool']:,}, test_hard {info['n_test_hard']}")
    print(f"comparison (same table, phi 7.2): {p:.2f} s; complex / comparison = {c / p:.2f}")
    print(f"peak RSS {peaks['complex']:.0f} MB after complex (process with torch imported: "
          f"{base:.0f} MB before; comparison raises it to {peaks['comparison']:.0f} MB)")


if __name__ == "__main__":
    main()
