"""SAE training throughput: groklab's SAEBank against SAELens' own trainer, side by side in one
run, on the same activations, the same batches in the same order, the same architecture
(TopK, SAELens' training defaults: decoder-norm rescaling, AuxK loss, Adam 3e-4, clip 1.0),
the same steps, on the CPU, one thread each; then L0 and explained variance of both on the
same rows, and SAELens' ``SAE.load_from_disk`` on the groklab-saved SAE.

SAELens is not a groklab dependency (it pins TransformerLens < 4): it runs as a subprocess in
its own environment, by default /work/venvs/saelens (``python3 -m venv DIR && DIR/bin/pip
install torch sae-lens``).

    python bench/sae_throughput.py [--run RUN_DIR --hook blocks.1.hook_resid_pre]
        [--steps 1000 --batch 256 --expansion 8 --k 16 --rounds 2]

Without ``--run`` the activations are synthetic (sparse sums of planted directions, d_in 128).
Rounds alternate groklab and SAELens, and the best round of each is compared, so a shared,
loaded machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SAELENS_SIDE = r'''
import itertools, json, os, sys, time, warnings
os.environ["TQDM_DISABLE"] = "1"
warnings.filterwarnings("ignore")
import numpy as np, torch
torch.set_num_threads(1)
from sae_lens import SAE
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer

d = sys.argv[1]
acts = torch.from_numpy(np.load(f"{d}/acts.npy"))
order = torch.from_numpy(np.load(f"{d}/order.npy"))
a = json.load(open(f"{d}/args.json"))
torch.manual_seed(a["seed"])
sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=a["d_sae"], k=a["k"]))
cfg = SAETrainerConfig(total_training_samples=a["steps"] * a["batch"],
                       train_batch_size_samples=a["batch"], lr=a["lr"], lr_end=a["lr"], device="cpu",
                       logger=LoggingConfig(log_to_wandb=False))
trainer = SAETrainer(cfg, sae, (acts[order[i % len(order)]] for i in itertools.count()))
t0 = time.perf_counter()
trainer.fit()
seconds = time.perf_counter() - t0
with torch.no_grad():
    f = sae.encode(acts)
    err = (sae.decode(f) - acts).double().pow(2).sum(-1).mean()
    x = acts.double()
    var = x.pow(2).sum(-1).mean() - x.mean(0).pow(2).sum()
    out = {"seconds": seconds, "l0": float((f > 0).sum(-1).float().mean()),
           "explained_variance": float(1 - err / var)}
    loaded = SAE.load_from_disk(f"{d}/groklab_sae")
    mine = torch.from_numpy(np.load(f"{d}/groklab_codes.npy"))
    g = loaded.encode(acts[:2000])
    out["load_from_disk"] = {"class": type(loaded).__name__,
                             "architecture": loaded.cfg.architecture(),
                             "hook_name": loaded.cfg.metadata.hook_name,
                             "max_abs_code_diff": float((g - mine).abs().max()),
                             "max_abs_recon_diff": float(
                                 (loaded.decode(g) - torch.from_numpy(
                                     np.load(f"{d}/groklab_recon.npy"))).abs().max())}
    sae.save_inference_model(f"{d}/saelens_sae")
    np.save(f"{d}/saelens_codes.npy", sae.encode(acts[:2000]).numpy())
print(json.dumps(out))
'''


def synthetic(n=60000, d=128, m=512, p=0.02, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, d, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    on = (torch.rand(n, m, generator=g) < p).float() * (0.5 + torch.rand(n, m, generator=g))
    return on @ D + 0.1 * torch.randn(n, d, generator=g)


def run_activations(run_dir: str, hook: str | None, position) -> tuple[torch.Tensor, str]:
    from groklab.analysis.sae import check_hooks, check_position, collect
    from groklab.rundir import load_run

    run = load_run(run_dir)
    model = run.model()
    hooks = check_hooks(model, hook)
    pos = check_position(position, run.task.seq_len)
    return collect(model, run.task.train, hooks, pos)[0], hooks[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run")
    ap.add_argument("--hook")
    ap.add_argument("--position", default="all")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--expansion", type=float, default=8)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--python", default="/work/venvs/saelens/bin/python")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

    from groklab.analysis.sae_format import save_sae
    from groklab.analysis.sae_train import SAEConfig, batch_indices, evaluate, train_bank

    if args.run:
        acts, hook = run_activations(args.run, args.hook, args.position)
        source = f"{args.run} {hook} position {args.position}"
    else:
        acts, hook = synthetic(), "synthetic"
        source = "synthetic sparse activations"
    acts = acts.float().contiguous()
    N, d = acts.shape
    d_sae = int(round(args.expansion * d))
    cfg = SAEConfig(kind="topk", d_sae=d_sae, k=args.k, steps=args.steps,
                    batch_size=args.batch, lr=args.lr, seed=args.seed)
    order = torch.stack(list(batch_indices(N, cfg)))
    print(f"activations: {source}: {N} x {d}; TopK d_sae {d_sae}, k {args.k}, {args.steps} "
          f"steps of {args.batch}, lr {args.lr:g}, CPU, 1 thread each")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/acts.npy", acts.numpy())
        np.save(f"{tmp}/order.npy", order.numpy())
        Path(f"{tmp}/args.json").write_text(json.dumps(
            {"d_sae": d_sae, "k": args.k, "steps": args.steps, "batch": args.batch,
             "lr": args.lr, "seed": args.seed}))
        ours, theirs = [], []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            bank, info = train_bank(acts[None], SAEConfig(**cfg.to_dict()))
            ours.append(info["seconds"])
            ev = evaluate(bank, acts[None])
            if r == 0:
                save_sae(Path(tmp) / "groklab_sae", bank, 0, hook_name=hook,
                         model_name="groklab/bench", context_size=0)
                with torch.no_grad():
                    codes = bank.encode(acts[None, :2000])
                    np.save(f"{tmp}/groklab_codes.npy", codes[0].numpy())
                    np.save(f"{tmp}/groklab_recon.npy", bank.decode(codes)[0].numpy())
            p = subprocess.run([args.python, "-c", SAELENS_SIDE, tmp], capture_output=True,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if p.returncode != 0:
                sys.exit(f"SAELens side failed:\n{p.stderr[-3000:]}")
            sl = json.loads(p.stdout.strip().splitlines()[-1])
            if r == 0:  # and the other way: groklab reads the folder SAELens saved
                from groklab.analysis.sae_format import load_sae

                back, back_cfg = load_sae(Path(tmp) / "saelens_sae")
                with torch.no_grad():
                    diff = (back.encode(acts[None, :2000])[0]
                            - torch.from_numpy(np.load(f"{tmp}/saelens_codes.npy"))).abs().max()
                read_back = (f"{back_cfg['architecture']} d_sae {back_cfg['d_sae']}, codes "
                             f"match SAELens' to {float(diff):.1e}")
            theirs.append(sl["seconds"])
            print(f"round {r + 1}: groklab {ours[-1]:.2f} s (L0 {float(ev['l0'][0]):.2f}, EV "
                  f"{float(ev['explained_variance'][0]):.4f}); SAELens {sl['seconds']:.2f} s "
                  f"(L0 {sl['l0']:.2f}, EV {sl['explained_variance']:.4f}); wall "
                  f"{time.perf_counter() - t0:.1f} s")
    best_o, best_t = min(ours), min(theirs)
    print(f"\n{'':24}{'groklab':>12}{'SAELens':>12}")
    print(f"{'steps/s (best round)':24}{args.steps / best_o:12.1f}{args.steps / best_t:12.1f}")
    print(f"{'L0 (last round)':24}{float(ev['l0'][0]):12.2f}{sl['l0']:12.2f}")
    print(f"{'explained variance':24}{float(ev['explained_variance'][0]):12.4f}"
          f"{sl['explained_variance']:12.4f}")
    print(f"groklab / SAELens speed: {best_t / best_o:.2f}x")
    print(f"SAELens SAE.load_from_disk on the groklab folder: {json.dumps(sl['load_from_disk'])}")
    print(f"groklab load_sae on the SAELens-saved folder: {read_back}")


if __name__ == "__main__":
    main()
