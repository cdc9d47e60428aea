"""Write a built task to disk as JSON, for inspection or for training with other code.

Layout of ``out_dir``::

    vocab.json         {"tokens": [...], "types": [...]}
    info.json          TaskData.info (sizes, realised phi, ...)
    train.jsonl        one object per row
    <probe>.jsonl      one per probe (atomic_id, test_id, test_ood, ...)

A row reads, for a composition inferred fact::

    {"input": ["<e_5>", "<r_3>", "<r_7>"], "input_ids": [5, 203, 207], "target": "<e_17>",
     "target_id": 17, "answer_pos": 2, "split": "test_id", "kind": "inferred",
     "hops": [["<e_5>", "<r_3>", "<e_42>"], ["<e_42>", "<r_7>", "<e_17>"]]}

A sequence (``span``, ``lm``) row: ``target_pos[j]`` is the position after which
``target[j]`` must be predicted; an addition row (reversed digits, 12 + 9)::

    {"input": ["2", "1", "+", "9", "=", "1", "2", "<eos>"], "input_ids": [...],
     "target": ["1", "2", "<eos>"], "target_ids": [1, 2, 12], "target_pos": [4, 5, 6],
     "split": "train", "len_a": 2, "len_b": 1}

A continuous (``classify``) row holds the floats themselves::

    {"input": [0.12, -1.3, ...], "target": "<digit_3>", "target_id": 3, "split": "test"}

``input`` of a token row stops at the answer position: the padding after it is not part of the question.
Comparison rows carry ``"attribute"`` (the attribute token) and ``"values": [v1, v2]`` (v2 is
null for an atomic fact).

Everything is written into a fresh temporary directory beside ``out_dir`` and renamed into place
at the end, so an interrupted export leaves either nothing or the complete directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.objectives import IGNORE


def _write(path: Path, text_chunks) -> None:
    # Plain writes: the whole directory is built under a temporary name and renamed at the end.
    with open(path, "w", encoding="utf-8") as f:
        for chunk in text_chunks:
            f.write(chunk)


def _continuous_rows(name: str, split: Split, vocab: Vocab):
    """``classify`` rows: the input floats (nested lists for [channels, length]) and the class."""
    inputs = split.inputs.cpu().double().numpy()
    targets = split.targets.cpu().numpy()
    noisy = split.meta.get("noisy")
    for i in range(len(split)):
        row = {"input": inputs[i].tolist(), "target": vocab.tokens[int(targets[i])],
               "target_id": int(targets[i]), "split": name}
        if noisy is not None:
            row["noisy"] = bool(noisy[i])  # a training label replaced by label noise
        yield json.dumps(row) + "\n"


def _sequence_rows(name: str, split: Split, vocab: Vocab):
    """``span`` and ``lm`` rows: the tokens up to the last target (padding left out), and the
    scored targets with the position each is predicted at."""
    toks = vocab.tokens
    inputs = split.inputs.cpu().numpy()
    targets = split.targets.cpu().numpy()
    for i in range(len(split)):
        scored = np.flatnonzero(targets[i] != IGNORE)
        end = min(int(scored[-1]) + 2, inputs.shape[1]) if len(scored) else inputs.shape[1]
        ids = [int(x) for x in inputs[i, :end]]
        row = {"input": [toks[x] for x in ids], "input_ids": ids,
               "target": [toks[int(targets[i, t])] for t in scored],
               "target_ids": [int(targets[i, t]) for t in scored],
               "target_pos": [int(t) for t in scored], "split": name}
        row.update({k: _jsonable(v[i]) for k, v in split.meta.items()})
        yield json.dumps(row) + "\n"


def _rows(name: str, split: Split, vocab: Vocab):
    """One JSON line per row; task-specific fields come from the split's meta."""
    if split.answer_pos is None and split.targets.dim() == 2:
        yield from _sequence_rows(name, split, vocab)
        return
    if split.answer_pos is None:
        yield from _continuous_rows(name, split, vocab)
        return
    toks = vocab.tokens
    inputs = split.inputs.cpu().numpy()
    pos = split.answer_pos.cpu().numpy()
    targets = split.targets.cpu().numpy()
    meta = split.meta
    kind = meta.get("kind")
    for i in range(len(split)):
        ids = [int(x) for x in inputs[i, : int(pos[i]) + 1]]
        row = {
            "input": [toks[x] for x in ids],
            "input_ids": ids,
            "target": toks[int(targets[i])],
            "target_id": int(targets[i]),
            "answer_pos": int(pos[i]),
            "split": name,
        }
        if kind is not None:
            row["kind"] = "inferred" if int(kind[i]) == 1 else "atomic"
        if "hop1" in meta and kind is not None and int(kind[i]) == 1:
            # Composition: graph indices -> token strings (entity id e is token e,
            # relation r is token <r_r>).
            row["hops"] = [
                [toks[int(h)], f"<r_{int(r)}>", toks[int(t)]]
                for h, r, t in (meta["hop1"][i], meta["hop2"][i])
            ]
        if "attribute" in meta:
            row["attribute"] = f"<attr_{int(meta['attribute'][i])}>"
            v2 = int(meta["v2"][i])
            row["values"] = [int(meta["v1"][i]), None if v2 < 0 else v2]
        yield json.dumps(row) + "\n"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def export_task(data: TaskData, out_dir: Path) -> None:
    """Write ``data`` to ``out_dir`` (created; must not exist or be empty)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise TaskError(f"export target {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()):
            raise TaskError(
                f"export target {out_dir} is not empty; choose a new or empty directory"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    splits = {"train": data.train, **data.probes}
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_dir, 0o777 & ~umask)  # mkdtemp makes it private
        _write(tmp_dir / "vocab.json", [json.dumps(data.vocab.to_json(), indent=1)])
        _write(tmp_dir / "info.json", [json.dumps(_jsonable(data.info), indent=1)])
        for name, split in splits.items():
            _write(tmp_dir / f"{name}.jsonl", _rows(name, split, data.vocab))
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename cannot replace it portably
        os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
