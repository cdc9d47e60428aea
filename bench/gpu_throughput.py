"""Training steps/s of groklab against a Hugging Face GPT-2 in a standard loop, side by side.

Same data (composition-paper: |E|=2000, |R|=200, out-degree 20, phi 7.2; 313,600 training rows),
same batch (512) and model shape (8 layers, d_model 768, 12 heads, dropout 0.1, tied embeddings,
the 2,201-token task vocabulary), AdamW lr 1e-4, weight decay 0.1, grad clip 1.0, one process:

  hf-fp32 / hf-tf32 / hf-bf16   transformers GPT2LMHeadModel as the official code trains it: a
                                shuffled DataLoader over CPU tensors, the batch copied each step,
                                full-sequence logits with labels -100 except the answer,
                                loss.item() every step; fp32, TF32 matmuls, or bf16 autocast.
                                The fastest is the baseline (docs/anchors.md section 14.1:
                                TF32, ~47 steps/s, H100)
  groklab-eager                 the eager step of `groklab train composition-paper` with
                                train.cuda_graph off (bf16 autocast, fused AdamW)
  groklab-graph                 the same run with train.cuda_graph on: the whole step one graph

Prints one JSON line per configuration (steps/s after warm-up) and a last line with the ratios
to the best HF configuration (goal: >= 10x). On a machine without CUDA it says so, exits 0, and
runs a small CPU comparison at composition-small's shape instead (fp32, eager).

For the time to the paper's result on one GPU:
    groklab train composition-paper --set train.steps=200000 --out runs/paper
and read where test_id crosses 0.95 in summary.json (thresholds) and metrics.jsonl (time).

    python bench/gpu_throughput.py [--steps 200] [--warmup 30] [--only groklab-graph,hf-tf32]

Measured on one H100 80GB (torch 2.11, transformers 5.17, 2026-11-23, --steps 300): hf-fp32 26.5,
hf-tf32 34.0 (baseline), hf-bf16 26.6, groklab-eager 37.0 (1.09x), groklab-graph 136.8 (4.0x).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from groklab.config import load_config
from groklab.tasks import make_task
from groklab.train.loop import Run
from groklab.train.steps import make_step

CONFIGS = ("hf-fp32", "hf-tf32", "hf-bf16", "groklab-eager", "groklab-graph")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def hf_data(split):
    """Token ids with the answer appended after its position; labels -100 but at the answer."""
    n, L = split.inputs.shape
    ids = torch.cat([split.inputs, split.inputs[:, -1:]], 1).clone()
    rows = torch.arange(n)
    ids[rows, split.answer_pos + 1] = split.targets
    labels = torch.full_like(ids, -100)
    labels[rows, split.answer_pos + 1] = split.targets
    return ids, labels


def time_hf(cfg, data, mode: str, steps: int, warmup: int, dev: torch.device) -> float:
    from transformers import GPT2Config, GPT2LMHeadModel

    m = cfg.model
    p = m.dropout
    hf_cfg = GPT2Config(vocab_size=len(data.vocab), n_positions=data.seq_len + 1, n_embd=m.d_model,
                        n_layer=m.n_layers, n_head=m.n_heads, resid_pdrop=p, embd_pdrop=p,
                        attn_pdrop=p, activation_function="gelu_new", bos_token_id=None,
                        eos_token_id=None)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(hf_cfg).to(dev).train()
    torch.backends.cuda.matmul.allow_tf32 = mode == "hf-tf32"
    torch.backends.cudnn.allow_tf32 = mode == "hf-tf32"
    ids, labels = hf_data(data.train)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, labels),
                                         batch_size=cfg.train.batch_size, shuffle=True,
                                         drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,
                            weight_decay=cfg.train.weight_decay)
    done, t0 = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                sync(dev)
                t0 = time.perf_counter()
            x, y = x.to(dev), y.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mode == "hf-bf16"):
                loss = model(input_ids=x, labels=y).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()  # what a standard loop logs every step
            done += 1
            if done == warmup + steps:
                break
    sync(dev)
    torch.backends.cuda.matmul.allow_tf32 = False
    return steps / (time.perf_counter() - t0)


def time_groklab(cfg, data, graph: bool, steps: int, warmup: int) -> float:
    cfg = cfg.model_copy(deep=True)
    cfg.train.cuda_graph = graph
    run = Run(cfg, "/nonexistent/bench", data=data)  # builds everything, writes nothing
    run.model.train()
    step = make_step(run)  # the graphed step where cuda_graph is on and a GPU is present
    run.set_lr(cfg.train.lr)
    for i in range(warmup + steps):
        if i == warmup:
            sync(run.device)
            t0 = time.perf_counter()
        run.loss_sum += step()[0]
    sync(run.device)
    if not torch.isfinite(run.loss_sum):
        raise RuntimeError("groklab's loss is not finite")
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--only", default=",".join(CONFIGS))
    ap.add_argument("--cpu-steps", type=int, default=8, help="steps of the CPU comparison")
    args = ap.parse_args()
    try:
        import transformers
    except ImportError:
        transformers = None
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        cfg = load_config("composition-paper")
        steps, warmup, configs = args.steps, args.warmup, args.only.split(",")
        where = torch.cuda.get_device_name()
    else:
        print("gpu_throughput: no CUDA device on this machine; the GPU figures (HF GPT-2 vs "
              "groklab at composition-paper shape, CUDA graph) are NOT measured here. Running a "
              "small CPU comparison at composition-small's shape instead (fp32, eager).",
              file=sys.stderr)
        dev = torch.device("cpu")
        cfg = load_config("composition-small", None, ["train.device=cpu"])
        steps, warmup = args.cpu_steps, 2
        configs = ["hf-fp32", "groklab-eager"]
        where = "cpu"
    data = make_task(cfg.task)
    print(json.dumps({"device": where, "torch": torch.__version__,
                      "transformers": getattr(transformers, "__version__", None),
                      "shape": f"{cfg.model.n_layers}x{cfg.model.d_model}, {cfg.model.n_heads} "
                               f"heads, batch {cfg.train.batch_size}, vocab {len(data.vocab)}"}))
    results = {}
    for name in configs:
        if name.startswith("hf-") and transformers is None:
            print(json.dumps({"config": name, "skipped": "pip install transformers"}))
            continue
        if name.startswith("hf-"):
            sps = time_hf(cfg, data, name, steps, warmup, dev)
        else:
            sps = time_groklab(cfg, data, name == "groklab-graph", steps, warmup)
        results[name] = sps
        print(json.dumps({"config": name, "steps_per_s": round(sps, 2)}), flush=True)
    hf = {k: v for k, v in results.items() if k.startswith("hf-")}
    gl = {k: v for k, v in results.items() if k.startswith("groklab-")}
    if hf and gl:
        base = max(hf, key=hf.get)
        print(json.dumps({"baseline": base, "baseline_steps_per_s": round(hf[base], 2),
                          **{f"{k}_x_baseline": round(v / hf[base], 2) for k, v in gl.items()}}))


if __name__ == "__main__":
    main()
