"""Many small runs trained side by side as one batched model.

Question: a seed or hyperparameter sweep of tiny transformers leaves a GPU almost idle (a step of
composition-small is launch-bound: anchors.md section 14), and on a CPU every op pays a fixed
overhead. Can M runs share one step and still be M ordinary runs?

Method: every parameter of the M members is stacked along a leading member dimension and the
forward pass is written with batched matmuls (``baddbmm``/``bmm``; attention folds the member
dimension into SDPA's batch), so one forward, one backward and one optimizer step serve all M.
The member losses are summed, so each member's gradient is exactly the gradient of its own mean
loss. Gradient clipping is per member (each member's own global norm) and AdamW is written out
with per-member learning rate and weight decay, following ``torch.optim.AdamW``'s single-tensor
arithmetic operation by operation (the per-member scalars are computed in double on the host, as
torch does, and applied as float32 tensors).

Each member is a real :class:`groklab.train.loop.Run` bound to its own directory: it is built by
``Run.start`` (``torch.manual_seed(train.seed)`` then ``build_model``, exactly as a run alone),
draws its batch indices from its own generator seeded ``train.seed``, and evaluates, snapshots,
writes ``resume.pt`` and its summary through the Run's own methods on the same schedule. So a
member's directory is an ordinary run directory (``groklab resume`` continues it alone) and its
metrics and checkpoints equal those of the same run trained alone up to float rounding (batched
matmul kernels sum in a different order; tests/test_batched.py bounds the difference).

What may differ between members of one batch: anything that does not change shapes or the
algorithm: ``train.seed``, ``lr``, ``weight_decay``, ``warmup_steps``, ``lr_schedule``,
``min_lr_ratio``, ``grad_clip``, the evaluation sizes, and the task itself (e.g. ``task.phi``, the
data fraction) as long as the vocabulary and sequence length agree. Everything else must be
equal, dropout must be 0 (a member's dropout masks could not match its solo run), and every
training option this module does not implement (accelerators, fp64 loss, ...) must be at its
default; :func:`batch_key` returns None for a config that cannot join a batch.

Reference for the vectorised-ensemble idea: torch.func model ensembling tutorial (functional_call +
vmap over stacked parameters). vmap has no CPU batching rule for SDPA in torch 2.13, so the
batched forward is written out here; the equality test guards it against drift from
``groklab/models/transformer.py``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from groklab.config import Config, TrainConfig, build_config
from groklab.models.config import ModelConfig
from groklab.tasks import TaskData, make_task
from groklab.train.loop import Run, TrainingDiverged, prepare_out_dir
from groklab.train.progress import make_progress
from groklab.train.rundir import RunDir, RunDirError, atomic_save_safetensors, atomic_torch_save
from groklab.train.schedule import lr_at

# train.* keys that may differ inside one batch (they change neither shapes nor the algorithm).
PER_MEMBER_TRAIN = ("seed", "lr", "weight_decay", "warmup_steps", "lr_schedule", "min_lr_ratio",
                    "grad_clip", "eval_batch_size", "train_probe_size", "cuda_graph")
# train.* keys that must be equal inside one batch and that this module implements.
SHARED_TRAIN = ("steps", "batch_size", "betas", "eps", "precision", "device", "eval_every",
                "eval_per_decade", "checkpoint_every", "checkpoint_per_decade", "resume_every")
# model.* keys the batched forward implements (any other key must be at its default).
MODEL_KEYS = ("architecture", "n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab",
              "d_vocab_out", "n_ctx", "act_fn", "normalization_type", "tie_word_embeddings",
              "dropout", "n_loops", "init_mode", "initializer_range", "init_scale")


def _defaults(cls) -> dict:
    return {k: f.default for k, f in cls.model_fields.items()}


def batch_key(cfg: Config, data: TaskData) -> str | None:
    """A string equal for configs that can train in one batch; None if ``cfg`` cannot batch.

    The key holds the resolved model shape, the shared training settings and, for full-batch
    training, the training-set size (members then stack their whole training sets).
    """
    if cfg.model.architecture != "transformer" or cfg.model.dropout != 0.0:
        return None
    tdef = _defaults(TrainConfig)
    train = cfg.train.model_dump(mode="json")
    unknown = [k for k in train if k not in PER_MEMBER_TRAIN and k not in SHARED_TRAIN]
    if any(train[k] != _json(tdef[k]) for k in unknown):
        return None
    shape = (len(data.vocab), data.seq_len)
    resolved = cfg.model.resolved(*shape).model_dump(mode="json")
    # Model keys the batched forward does not know must hold what they resolve to by default
    # (a config read back from config.yaml carries resolved values, not the -1 sentinels).
    plain = ModelConfig(**{k: resolved[k] for k in MODEL_KEYS if k in resolved})
    plain = plain.resolved(*shape).model_dump(mode="json")
    if any(resolved[k] != plain[k] for k in resolved if k not in MODEL_KEYS):
        return None
    n = len(data.train)
    full = cfg.train.batch_size == 0 or cfg.train.batch_size >= n
    key = {"model": {k: resolved[k] for k in MODEL_KEYS if k in resolved},
           "train": {k: train[k] for k in SHARED_TRAIN if k in train},
           "seq_len": data.seq_len, "full_batch_rows": n if full else None}
    return json.dumps(key, sort_keys=True)


def _json(v):
    return json.loads(json.dumps(v)) if isinstance(v, (tuple, list)) else v


# ----------------------------------------------------------------------------- batched forward


def _layer_norm(x, w, b, eps: float = 1e-5):
    # Same (x - mean) / sqrt(var + eps) * w + b as the model's LayerNorm, per-member w and b.
    return torch.addcmul(b[:, None, :], F.layer_norm(x, x.shape[-1:], None, None, eps),
                         w[:, None, :])


def _act(x, act_fn: str):
    if act_fn == "relu":
        return F.relu(x)
    return F.gelu(x, approximate="tanh" if act_fn == "gelu_new" else "none")


def batched_forward(P: dict[str, torch.Tensor], cfg: ModelConfig, tokens: torch.Tensor,
                    answer_pos: torch.Tensor) -> torch.Tensor:
    """Logits [M, batch, d_vocab_out] at the answer positions of M stacked HookedTransformers.

    ``P`` maps each unique parameter name of the model to its stacked [M, ...] tensor;
    ``tokens`` is [M, batch, pos] and ``answer_pos`` [M, batch]. Activations are kept as
    [M, batch * pos, d_model] so every projection is one ``baddbmm`` over the members.
    """
    M, B, L = tokens.shape
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.d_head
    ln = cfg.normalization_type == "LN"
    members = torch.arange(M, device=tokens.device)[:, None]
    resid = P["W_E"][members, tokens.reshape(M, B * L)]  # [M, B*L, d]
    resid = (resid.view(M, B, L, d) + P["W_pos"][:, None, :L]).reshape(M, B * L, d)
    for layer in range(cfg.n_effective_layers):
        pre = f"blocks.{layer % cfg.n_layers}."
        x = _layer_norm(resid, P[pre + "ln1.w"], P[pre + "ln1.b"]) if ln else resid
        W = torch.cat([P[pre + "attn.W_Q"], P[pre + "attn.W_K"], P[pre + "attn.W_V"]], 1)
        W = W.permute(0, 2, 1, 3).reshape(M, d, 3 * h * dh)
        b = torch.cat([P[pre + "attn.b_Q"], P[pre + "attn.b_K"], P[pre + "attn.b_V"]], 1)
        qkv = torch.baddbmm(b.reshape(M, 1, 3 * h * dh), x, W).view(M * B, L, 3, h, dh)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # [M*B, h, L, dh]
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
        attn_out = torch.baddbmm(P[pre + "attn.b_O"][:, None, :], z.reshape(M, B * L, h * dh),
                                 P[pre + "attn.W_O"].reshape(M, h * dh, d))
        resid = resid + attn_out
        x = _layer_norm(resid, P[pre + "ln2.w"], P[pre + "ln2.b"]) if ln else resid
        hidden = _act(torch.baddbmm(P[pre + "mlp.b_in"][:, None, :], x, P[pre + "mlp.W_in"]),
                      cfg.act_fn)
        resid = resid + torch.baddbmm(P[pre + "mlp.b_out"][:, None, :], hidden, P[pre + "mlp.W_out"])
    if ln:
        resid = _layer_norm(resid, P["ln_final.w"], P["ln_final.b"])
    resid = resid.view(M, B, L, d).gather(2, answer_pos[:, :, None, None].expand(M, B, 1, d))
    resid = resid.squeeze(2)  # [M, B, d]
    if cfg.tie_word_embeddings:
        return torch.bmm(resid, P["W_E"].transpose(1, 2))
    return torch.baddbmm(P["b_U"][:, None, :], resid, P["W_U_param"])


# ----------------------------------------------------------------------------- the batched run


class BatchedRun:
    """M runs of one architecture trained as one batched model; each keeps its own directory.

    ``BatchedRun.start(cfgs, outs)`` or ``BatchedRun.resume(dirs)``, then ``.train()``, which
    returns the M summaries. A member whose loss becomes NaN/Inf stops logging (its summary says
    ``diverged``, as a run alone would) while the others go on; its stacked slice is isolated
    from theirs (per-member loss, clipping and optimizer state).
    """

    def __init__(self, members: list[Run]):
        if not members:
            raise ValueError("a batched run needs at least one member")
        keys = {batch_key(r.cfg, r.data) for r in members}
        if None in keys or len(keys) != 1:
            raise ValueError("members of a batched run must share one batch_key (see batch_key)")
        steps = {r.step for r in members}
        if len(steps) != 1:
            raise ValueError(f"members of a batched run must be at the same step, got {steps}")
        self.members = members
        self.M = len(members)
        lead = members[0]
        self.device = lead.device
        self.mcfg = lead.model_cfg
        self.tc = lead.cfg.train
        self.step = lead.step
        # Every parameter of every member lives in one [M, P] buffer, decayed tensors (dim >= 2)
        # first, so clipping and AdamW are a handful of ops over all members and tensors at
        # once (a GPU would otherwise spend the step launching per-tensor kernels). The stacked
        # [M, ...] parameters are views into it; their .grad are views into a twin buffer that
        # backward accumulates into.
        named = list(lead.model.named_parameters())
        order = [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]
        shapes = dict((n, tuple(p.shape)) for n, p in named)
        self.names, self.layout, off = order, {}, 0
        for n in order:
            k = math.prod(shapes[n])
            self.layout[n] = (off, k, shapes[n])
            off += k
        self.n_decay = sum(self.layout[n][1] for n, p in named if p.dim() >= 2)
        self.flat = self._flatten([dict(r.model.named_parameters()) for r in members])
        self.grad_flat = torch.zeros_like(self.flat)
        self.params = self._views(self.flat)
        self._grads = self._views(self.grad_flat)
        for n, p in self.params.items():
            p.requires_grad_(True)
            p.grad = self._grads[n]
        self.exp_avg, self.exp_avg_sq = self._stack_optimizer_state()
        # Training data: the distinct training sets, concatenated once; member m indexes its own
        # rows through an offset, so differing data (task.phi, data fraction) costs one gather.
        distinct: dict[int, int] = {}
        parts = []
        self.offsets, self.sizes = [], []
        for r in members:
            key = id(r.data.train)  # members built from one TaskData share its rows
            if key not in distinct:
                distinct[key] = sum(len(s) for s in parts)
                parts.append(r.train_split)
            self.offsets.append(distinct[key])
            self.sizes.append(len(r.train_split))
        self.inputs = torch.cat([s.inputs for s in parts])
        self.answer_pos = torch.cat([s.answer_pos for s in parts])
        self.targets = torch.cat([s.targets for s in parts])
        n0 = self.sizes[0]
        self.full_batch = self.tc.batch_size == 0 or self.tc.batch_size >= n0
        if self.full_batch:
            self.full_idx = torch.stack([torch.arange(o, o + n, device=self.device)
                                         for o, n in zip(self.offsets, self.sizes)])
        # The running training loss (restored by Run.resume); each member's loss_sum becomes a
        # view of its slot, so the member's own log_eval zeroes exactly that slot.
        self.loss_sum = torch.stack([r.loss_sum.detach().reshape(()) for r in members]).clone()
        for m, r in enumerate(members):
            r.loss_sum = self.loss_sum[m]
        self.loss_count = lead.loss_count  # equal for all: same step, same eval schedule
        for r in members:
            if not hasattr(r, "_own_rng"):
                r._own_rng = torch.get_rng_state()
        self.alive = [True] * self.M
        self.errors: list[str | None] = [None] * self.M

    # ------------------------------------------------------------------ construction

    @classmethod
    def start(cls, cfgs: list[Config], outs: list[Path], command: str | None = None,
              data: dict[str, TaskData] | None = None) -> "BatchedRun":
        """Check every directory first, then start each member exactly as ``Run.start`` does."""
        if len(cfgs) != len(outs):
            raise ValueError("one output directory per config")
        if len({str(Path(o).resolve()) for o in outs}) != len(outs):
            raise RunDirError("two members of a batched run share an output directory")
        for out in outs:
            prepare_out_dir(Path(out))
        data = {} if data is None else data
        members = []
        for cfg, out in zip(cfgs, outs):
            members.append(Run.start(cfg, Path(out), command=command,
                                     data=_task_data(cfg, data)))
            members[-1]._own_rng = torch.get_rng_state()  # what a solo run's RNG holds now
        return cls(members)

    @classmethod
    def resume(cls, dirs: list[Path], data: dict[str, TaskData] | None = None) -> "BatchedRun":
        data = {} if data is None else data
        members = []
        for d in dirs:
            cfg = build_config(RunDir(Path(d)).read_config_tree())
            members.append(Run.resume(Path(d), data=_task_data(cfg, data)))
            members[-1]._own_rng = torch.get_rng_state()  # restored from its resume.pt
        return cls(members)

    def _flatten(self, per_member: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """[M, P] from one name -> tensor dict per member, in layout order."""
        return torch.stack([torch.cat([d[n].detach().reshape(-1) for n in self.names])
                            for d in per_member]).contiguous()

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """name -> [M, *shape] view of a flat [M, P] buffer."""
        return {n: flat[:, o : o + k].view(self.M, *shape)
                for n, (o, k, shape) in self.layout.items()}

    def _stack_optimizer_state(self):
        """[M, P] AdamW moments from each member's optimizer (zeros before the first step)."""
        moments = []
        for key in ("exp_avg", "exp_avg_sq"):
            per_member = []
            for r in self.members:
                d = {}
                for n, p in r.model.named_parameters():
                    st = r.optimizer.state.get(p, {})
                    d[n] = st[key] if key in st else torch.zeros_like(p)
                per_member.append(d)
            moments.append(self._flatten(per_member))
        return moments[0], moments[1]

    # ------------------------------------------------------------------ one step for all

    def _batch(self):
        if self.full_batch:
            idx = self.full_idx
        else:
            B = self.tc.batch_size
            idx = torch.stack([
                torch.randint(n, (B,), device=self.device, generator=r.generator) + off
                for r, n, off in zip(self.members, self.sizes, self.offsets)
            ])
        return self.inputs[idx], self.answer_pos[idx], self.targets[idx]

    def train_step(self, lrs: list[float]) -> torch.Tensor:
        """One forward/backward/AdamW step of every member; returns the M losses (detached)."""
        x, ap, y = self._batch()
        with self.members[0].autocast():
            logits = batched_forward(self.params, self.mcfg, x, ap)
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                 reduction="none").view(self.M, -1).mean(1)
        self.grad_flat.zero_()
        with warnings.catch_warnings():
            # The views are strided by the [M, P] buffer: autograd warns, and adds in place.
            warnings.filterwarnings("ignore", message="grad and param do not obey")
            losses.sum().backward()  # accumulates into grad_flat through the .grad views
        if any(p.grad is not self._grads[n] for n, p in self.params.items()):
            raise RuntimeError("autograd replaced a gradient view; batched step would be wrong")
        self._clip()
        self._adamw(lrs)
        return losses.detach()

    @torch.no_grad()
    def _clip(self) -> None:
        """torch.nn.utils.clip_grad_norm_ per member (its global norm over all its tensors)."""
        clips = [r.cfg.train.grad_clip for r in self.members]
        if not any(c > 0 for c in clips):
            return
        total = torch.linalg.vector_norm(self.grad_flat, dim=1)
        max_norm = torch.tensor(clips, dtype=total.dtype, device=total.device)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        coef = torch.where(max_norm > 0, coef, torch.ones_like(coef))
        self.grad_flat.mul_(coef[:, None])

    @torch.no_grad()
    def _adamw(self, lrs: list[float]) -> None:
        """torch.optim.AdamW (single-tensor path) with per-member lr and weight decay."""
        beta1, beta2 = self.tc.betas
        eps = self.tc.eps
        t = self.step + 1  # the optimizer's step count after this update
        bias_correction1 = 1 - beta1**t
        bias_correction2_sqrt = (1 - beta2**t) ** 0.5
        dev = self.device
        # Host-side double arithmetic, as torch does with a float lr; applied as float32.
        decay = torch.tensor([1 - lr * r.cfg.train.weight_decay for lr, r in zip(lrs, self.members)],
                             dtype=torch.float32, device=dev)
        neg_step = torch.tensor([-(lr / bias_correction1) for lr in lrs],
                                dtype=torch.float32, device=dev)
        p, g, m1, m2 = self.flat, self.grad_flat, self.exp_avg, self.exp_avg_sq
        if any(r.cfg.train.weight_decay != 0 for r in self.members):
            p[:, : self.n_decay].mul_(decay[:, None])  # biases and LayerNorm: no decay
        m1.lerp_(g, 1 - beta1)
        m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (m2.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(m1 * neg_step[:, None], denom)

    # ------------------------------------------------------------------ members' bookkeeping

    @torch.no_grad()
    def _sync_member(self, m: int) -> None:
        """Copy member m's slice into its own module (for evaluation and checkpoints)."""
        for n, p in self.members[m].model.named_parameters():
            p.copy_(self.params[n][m])

    def _member_state(self, m: int, lr: float) -> dict:
        """``Run.state()`` of member m: AdamW state laid out as torch.optim.AdamW saves it."""
        r = self.members[m]
        for group in r.optimizer.param_groups:
            group["lr"] = lr
            on_device = group.get("fused") or group.get("capturable")
            for p in group["params"]:
                n = self._name_of(r, p)
                if self.step == 0:
                    r.optimizer.state.pop(p, None)
                    continue
                r.optimizer.state[p] = {
                    "step": torch.tensor(float(self.step), dtype=torch.float32,
                                         device=p.device if on_device else "cpu"),
                    "exp_avg": self._views(self.exp_avg)[n][m].clone(),
                    "exp_avg_sq": self._views(self.exp_avg_sq)[n][m].clone(),
                }
        r.loss_count = self.loss_count
        state = r.state()
        state["loss_sum"] = state["loss_sum"].clone()  # not a view of the [M] accumulator
        state["torch_rng"] = r._own_rng
        return state

    @staticmethod
    def _name_of(r: Run, p) -> str:
        if not hasattr(r, "_param_names"):
            r._param_names = {id(q): n for n, q in r.model.named_parameters()}
        return r._param_names[id(p)]

    def _check(self, m: int, since: int) -> bool:
        r = self.members[m]
        r.loss_count = self.loss_count
        try:
            r.check_finite(since)
        except TrainingDiverged as e:
            self.alive[m] = False
            self.errors[m] = str(e)
            return False
        return True

    # ------------------------------------------------------------------ the loop

    def lrs(self) -> list[float]:
        out = []
        for r in self.members:
            tc = r.cfg.train
            out.append(lr_at(self.step, lr=tc.lr, warmup_steps=tc.warmup_steps,
                             schedule=tc.lr_schedule, total=tc.steps, min_lr_ratio=tc.min_lr_ratio))
        return out

    def train(self, progress: bool = False) -> list[dict]:
        """The loop of ``Run.train`` with one batched step; returns every member's summary."""
        tc = self.tc
        t0 = time.perf_counter()
        lead = self.members[0]
        for r in self.members:
            r._t0 = t0
            r.model.train()
            r.last_good = self.step
        last_check = self.step
        resumed_at = self.step
        bar = make_progress(progress, total=tc.steps, start=self.step,
                            id_split=lead.data.id_split, ood_split=lead.data.ood_split)
        with bar:
            while True:
                lrs = self.lrs()
                fresh = self.step > resumed_at or resumed_at == 0
                do_eval = self.step in lead.eval_steps and fresh
                do_ckpt = self.step in lead.ckpt_steps
                do_resume = self.step > resumed_at and (self.step % tc.resume_every == 0
                                                        or self.step == tc.steps)
                if do_eval or do_ckpt or do_resume:
                    for m, r in enumerate(self.members):
                        r.step = self.step
                        if self.alive[m]:
                            self._sync_member(m)
                if do_eval:
                    for m, r in enumerate(self.members):
                        if self.alive[m] and self._check(m, last_check):
                            row = r.log_eval(lrs[m])
                            if m == 0:
                                bar.metrics(row)
                    self.loss_sum.zero_()
                    self.loss_count = 0
                    last_check = self.step
                if do_ckpt:
                    for m, r in enumerate(self.members):
                        if self.alive[m] and self._check(m, last_check):
                            atomic_save_safetensors(r.dir.checkpoint_path(self.step),
                                                    r.model.unique_state_dict(),
                                                    {"step": str(self.step)})
                if do_resume:
                    for m, r in enumerate(self.members):
                        if self.alive[m] and self._check(m, last_check):
                            atomic_torch_save(r.dir.resume_path, self._member_state(m, lrs[m]))
                            r.last_good = self.step
                            r.write_summary(status="running")
                if self.step >= tc.steps:
                    break
                self.loss_sum += self.train_step(lrs)
                self.loss_count += 1
                self.step += 1
                bar.advance(self.step)
        return [r.write_summary(status="completed") if self.alive[m] else r.dir.read_summary()
                for m, r in enumerate(self.members)]


def _task_data(cfg: Config, cache: dict[str, TaskData]) -> TaskData:
    """One TaskData per distinct task config, shared by the members that train on it."""
    key = json.dumps(cfg.task.model_dump(mode="json"), sort_keys=True)
    if key not in cache:
        cache[key] = make_task(cfg.task)
    return cache[key]


def group_for_batching(items: list, key_of, max_members: int = 64) -> list[list]:
    """Items with equal keys in groups of at most ``max_members`` (None keys stay alone)."""
    groups: dict[str, list] = {}
    singles = []
    for it in items:
        k = key_of(it)
        if k is None:
            singles.append([it])
        else:
            groups.setdefault(k, []).append(it)
    out = []
    for members in groups.values():
        for i in range(0, len(members), max_members):
            out.append(members[i : i + max_members])
    return out + singles

