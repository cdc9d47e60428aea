"""Fact injection: teach a trained composition run new atomic facts through an adapter, in the
one training loop, and score memorization, retention and composition through the new facts.

    OUT/config.yaml         the base run's config with the injection's train settings
    OUT/injection.json      what was injected: base run, facts, adapter options, sizes
    OUT/metrics.jsonl       acc/loss on new, compose_first/second/both, atomic_id, test_id, ...
    OUT/summary.json        the run summary ("memorization" = the new facts at 0.99) + injection
    OUT/adapter.safetensors the adapter tensors (LoRA A/B, MoRA M; fine-tuning: each map's dW;
                            grown token rows as ``W_E.new_rows``), with adapter.json
    OUT/checkpoints/        merged weights at the first and last step (``groklab analyze`` reads)

The data come from ``groklab/tasks/new_facts.py``, the adapters from
``groklab/models/adapters.py``; an :class:`InjectRun` is a :class:`~groklab.train.loop.Run`
whose model is the adapted base model and whose optimizer holds only what the adapter trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from groklab.config import build_config
from groklab.lock import RunLock
from groklab.models.adapters import DEFAULT_TARGETS, attach
from groklab.models.grow import grow_vocab, new_token_params, train_new_rows_only
from groklab.rundir import atomic_save_safetensors, atomic_write_text, load_run
from groklab.tasks import Split, TaskError
from groklab.tasks.new_facts import injection_data, make_facts
from groklab.train.loop import Run
from groklab.train.setup import config_yaml, prepare_out_dir


class InjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    facts: str = "new-relations"  # new-relations | new-entities | a file of facts
    n_facts: int = 200
    adapter: str = "lora"  # lora | mora | full | last
    rank: int = 8
    alpha: float | None = None  # LoRA: None = rank (scale 1)
    dropout: float = 0.0
    mora_type: int = 1
    targets: tuple[str, ...] = DEFAULT_TARGETS
    last_layers: int = 1
    adapter_path: str = "auto"  # LoRA / MoRA as W0 + dW (weight), on activations, or by width
    replay: float = 0.0  # old training rows per new fact in every batch, drawn afresh
    probe_size: int = 1000  # rows per evaluation probe (composition and retention)
    steps: int = 300
    lr: float = 1e-3
    batch_size: int = 0  # 0: the whole (small) training set every step
    weight_decay: float = 0.0
    eval_every: int = 10
    seed: int = 0
    checkpoint: int | None = None  # base checkpoint step; None: the last


def effective_state_dict(model) -> dict[str, torch.Tensor]:
    """The weights as the forward sees them (adapters applied), under the plain names."""
    out = {}
    for name, p in model.named_parameters():
        if ".parametrizations." in name:
            mname, rest = name.split(".parametrizations.", 1)
            attr = rest.split(".", 1)[0]
            if rest.endswith(".original"):
                out[f"{mname}.{attr}"] = getattr(model.get_submodule(mname), attr).detach()
            continue
        out[name] = p.detach()
    return out


class InjectRun(Run):
    """A :class:`Run` over an already built, adapted model."""

    def __init__(self, cfg, out: Path, data, model, adapters, params, extra: dict,
                 replay_pool=None):
        super().__init__(cfg, out, data=data)
        self.model = model.to(self.device)
        self.replay_pool = None if replay_pool is None else replay_pool.to(self.device)
        self.adapters, self.extra = adapters, extra
        tc = cfg.train
        # fused: one kernel for every adapter tensor (3x faster than foreach on a CPU for the
        # many small matrices of an adapter; bench/adapter_step.py times the same step)
        self.optimizer = torch.optim.AdamW(params, betas=tuple(tc.betas), eps=tc.eps, lr=tc.lr,
                                           fused=self.device.type in ("cpu", "cuda"))
        self.accel = type(self.accel)(tc, self.model, self.optimizer)

    @classmethod
    def begin(cls, cfg, out: Path, data, model, adapters, params, extra, replay_pool=None,
              command: str | None = None) -> "InjectRun":
        prepare_out_dir(out)
        run = cls(cfg, out, data, model, adapters, params, extra, replay_pool)
        run.lock = RunLock(out).acquire()
        Path(out).mkdir(parents=True, exist_ok=True)
        resolved = cfg.model_copy(update={"model": model.cfg})
        atomic_write_text(run.dir.config_path, config_yaml(resolved, run.device))
        atomic_write_text(run.dir.path / "command.txt", (command or "") + "\n")
        atomic_write_text(run.dir.path / "injection.json", json.dumps(extra, indent=1) + "\n")
        run.dir.ckpt_dir.mkdir(exist_ok=True)
        return run

    def draw_batch(self) -> Split:
        """The new facts (all, or a draw), plus n_replay old rows drawn afresh."""
        new = super().draw_batch()
        n = self.extra["info"]["n_replay"]
        if not n:
            return new
        idx = torch.randint(len(self.replay_pool), (n,), device=self.device,
                            generator=self.generator)
        old = self.replay_pool.rows(idx)
        return Split(torch.cat([new.inputs, old.inputs]),
                     torch.cat([new.answer_pos, old.answer_pos]),
                     torch.cat([new.targets, old.targets]))

    def snapshot(self) -> None:
        atomic_save_safetensors(self.dir.checkpoint_path(self.step),
                                effective_state_dict(self.model), {"step": str(self.step)})

    def save_resume(self, status: str = "running") -> None:
        # an injection is minutes long: rerun it rather than resume it
        self.last_good = self.step
        self.write_summary(status=status)

    def write_summary(self, status: str) -> dict:
        from groklab.train.summary import run_summary

        summary = run_summary(self, self.dir.read_metrics(), status)
        summary["injection"] = {k: self.extra[k] for k in ("adapter", "n_params", "info")}
        atomic_write_text(self.dir.summary_path, json.dumps(summary, indent=1) + "\n")
        return summary

    def save_adapter(self) -> None:
        tensors = dict(self.adapters.state_dict())
        first = self.extra["info"]["base_vocab"]
        if self.extra["info"]["n_new_entities"]:
            tensors["W_E.new_rows"] = self.model.W_E[first:].detach()
        atomic_save_safetensors(self.dir.path / "adapter.safetensors", tensors,
                                {"kind": self.adapters.kind})
        atomic_write_text(self.dir.path / "adapter.json",
                          json.dumps(self.extra["adapter"], indent=1) + "\n")


def prepare(run_dir: str | Path, ic: InjectConfig):
    """Everything checked and built before anything is written: base run, data, adapted model,
    trainable parameters, the run config, the injection record and the replay pool."""
    base = load_run(run_dir)
    if base.config.task.name != "composition":
        raise TaskError(f"'{run_dir}' is a {base.config.task.name} run; fact injection needs a "
                        "composition run")
    for key in ("n_facts", "steps", "eval_every", "probe_size"):
        if getattr(ic, key) < 1:
            raise TaskError(f"--{key.replace('_', '-')} {getattr(ic, key)} must be >= 1")
    data = base.task
    facts = make_facts(data, ic.facts, ic.n_facts, ic.seed)
    idata = injection_data(data, facts, replay=ic.replay, seed=ic.seed,
                           probe_size=ic.probe_size)
    model = base.model(ic.checkpoint)
    first_new = grow_vocab(model, idata.info["n_new_entities"], seed=ic.seed)
    torch.manual_seed(ic.seed)  # LoRA's A
    adapters = attach(model, ic.adapter, ic.targets, ic.rank, ic.alpha, ic.dropout, ic.mora_type,
                      ic.last_layers, ic.adapter_path)
    params = [{"params": adapters.parameters(), "weight_decay": ic.weight_decay}]
    if idata.info["n_new_entities"]:
        if ic.adapter == "full":
            tokens = new_token_params(model)
        else:
            tokens = train_new_rows_only(model, first_new)
        ids = {id(p) for p in tokens}
        params[0]["params"] = [p for p in params[0]["params"] if id(p) not in ids]
        params.append({"params": tokens, "weight_decay": 0.0})
    tree = base.dir.read_config_tree()
    tree["train"].update(steps=ic.steps, lr=ic.lr, batch_size=ic.batch_size,
                         weight_decay=ic.weight_decay, warmup_steps=0, lr_schedule="constant",
                         eval_every=ic.eval_every, eval_per_decade=4, train_probe_size=ic.probe_size,
                         checkpoint_every=ic.steps,
                         checkpoint_per_decade=0, resume_every=ic.steps, seed=ic.seed,
                         grokfast="none", fixed_weight_norm=False)
    tree["model"].update(d_vocab=-1, d_vocab_out=-1)  # from the (grown) vocabulary
    cfg = build_config(tree)
    n_params = sum(p.numel() for g in params for p in g["params"])
    if idata.info["n_new_entities"] and ic.adapter != "full":  # only the new tokens train
        vocab = model.cfg.d_vocab
        n_params -= sum(p.numel() // vocab * first_new for p in params[-1]["params"])
    extra = {"base_run": str(Path(run_dir).resolve()), "inject": ic.model_dump(mode="json"),
             "adapter": {**adapters.config(), "n_params": n_params},
             "n_params": n_params, "info": idata.info, "facts": facts.tolist()}
    return cfg, idata, model, adapters, params, extra, data.train


def start_injection(run_dir: str | Path, out: str | Path, ic: InjectConfig,
                    command: str | None = None) -> InjectRun:
    """Check and build everything, then create OUT (bad input raises before anything exists)."""
    cfg, idata, model, adapters, params, extra, pool = prepare(run_dir, ic)
    return InjectRun.begin(cfg, Path(out), idata, model, adapters, params, extra, pool, command)


def inject(run_dir: str | Path, out: str | Path, ic: InjectConfig, *, progress: bool = False,
           command: str | None = None) -> dict:
    """Inject, train, save the adapter; returns the summary."""
    run = start_injection(run_dir, out, ic, command)
    summary = run.train(progress=progress)
    run.save_adapter()
    return summary
