"""What ``checkpoints/resume.pt`` holds and how a run is put back from it.

The state is tensors, numbers, strings and plain containers only, so it loads with
``torch.load(weights_only=True)`` (groklab.rundir): a planted pickle cannot execute. It may come
from another device or step kind (a CUDA-graph run's capturable AdamW, resumed on a CPU): the
loading run keeps its own optimizer kernels and moves step counts where they must be.
"""

from __future__ import annotations

import torch


def run_state(run) -> dict:
    return {
        "step": run.step,
        "model": run.model.unique_state_dict(),
        "optimizer": _plain_optimizer_state(run.optimizer.state_dict()),
        "generator": run.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "loss_sum": run.loss_sum.detach().clone(),
        "loss_count": run.loss_count,
        "elapsed": run.elapsed_now(),
        "accelerators": run.accel.state_dict(),
    }

def load_run_state(run, state: dict) -> None:
    run.model.load_unique_state_dict(state["model"])
    own = [{k: g[k] for k in ("lr", "fused", "capturable")}
           for g in run.optimizer.param_groups]
    run.optimizer.load_state_dict(state["optimizer"])
    # The state may come from another device or step kind: keep this run's own kernels
    # and the captured step's device lr tensor, and put step counts where they need to be.
    for g, mine in zip(run.optimizer.param_groups, own):
        lr = float(g["lr"])
        g.update(mine)
        if torch.is_tensor(g["lr"]):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr
        for p in g["params"]:
            st = run.optimizer.state.get(p, {})
            if "step" in st:
                on_device = (g["fused"] or g["capturable"]) and p.is_cuda
                st["step"] = st["step"].to(p.device if on_device else "cpu",
                                           torch.float32)
    run.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    run.loss_sum = state["loss_sum"].to(run.device)
    run.loss_count = state["loss_count"]
    run.step = run.last_good = run.last_check = state["step"]
    run.elapsed = state["elapsed"]
    run.accel.load_state_dict(state.get("accelerators"))


def _plain_optimizer_state(sd: dict) -> dict:
    """The optimizer's state with every learning rate a float (a captured step keeps it in a
    device tensor; resume.pt must load into an ordinary AdamW on any device)."""
    for g in sd["param_groups"]:
        if torch.is_tensor(g["lr"]):
            g["lr"] = float(g["lr"])
    return sd
