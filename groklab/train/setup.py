"""What a run needs before its first step: the device, the output directory check, the fixed
"train" probe, and the environment recorded beside the config."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import torch

from groklab.rundir import RunDirError
from groklab.tasks import Split, TaskData


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def train_probe(data: TaskData, size: int) -> Split:
    """A fixed sample of training rows, the "train" split (same rows whatever the run seed)."""
    n = len(data.train)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(n, generator=g)[: min(size, n)]
    return data.train.subset(idx.sort().values)


def weight_norm(model) -> float:
    return math.sqrt(sum(float(p.detach().float().pow(2).sum()) for p in model.parameters()))


def param_norm(model) -> torch.Tensor:
    """The total L2 norm of the parameters, summed in float64, as a device tensor (no sync)."""
    return torch.stack([p.detach().double().pow(2).sum() for p in model.parameters()]).sum().sqrt()


@torch.no_grad()
def rescale_to_norm(model, norm: torch.Tensor) -> None:
    """Multiply every parameter by one factor so their total L2 norm is ``norm`` (Omnigrok's
    fixed-norm runs: ``p.data = sqrt(L2_0 / L2) * p.data`` after each step)."""
    params = list(model.parameters())
    factor = (norm / param_norm(model)).to(params[0].dtype)
    torch._foreach_mul_(params, factor)


def prepare_out_dir(out: Path) -> None:
    """Refuse a directory that holds another run or other files; nothing is written here."""
    out = Path(out)
    if (out / "config.yaml").exists():
        raise RunDirError(f"--out '{out}' already holds a run; resume it with 'groklab resume "
                          f"{out}' or choose a new --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(f"--out '{out}' exists and is not an empty directory; choose a new --out")


def environment(device: torch.device) -> dict:
    """Where a run trains: bitwise-equal metrics need the same device and thread count."""
    return {"device": str(device), "threads": torch.get_num_threads(),
            "torch": str(torch.__version__), "host": socket.gethostname()}


def config_yaml(cfg, device: torch.device) -> str:
    """config.yaml: the resolved config tree and the environment it trains in."""
    import yaml

    tree = {**cfg.to_dict(), "environment": environment(device)}
    return yaml.safe_dump(tree, sort_keys=False)


def make_optimizer(tc, model, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; fused on CUDA, and capturable with its learning
    rate in a device tensor when the step is captured as a CUDA graph (it refills it)."""
    capture = tc.cuda_graph and device.type == "cuda"
    return torch.optim.AdamW(
        model.parameter_groups(tc.weight_decay), betas=tuple(tc.betas), eps=tc.eps,
        fused=device.type == "cuda", capturable=capture,
        lr=torch.tensor(tc.lr, device=device) if capture else tc.lr)


def warn_if_environment_changed(recorded: dict, device: torch.device) -> None:
    """Bitwise-equal resumption needs the device and thread count the run started with."""
    import warnings

    now = {"device": str(device), "threads": torch.get_num_threads()}
    changed = [f"{k} {recorded[k]} -> {now[k]}" for k in now
               if k in recorded and recorded[k] != now[k]]
    if changed:
        warnings.warn(f"resuming with a different {', '.join(changed)}: metrics will not be "
                      "bitwise equal to an uninterrupted run", stacklevel=3)
