"""The TransformerLens surface of :class:`~groklab.models.transformer.HookedTransformer` beyond
its forward pass: stacked weights (``W_Q`` ... ``b_out``, ``OV``, ``QK``) and the ``return_type``
outputs (``"logits"``, ``"loss"``, ``"both"``, None).

Stacked weights have one row per *effective* layer, matching the hook names: a stack of 2
blocks looped twice gives ``W_Q`` [4, n_heads, d_model, d_head] whose rows 2-3 are the same
tensors as rows 0-1. ``OV`` and ``QK`` are :class:`FactoredMatrix` products (the subset of
TransformerLens's class an analysis reads: ``A``, ``B``, ``AB``, ``BA``, ``T``, ``@``,
``eigenvalues``, ``norm``, indexing over the leading dims), never multiplied out until asked.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Output(NamedTuple):
    """``return_type="both"``: TransformerLens's ``Output(logits, loss)``."""

    logits: torch.Tensor
    loss: torch.Tensor


class FactoredMatrix:
    """A @ B kept as its two factors: A [..., m, k], B [..., k, n]."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor):
        self.A, self.B = A, B

    @property
    def AB(self) -> torch.Tensor:
        return self.A @ self.B

    @property
    def BA(self) -> torch.Tensor:
        """[..., k, k]: the same nonzero eigenvalues as AB, cheaper when k is small."""
        return self.B @ self.A

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*torch.broadcast_shapes(self.A.shape[:-2], self.B.shape[:-2]),
                           self.A.shape[-2], self.B.shape[-1]))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def T(self) -> "FactoredMatrix":
        return FactoredMatrix(self.B.transpose(-2, -1), self.A.transpose(-2, -1))

    def __matmul__(self, other):
        if isinstance(other, FactoredMatrix):
            return FactoredMatrix(self.A, self.B @ other.AB)
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other):
        return FactoredMatrix(other @ self.A, self.B)

    def __getitem__(self, idx) -> "FactoredMatrix":
        return FactoredMatrix(self.A[idx], self.B[idx])

    @property
    def eigenvalues(self) -> torch.Tensor:
        """The nonzero eigenvalues of AB, through BA [..., k, k]."""
        return torch.linalg.eigvals(self.BA)

    def norm(self) -> torch.Tensor:
        """Frobenius norm of AB over the last two dims."""
        return self.AB.pow(2).sum((-2, -1)).sqrt()

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={tuple(self.shape)}, inner={self.A.shape[-1]})"


class StackedWeights:
    """TransformerLens's weight properties, for a model with ``blocks[l].attn`` and ``.mlp``."""

    def _stack(self, part: str, name: str) -> torch.Tensor:
        return torch.stack([getattr(getattr(b, part), name) for b in self.blocks])

    W_Q = property(lambda self: self._stack("attn", "W_Q"), doc="[layers, heads, d_model, d_head]")
    W_K = property(lambda self: self._stack("attn", "W_K"), doc="[layers, heads, d_model, d_head]")
    W_V = property(lambda self: self._stack("attn", "W_V"), doc="[layers, heads, d_model, d_head]")
    W_O = property(lambda self: self._stack("attn", "W_O"), doc="[layers, heads, d_head, d_model]")
    b_Q = property(lambda self: self._stack("attn", "b_Q"), doc="[layers, heads, d_head]")
    b_K = property(lambda self: self._stack("attn", "b_K"), doc="[layers, heads, d_head]")
    b_V = property(lambda self: self._stack("attn", "b_V"), doc="[layers, heads, d_head]")
    b_O = property(lambda self: self._stack("attn", "b_O"), doc="[layers, d_model]")
    W_in = property(lambda self: self._stack("mlp", "W_in"), doc="[layers, d_model, d_mlp]")
    W_out = property(lambda self: self._stack("mlp", "W_out"), doc="[layers, d_mlp, d_model]")
    b_in = property(lambda self: self._stack("mlp", "b_in"), doc="[layers, d_mlp]")
    b_out = property(lambda self: self._stack("mlp", "b_out"), doc="[layers, d_model]")

    @property
    def QK(self) -> FactoredMatrix:
        """[layers, heads, d_model, d_model]: W_Q @ W_K^T (query side on the left)."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """[layers, heads, d_model, d_model]: W_V @ W_O."""
        return FactoredMatrix(self.W_V, self.W_O)


def lm_cross_entropy_loss(logits: torch.Tensor, tokens: torch.Tensor,
                          per_token: bool = False) -> torch.Tensor:
    """TransformerLens's next-token loss: position p predicts token p + 1 ([batch, pos - 1]
    with ``per_token``, else the mean)."""
    log_probs = F.log_softmax(logits, dim=-1)
    predicted = log_probs[..., :-1, :].gather(-1, tokens[..., 1:, None])[..., 0]
    return -predicted if per_token else -predicted.mean()


def finish(logits: torch.Tensor, return_type: str | None, tokens: torch.Tensor | None,
           answered: bool, targets: torch.Tensor | None, loss_per_token: bool):
    """The output ``return_type`` asks for, from the logits."""
    if return_type == "logits":
        return logits
    if return_type is None:
        return None
    if return_type not in ("loss", "both"):
        raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, got "
                         f"{return_type!r}")
    if answered:
        if targets is None:
            raise ValueError("return_type='loss' at answer_pos needs targets=[batch] answer "
                             "tokens (without answer_pos it is the next-token loss)")
        loss = F.cross_entropy(logits, targets, reduction="none" if loss_per_token else "mean")
    else:
        if tokens is None:
            raise ValueError("return_type='loss' needs the tokens: pass tokens=... when the "
                             "first argument is a residual stream")
        loss = lm_cross_entropy_loss(logits, tokens, loss_per_token)
    return loss if return_type == "loss" else Output(logits, loss)
