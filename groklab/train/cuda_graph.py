"""The whole training step as one CUDA graph (``train.cuda_graph: true``).

Question: at the shapes of Wang et al.'s runs (8 layers, d_model 768, batch 512, 4 tokens) a
step is a few hundred small kernels and the GPU idles while Python launches them. On one H100
the Hugging Face baseline runs ~34-47 steps/s, while a plain PyTorch step captured as one CUDA
graph runs ~148 steps/s (docs/anchors.md, "GPU throughput"). How much of that does groklab's own
trainer get?

Method (PyTorch's whole-network capture recipe, torch.cuda.graphs docs): the batch gather,
forward (under bf16 autocast when ``train.precision`` is bf16, with the autocast cache off as
capture requires), loss, backward, the gradient filters, clipping and a fused, capturable AdamW
are the run's own eager code (``Run.loss``, ``Run.optimizer_step``), captured once and replayed
every step. The run builds that capturable AdamW itself when ``train.cuda_graph`` is on a CUDA
device, with its learning rate in a device tensor that ``Run.set_lr`` refills (a kernel launch,
not a host sync). Outside the graph, per step, stay the batch-index draw into a static buffer
from the run's own generator (the same draws as the eager step, so the same batches) and that
refill. The first ``WARMUP`` steps run eagerly through the same buffers on a side stream (real
training steps) so cuBLAS, autograd and the optimizer state exist before capture. Evaluation,
checkpoints and the NaN check stay in the schedule loop, between replays.

Options whose code is not capture-safe (Grokfast MA's ring buffer index, a weight-decay ramp
read by the optimizer as a host number) are refused with ``train.cuda_graph`` by the config; a
capture that fails at run time falls back to the eager step with one warning.
"""

from __future__ import annotations

import warnings

import torch


class CudaGraphFallback(UserWarning):
    """``train.cuda_graph`` was asked for but the eager step runs instead (the reason given)."""


class GraphStep:
    """``step() -> loss [1]`` for ``run``: eager for ``WARMUP`` calls, then graph replays.
    ``capture=False`` runs the same static-buffer step eagerly on any device (what the tests
    compare against the eager step on a CPU)."""

    WARMUP = 3

    def __init__(self, run, capture: bool = True):
        self.run = run
        self.capture = capture
        n = run.cfg.train.batch_size
        self.idx = None if run.full_batch else torch.zeros(n, dtype=torch.long,
                                                           device=run.device)
        self.graph = None
        self.static_loss = None
        self.calls = 0

    def _body(self) -> torch.Tensor:
        """Gather, forward, loss, backward, filters, clip, AdamW: the part that is captured
        (``Run.autocast`` turns the autocast cache off for a run with ``train.cuda_graph``)."""
        run = self.run
        loss = run.loss(run.train_split if run.full_batch else run.train_split.rows(self.idx))
        loss.backward()
        run.optimizer_step(zero_grad=False)
        return loss.detach()[None]

    def _draw(self) -> None:
        run = self.run
        if not run.full_batch:
            run.sampler(run.step, run.generator, out=self.idx)

    def __call__(self) -> torch.Tensor:
        self._draw()
        if not self.capture:
            loss = self._body()
            self.run.optimizer.zero_grad(set_to_none=True)
            return loss
        if self.graph is None:
            if self.calls < self.WARMUP:
                self.calls += 1
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    self.run.optimizer.zero_grad(set_to_none=True)
                    loss = self._body()
                torch.cuda.current_stream().wait_stream(stream)
                return loss
            self.run.optimizer.zero_grad(set_to_none=True)  # backward allocates in the pool
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.static_loss = self._body()
            except Exception as e:  # noqa: BLE001 - a failed capture executed nothing
                warnings.warn(f"train.cuda_graph: capture failed, running the eager step "
                              f"instead: {type(e).__name__}: {e}", CudaGraphFallback,
                              stacklevel=2)
                self.capture = False
                self.run.optimizer.zero_grad(set_to_none=True)
                loss = self._body()
                self.run.optimizer.zero_grad(set_to_none=True)
                return loss
            self.graph = graph
        self.graph.replay()
        return self.static_loss
