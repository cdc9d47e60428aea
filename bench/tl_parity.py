"""groklab against TransformerLens (transformer-lens < 4) on the same weights, in one process.

The model is composition-small's (4 layers, d_model 128, 4 heads, 221 tokens, 3 positions),
copied into TransformerLens's HookedTransformer with ``to_transformer_lens``. Rows:

  train_step        one AdamW step on a batch of 512 answer rows: groklab's trainer step
                    (``groklab train``'s, speed paths included) against the same loop around
                    TransformerLens's forward (logits at the answer position, cross-entropy)
  run_with_cache    every hook point cached, at 88 and 300 rows
  get_act_patch_*   every TransformerLens patching function (corrupted run, clean cache, a
                    logit-difference metric on the full logits), at 88 and 300 rows

Each timing is the best of ``--repeats`` (TransformerLens's per-cell patching loops run once:
they take seconds). Prints one JSON line per row with both times and ratio = TL / groklab
(higher: groklab faster), then the smallest ratio. CPU, one thread unless ``--threads``;
``--device cuda`` runs the same on a GPU.

    python bench/tl_parity.py [--repeats 3] [--rows 88 300] [--only resid_pre]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from functools import partial

os.environ.setdefault("TQDM_DISABLE", "1")  # TL's patching loops draw progress bars

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from groklab.analysis import patching  # noqa: E402
from groklab.config import load_config  # noqa: E402
from groklab.models import to_transformer_lens  # noqa: E402
from groklab.train.loop import Run  # noqa: E402
from groklab.train.steps import EagerStep  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_ms(fn, repeats: int, device: str, warm: bool = True) -> float:
    if warm:
        fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def train_step_row(run: Run, tl_model, repeats: int, device: str) -> dict:
    split = run.train_split
    B = run.cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    eager = EagerStep(run)
    opt = torch.optim.AdamW(tl_model.parameters(), lr=1e-3, weight_decay=1.0)

    def groklab_steps():
        for _ in range(10):
            run.set_lr(run.lr())
            eager()

    def tl_steps():
        for _ in range(10):
            idx = torch.randint(len(split), (B,), generator=g).to(split.inputs.device)
            x, ap, y = split.inputs[idx], split.answer_pos[idx], split.targets[idx]
            logits = tl_model(x)[torch.arange(B, device=x.device), ap]
            F.cross_entropy(logits, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    a, b = best_ms(groklab_steps, repeats, device) / 10, best_ms(tl_steps, repeats, device) / 10
    return {"row": "train_step", "rows": B, "groklab_ms": round(a, 3), "tl_ms": round(b, 3),
            "ratio": round(b / a, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, nargs="+", default=[88, 300])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="", help="substring: run the rows whose name has it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from transformer_lens import patching as tl_patching

    cfg = load_config("composition-small", None, [f"train.device={args.device}"])
    with tempfile.TemporaryDirectory() as tmp:
        run = Run.start(cfg, f"{tmp}/run")
    model = run.model
    tl_model = to_transformer_lens(model)
    out = []

    def emit(row: dict) -> None:
        row["threads"] = args.threads
        row["device"] = args.device
        out.append(row)
        print(json.dumps(row), flush=True)

    if args.only in "train_step":
        model.train(), tl_model.train()
        emit(train_step_row(run, tl_model, args.repeats, args.device))
    model.eval(), tl_model.eval()

    split = run.train_split
    two_hop = split.inputs[split.answer_pos == 2]  # h r1 r2 -> t
    targets = split.targets[split.answer_pos == 2]
    names = [n for n in dir(tl_patching) if n.startswith("get_act_patch_") and args.only in n]
    for n_rows in args.rows:
        clean, t_clean = two_hop[:n_rows], targets[:n_rows]
        corrupt = clean.clone()
        corrupt[:, 0] = clean.roll(1, 0)[:, 0]  # another head entity: another answer
        t_corrupt = targets[:n_rows].roll(1, 0)
        rows = torch.arange(n_rows, device=clean.device)

        def metric(logits, rows=rows, t_clean=t_clean, t_corrupt=t_corrupt):
            last = logits[:, -1]
            return (last[rows, t_clean] - last[rows, t_corrupt]).mean()

        with torch.no_grad():
            if args.only in "run_with_cache":
                # milliseconds each: more repeats, interleaved, so load spikes hit both alike
                a = b = float("inf")
                for _ in range(10):
                    a = min(a, best_ms(partial(model.run_with_cache, clean), args.repeats,
                                       args.device))
                    b = min(b, best_ms(partial(tl_model.run_with_cache, clean), args.repeats,
                                       args.device))
                emit({"row": "run_with_cache", "rows": n_rows, "groklab_ms": round(a, 2),
                      "tl_ms": round(b, 2), "ratio": round(b / a, 2)})
            _, ca = model.run_with_cache(clean)
            _, cb = tl_model.run_with_cache(clean)
            for name in names:
                a = best_ms(partial(getattr(patching, name), model, corrupt, ca, metric),
                            args.repeats, args.device)
                b = best_ms(partial(getattr(tl_patching, name), tl_model, corrupt, cb, metric),
                            1, args.device, warm=False)
                emit({"row": name.removeprefix("get_act_patch_"), "rows": n_rows,
                      "groklab_ms": round(a, 1), "tl_ms": round(b, 1), "ratio": round(b / a, 2)})
    worst = min(out, key=lambda r: r["ratio"])
    print(json.dumps({"min_ratio": worst["ratio"], "at": f"{worst['row']} ({worst['rows']} rows)",
                      "rows_measured": len(out)}), flush=True)


if __name__ == "__main__":
    main()
