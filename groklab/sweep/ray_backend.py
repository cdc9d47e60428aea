"""Sweep points as Ray tasks: one unit of work (a point, or a batched group) per task.

    groklab sweep composition-phi --out /shared/sweeps/phi --backend ray --ray-address auto

``ray.init(address=...)`` joins an existing cluster (``auto``, ``ray://head:10001``, or the
``RAY_ADDRESS`` environment variable); with no address and no cluster, Ray starts a local
instance. Every worker needs groklab installed (``pip install groklab[ray]`` on each node).

Results always land in the driver's sweep directory. A worker that sees that directory (a
shared filesystem: it finds ``sweep.yaml`` with this sweep's token at the same path) trains into
it directly, so the driver's progress display follows it live. A worker that does not (another
node, local disks) trains into a temporary directory and returns the point directories as a tar
archive; an interrupted point travels to the worker the same way and comes back resumed. The
driver unpacks each returned point under a temporary name and swaps it in, so a point directory
is always whole.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import yaml

from groklab.sweep.spec import Point, SweepError
from groklab.sweep.units import (
    POINTS_DIR,
    SPEC_FILE,
    execute_unit,
    point_status,
    unit_payload,
)


def check_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SweepError("--backend ray needs Ray; install it with: pip install 'groklab[ray]'"
                         ) from None


def _pack(root: Path, slugs: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for slug in slugs:
            d = root / slug
            if d.exists():
                tar.add(d, arcname=slug)
    return buf.getvalue()


def _extract(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        if hasattr(tarfile, "data_filter"):
            try:
                tar.extractall(dest, filter="data")
            except tarfile.FilterError as e:
                raise SweepError(f"a returned point archive was refused: {e}") from None
            return
        # Python without extraction filters (< 3.10.12 / 3.11.4): a point directory holds only
        # files and folders, so anything else, or a name leaving dest, is refused unextracted.
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or ".." in parts:
                raise SweepError(f"a returned point archive holds '{m.name}', which is not a "
                                 "file or folder inside the point; refusing to unpack it")
        tar.extractall(dest)


def unpack_points(out: Path, data: bytes) -> None:
    """Swap returned point directories into ``out/points`` (whole or not at all)."""
    root = Path(out) / POINTS_DIR
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        _extract(data, staging)
        for new in staging.iterdir():
            final = root / new.name
            old = root / f".old-{new.name}-{uuid.uuid4().hex[:8]}"
            if final.exists():
                final.rename(old)
            new.rename(final)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sees_sweep(out: str, token: str) -> bool:
    path = Path(out) / SPEC_FILE
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("token") == token
    except (OSError, yaml.YAMLError):
        return False


def remote_unit(out: str, token: str, payload: list[dict], batched: bool, command: str,
                shipped: bytes | None, transfer: str) -> dict:
    """The Ray task: train one unit where the sweep is visible, else in a temp dir."""
    import torch

    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))
    except Exception:  # noqa: BLE001 - outside a Ray worker (tests call this directly)
        pass
    if transfer != "files" and _sees_sweep(out, token):
        return {"rows": execute_unit(str(Path(out) / POINTS_DIR), payload, batched, command),
                "files": None}
    tmp = Path(tempfile.mkdtemp(prefix="groklab-point-"))
    try:
        if shipped:
            _extract(shipped, tmp)
        rows = execute_unit(str(tmp), payload, batched, command)
        return {"rows": rows, "files": _pack(tmp, [item["slug"] for item in payload])}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ray_units(out: Path, units: list[list[Point]], token: str, *, batched: bool,
              address: str | None, cpus: float, gpus: float, command: str,
              transfer: str = "auto") -> Iterator[list[dict]]:
    """Submit every unit as a Ray task; yield each unit's results as it finishes."""
    import ray

    if not ray.is_initialized():
        kwargs = {"include_dashboard": False} if address is None else {}
        ray.init(address=address, **kwargs)
    task = ray.remote(remote_unit).options(num_cpus=cpus, num_gpus=gpus)
    root = Path(out) / POINTS_DIR
    pending = {}
    for unit in units:
        slugs = [p.slug for p in unit]
        # Interrupted points travel with the task in case the worker cannot see the sweep.
        started = [s for s in slugs if point_status(root / s) != "new"]
        shipped = _pack(root, started) if started and transfer != "shared" else None
        ref = task.remote(str(out), token, unit_payload(unit), batched, command, shipped,
                          transfer)
        pending[ref] = unit
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            unit = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a lost worker: report, keep going
                msg = " ".join(str(e).split())[:300]
                yield [{"slug": p.slug, "error": f"Ray task failed: {msg}"} for p in unit]
                continue
            if result["files"] is not None:
                try:
                    unpack_points(out, result["files"])
                except (SweepError, OSError, tarfile.TarError) as e:  # this unit only
                    msg = " ".join(str(e).split())[:300]
                    yield [{"slug": p.slug, "error": f"returned files unusable: {msg}"}
                           for p in unit]
                    continue
            yield result["rows"]
