"""The whole training step as one CUDA graph (``train.cuda_graph: true``).

Question: at the shapes of Wang et al.'s runs (8 layers, d_model 768, batch 512, 4 tokens) a
step is a few hundred small kernels; the GPU idles while Python launches them. On one H100 the
Hugging Face baseline runs ~47 steps/s while a plain PyTorch step captured as one CUDA graph runs
~148 steps/s (eager kernels) and ~170 (compiled) (anchors.md section 14). How much of that does
groklab's own trainer get?

Method (PyTorch's whole-network capture recipe, torch.cuda.graphs docs): the batch gather,
forward (under bf16 autocast when ``train.precision`` is bf16, with the autocast cache off as
capture requires), loss, backward, gradient clipping and a fused, capturable AdamW whose learning
rate is a device tensor are captured once and replayed every step. Outside the graph, per step,
stay only two launches and no host synchronisation: the batch indices are drawn into a static
buffer from the run's own generator (the same draws as the eager step, so the same batches), and
the learning-rate tensor is refilled when the schedule changes it. The first ``WARMUP`` steps
run eagerly through the same static buffers on a side stream (they are real training steps) so
cuBLAS, autograd and the optimizer state exist before capture. Evaluation, checkpoints and the
NaN check stay in ``Run.train`` between replays, off the captured step.

Falls back to the eager step, with one :class:`CudaGraphFallback` warning, when there is no CUDA
device or the run uses an option whose code is not capture-safe (the accelerators of
groklab/train/accelerators.py, or any train option this module does not know).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from groklab.config import TrainConfig

# train.* options the captured step implements (or that live outside the step).
GRAPH_SAFE_TRAIN = {
    "steps", "batch_size", "lr", "weight_decay", "betas", "eps", "warmup_steps", "lr_schedule",
    "min_lr_ratio", "grad_clip", "precision", "loss_dtype", "seed", "device", "eval_every",
    "eval_per_decade", "eval_batch_size", "train_probe_size", "checkpoint_every",
    "checkpoint_per_decade", "resume_every", "tensorboard", "wandb", "cuda_graph",
}


class CudaGraphFallback(UserWarning):
    """``train.cuda_graph`` was asked for but the eager step runs instead (the reason given)."""


def unsupported_reason(run) -> str | None:
    """Why this run cannot capture its step (None: it can)."""
    defaults = {k: f.default for k, f in TrainConfig.model_fields.items()}
    tc = run.cfg.train.model_dump()
    for key, value in tc.items():
        if key not in GRAPH_SAFE_TRAIN and value != defaults.get(key):
            return f"train.{key}={value!r} is not captured in the graph"
    if run.device.type != "cuda" or not torch.cuda.is_available():
        return f"no CUDA device (the run is on {run.device})"
    return None


def make_graphed_step(run):
    """The captured step for ``run`` when ``train.cuda_graph`` is on and possible, else None."""
    if not getattr(run.cfg.train, "cuda_graph", False):
        return None
    reason = unsupported_reason(run)
    if reason is not None:
        warnings.warn(f"train.cuda_graph: running the eager step instead: {reason}",
                      CudaGraphFallback, stacklevel=2)
        return None
    return GraphedStep(run)


class GraphedStep:
    """``step(lr) -> loss`` for ``run``: eager for ``WARMUP`` calls, then one graph replay.

    ``capture=False`` runs the same static-buffer step eagerly on any device (what the tests
    compare against ``Run.train_step`` on a CPU).
    """

    WARMUP = 3

    def __init__(self, run, capture: bool = True):
        self.run = run
        self.capture = capture
        tc = run.cfg.train
        self.tc = tc
        self.split = run.train_split
        n = len(self.split)
        self.full = tc.batch_size == 0 or tc.batch_size >= n
        self.idx = None if self.full else torch.zeros(tc.batch_size, dtype=torch.long,
                                                      device=run.device)
        self.last_lr = None
        self.graph = None
        self.static_loss = None
        self.calls = 0
        if capture:
            # A fused, capturable AdamW reading its lr from a device tensor, carrying over the
            # run's optimizer state (a resumed run continues exactly where it stopped).
            self.lr = torch.tensor(tc.lr, dtype=torch.float32, device=run.device)
            old = run.optimizer
            opt = torch.optim.AdamW(run.model.parameter_groups(tc.weight_decay), lr=self.lr,
                                    betas=tuple(tc.betas), eps=tc.eps, fused=True,
                                    capturable=True)
            opt.load_state_dict(old.state_dict())
            run.optimizer = opt  # resume.pt saves this optimizer's state

    def _autocast(self):
        if self.tc.precision == "bf16":
            return torch.autocast(self.run.device.type, dtype=torch.bfloat16, cache_enabled=False)
        return torch.autocast(self.run.device.type, enabled=False)

    def _body(self) -> torch.Tensor:
        """Gather, forward, loss, backward, clip, AdamW: the part that is captured."""
        run, s = self.run, self.split
        if self.full:
            x, ap, y = s.inputs, s.answer_pos, s.targets
        else:
            x, ap, y = s.inputs[self.idx], s.answer_pos[self.idx], s.targets[self.idx]
        with self._autocast():
            logits = run.model(x, ap)
        loss = F.cross_entropy(logits.to(run.loss_dtype), y)
        loss.backward()
        if self.tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), self.tc.grad_clip)
        run.optimizer.step()
        return loss.detach()

    def _draw(self) -> None:
        if not self.full:
            torch.randint(len(self.split), (self.tc.batch_size,), device=self.run.device,
                          generator=self.run.generator, out=self.idx)

    def __call__(self, lr: float) -> torch.Tensor:
        self._draw()
        if not self.capture:
            return self._eager(lr)
        if lr != self.last_lr:
            self.lr.fill_(lr)  # a kernel launch, not a host sync
            self.last_lr = lr
            for group in self.run.optimizer.param_groups:
                group["lr"] = lr  # what resume.pt records
        if self.graph is None:
            self._tensor_lr(True)
            try:
                if self.calls < self.WARMUP:
                    self.calls += 1
                    stream = torch.cuda.Stream()
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream), warnings.catch_warnings():
                        # "capturable=True ... running without CUDA graph capture": intended.
                        warnings.filterwarnings("ignore", message=".*capturable=True.*")
                        self.run.optimizer.zero_grad(set_to_none=True)
                        loss = self._body()
                    torch.cuda.current_stream().wait_stream(stream)
                    return loss
                self.run.optimizer.zero_grad(set_to_none=True)  # backward allocates in the pool
                graph = torch.cuda.CUDAGraph()
                try:
                    with torch.cuda.graph(graph):
                        self.static_loss = self._body()
                except Exception as e:  # noqa: BLE001 - capture is not executed: nothing changed
                    warnings.warn(f"train.cuda_graph: capture failed, running the eager step "
                                  f"instead: {type(e).__name__}: {e}", CudaGraphFallback,
                                  stacklevel=2)
                    self.capture = False
                    self.run.optimizer.zero_grad(set_to_none=True)
                else:
                    self.graph = graph
            finally:
                self._tensor_lr(False, lr)
            if self.graph is None:  # capture failed: this step runs eagerly
                return self._eager(lr)
        self.graph.replay()
        return self.static_loss

    def _eager(self, lr: float) -> torch.Tensor:
        for group in self.run.optimizer.param_groups:
            group["lr"] = lr
        loss = self._body()
        self.run.optimizer.zero_grad(set_to_none=True)
        return loss

    def _tensor_lr(self, on: bool, lr: float | None = None) -> None:
        """Capture needs a capturable optimizer reading the lr tensor; the replay does not read
        the param groups at all, so between calls they hold plain values and resume.pt loads
        into an ordinary AdamW on any device."""
        for group in self.run.optimizer.param_groups:
            group["lr"] = self.lr if on else lr
            group["capturable"] = on
