"""Batched causal tracing against per-cell loops, side by side in one run, same model and examples.

Wang et al.'s noising grid (docs/methods.md section 1.5): 300 ``train_inferred`` rows, 3 slots
(h, r1, r2), every layer; each cell patches the counterfactual's hidden state into the clean
run and reads the logits at the answer. Three ways to fill the same [layer, slot, example]
grid of logits:

  batched       groklab: one forward pass for all counterfactuals (which is also layer 0's
                row), then one partial forward per layer >= 1 holding every slot x example
                (``counterfactual_grid`` -> ``patch_grid``)
  cell loop     one full forward per (layer, slot) cell, batched over examples: what
                TransformerLens's ``generic_activation_patch`` does
  example loop  one forward per (example, slot) counterfactual and per (example, slot, layer)
                cell: what the paper's ``causal_tracing_composition.py`` does

Prints one JSON line: seconds for each (best of ``--repeats``; the example loop runs once),
the speedups, the max abs difference of the logits against the batched grid, and whether the
causal-strength grids are identical. Target: batched >= 20x faster than the example loop.

    python bench/causal_tracing.py [--run RUN] [--examples 300] [--threads 1] [--repeats 3]
                                   [--device cpu|cuda]

Without ``--run`` the model is composition-small's shape with random weights on
composition-small's task (timing and agreement do not depend on training).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from groklab.analysis.causal_tracing import counterfactual_grid, counterfactuals
from groklab.analysis.sources import sample_examples


def load(run: str | None):
    if run:
        from groklab.api import load_run

        r = load_run(run)
        return r.model(), r.task, f"{run} step {r.checkpoint_steps[-1]}"
    from groklab.config import load_config
    from groklab.models import build_model
    from groklab.tasks import make_task

    cfg = load_config("composition-small", None, [])
    task = make_task(cfg.task)
    torch.manual_seed(0)
    model = build_model(cfg.model.resolved(d_vocab=len(task.vocab), n_ctx=task.seq_len))
    return model.eval(), task, "composition-small shape, random weights"


@torch.no_grad()
def batched(model, tokens, ap, cfs):  # [layers, slots, n, vocab]
    return counterfactual_grid(model, tokens, ap, cfs)


@torch.no_grad()
def cell_loop(model, tokens, ap, cfs):
    return counterfactual_grid(model, tokens, ap, cfs, looped=True)


@torch.no_grad()
def example_loop(model, tokens, ap, cfs):
    """Per example: run each counterfactual, then per layer patch its state into the clean run."""
    n_layers = model.cfg.n_effective_layers
    names = [f"blocks.{l}.hook_resid_pre" for l in range(n_layers)]
    out = torch.empty(n_layers, len(cfs), tokens.shape[0], model.cfg.d_vocab_out,
                      device=tokens.device)
    for i in range(tokens.shape[0]):
        for s, c in enumerate(cfs):
            _, cache = model.run_with_cache(c.tokens[i : i + 1], names_filter=names)
            pos = list(c.positions)
            for l, name in enumerate(names):
                def patch(act, hook, src=cache[name], pos=pos):
                    act = act.clone()
                    act[:, pos] = src[:, pos]
                    return act

                out[l, s, i] = model.run_with_hooks(tokens[i : i + 1], ap[i : i + 1],
                                                    fwd_hooks=[(name, patch)])[0]
    return out


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def strength(logits, clean_top1, valid):
    changed = (logits.argmax(-1) != clean_top1).float().cpu().numpy()  # [layers, slots, n]
    return (changed * valid).sum(-1) / valid.sum(-1)


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap_.add_argument("--run", default=None, help="a composition run directory (last checkpoint)")
    ap_.add_argument("--examples", type=int, default=300)
    ap_.add_argument("--threads", type=int, default=1)
    ap_.add_argument("--repeats", type=int, default=3)
    ap_.add_argument("--device", default="cpu", help="cpu or cuda (the GPU shows launch savings)")
    args = ap_.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    model, task, what = load(args.run)
    model = model.to(dev)
    ex, _ = sample_examples(task.probes["train_inferred"], args.examples, seed=0)
    cfs = [dataclasses.replace(c, tokens=c.tokens.to(dev))
           for c in counterfactuals(task, ex, seed=0)]
    tokens, ap = ex.inputs.to(dev), ex.answer_pos.to(dev)
    # One untimed pass of each kind so cuBLAS/allocator warm-up is not in the first timing.
    batched(model, tokens, ap, cfs)
    cell_loop(model, tokens, ap, cfs)
    with torch.no_grad():
        clean_top1 = model(tokens, ap).argmax(-1)
    valid = np.stack([c.valid for c in cfs]).astype(float)

    t_b, g_b = timed(lambda: batched(model, tokens, ap, cfs), args.repeats)
    t_c, g_c = timed(lambda: cell_loop(model, tokens, ap, cfs), args.repeats)
    t_e, g_e = timed(lambda: example_loop(model, tokens, ap, cfs), 1)
    s_b, s_c, s_e = (strength(g, clean_top1, valid) for g in (g_b, g_c, g_e))
    n_layers = model.cfg.n_effective_layers
    print(json.dumps({
        "model": what,
        "grid": f"{n_layers} layers x {len(cfs)} slots x {len(tokens)} examples",
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "seconds": {"batched": round(t_b, 4), "cell_loop": round(t_c, 4),
                    "example_loop": round(t_e, 3)},
        "forward_passes": {"batched": 1 + n_layers, "cell_loop": 1 + n_layers * len(cfs),
                           "example_loop": len(tokens) * len(cfs) * (1 + n_layers)},
        "speedup_vs_example_loop": round(t_e / t_b, 1),
        "speedup_vs_cell_loop": round(t_c / t_b, 2),
        "max_abs_diff_logits": {"cell_loop": float((g_b - g_c).abs().max()),
                                "example_loop": float((g_b - g_e).abs().max())},
        "strength_identical": bool((s_b == s_c).all() and (s_b == s_e).all()),
        "strength_batched": np.round(s_b, 3).tolist(),
    }))


if __name__ == "__main__":
    main()
