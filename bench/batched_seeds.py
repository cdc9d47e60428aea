"""N members trained as one batched model against N separate runs, side by side in one run.

Model and batch of composition-small (4 layers, d_model 128, 4 heads, batch 512, 3 tokens);
members differ in seed and learning rate. For each N in --members, rounds alternate between
"every separate run takes one step" (N eager steps, the loop a sweep of separate runs
executes) and "the batched model takes one step" (one StackedStep), so machine load hits
both alike. Evaluation and checkpoints are left out: they cost the same per member either way.

Prints one JSON line per N: member-steps/s separate and batched, and speedup = batched/separate
(the issue's goal on a GPU: >= 0.8 N for N <= 16; on a CPU the device is already saturated by
one run, so expect little).

    python bench/batched_seeds.py [--members 1,4,16] [--steps 6] [--device auto]
    python bench/batched_seeds.py --set model.d_model=32 --set model.n_layers=2  # a tiny model
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from groklab.config import load_config
from groklab.tasks import make_task
from groklab.train.batched import StackedStep
from groklab.train.loop import Run
from groklab.train.steps import EagerStep


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(n: int, steps: int, warmup: int, device: str, preset: str, sets: list) -> dict:
    lrs = [1e-3 * (1 + 0.1 * i) for i in range(n)]
    cfgs = [load_config(preset, None, [*sets, f"train.seed={i}", f"train.lr={lrs[i]}",
                                       f"train.device={device}"]) for i in range(n)]
    data = make_task(cfgs[0].task)
    separate = [Run(c, f"/nonexistent/sep{i}", data=data) for i, c in enumerate(cfgs)]
    steps_sep = [EagerStep(r) for r in separate]
    members = [Run(c, f"/nonexistent/bat{i}", data=data) for i, c in enumerate(cfgs)]
    batched = StackedStep(members)
    for r in separate + members:
        r.set_lr(r.lr())
    dev = separate[0].device
    t_sep = t_bat = 0.0
    for rnd in range(warmup + steps):
        t0 = time.perf_counter()
        for r, step in zip(separate, steps_sep):
            r.loss_sum += step()[0]
        sync(dev)
        t1 = time.perf_counter()
        losses = batched()
        for i, r in enumerate(members):
            r.loss_sum += losses[i]
        sync(dev)
        t2 = time.perf_counter()
        if rnd >= warmup:
            t_sep += t1 - t0
            t_bat += t2 - t1
    sep = n * steps / t_sep
    bat = n * steps / t_bat
    return {"members": n, "device": str(dev), "separate_member_steps_per_s": round(sep, 2),
            "batched_member_steps_per_s": round(bat, 2), "speedup": round(bat / sep, 2),
            "speedup_per_member": round(bat / sep / n, 3),
            "ms_per_step_separate_run": round(1000 * t_sep / (n * steps), 1),
            "ms_per_batched_step": round(1000 * t_bat / steps, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="1,4,16")
    ap.add_argument("--steps", type=int, default=6, help="timed rounds per N")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", default="composition-small")
    ap.add_argument("--set", action="append", default=[], help="override, e.g. model.d_model=32")
    args = ap.parse_args()
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "cpu": platform.processor() or platform.machine(),
                      "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}))
    for n in (int(x) for x in args.members.split(",")):
        print(json.dumps(measure(n, args.steps, args.warmup, args.device, args.preset,
                                 args.set)),
              flush=True)


if __name__ == "__main__":
    main()
