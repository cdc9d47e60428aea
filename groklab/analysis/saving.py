"""Writing an analysis's files: arrays to RUN/analysis/<name>.npz with a JSON summary beside
them, figures to RUN/figures/<name>*.png, each written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np


def save_arrays(run_dir: Path, name: str, arrays: dict[str, np.ndarray],
                meta: dict) -> list[Path]:
    """RUN/analysis/<name>.npz (plain arrays: read back with ``allow_pickle=False``) and
    RUN/analysis/<name>.json."""
    from groklab.rundir import atomic_write_bytes, atomic_write_text

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    base = Path(run_dir) / "analysis" / name
    paths = [base.with_suffix(".npz"), base.with_suffix(".json")]
    atomic_write_bytes(paths[0], buf.getvalue())
    atomic_write_text(paths[1], json.dumps(meta, indent=1))
    return paths


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from groklab.rundir import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)  # no bbox "tight": it draws the figure twice
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
