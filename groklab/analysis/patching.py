"""Activation patching over hook names, batched: a whole grid in one forward pass per layer.

Question: which activation -- a (layer, position) of the residual stream, an attention or MLP
output, one attention head -- carries the information that makes one run behave like another?

Method: run a *base* input, overwrite one slice of one activation with its value from a
*source* run, finish the forward pass and score the logits with a metric. Which run is which
is the caller's choice, and the two conventions must not be mixed up (docs/methods.md, trap 5):

* **denoising** (TransformerLens ``patching.get_act_patch_*``, docs/methods.md section 3e): base =
  corrupted tokens, source = the clean cache; a cell scores how much clean information that
  one site restores. The ``get_act_patch_*`` functions below keep TL's names, argument order
  and output shapes ([n_layers, pos], [n_layers, n_heads], [n_layers, pos, n_heads],
  [3, n_layers, pos]).
* **noising** (Wang et al. 2024 causal tracing, section 1): base = clean tokens, source = a
  counterfactual run; a cell scores how much the prediction breaks (``causal_tracing``).

Batching. Patching an activation of block ``l`` cannot change anything computed before block
``l``, so every cell at layer ``l`` starts from the base run's residual entering ``l``
(``model(..., start_at_layer=l, residual=...)``); all cells of that layer are stacked along the
batch dimension ([cells * batch, pos, d_model]) and one hook replaces the masked slice of each
copy with ``torch.where``. A grid costs one base forward plus one partial forward per layer,
where TransformerLens's ``generic_activation_patch`` runs a full forward per cell in a Python
loop (docs/anchors.md section 12). :func:`patch_grid_looped` is that per-cell loop, kept as the
reference the batched grid is tested and benchmarked against.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from groklab.models.hooks import get_act_name

Metric = Callable[[torch.Tensor], torch.Tensor | float]
# source(l) -> activation of the source run at layer l: [batch, *act] (one source for every
# cell) or [cells, batch, *act] (a source per cell, e.g. one counterfactual per position).
Source = Callable[[int], torch.Tensor] | Mapping[str, torch.Tensor]


def hook_name(hook: str, layer: int) -> str:
    """A TL shorthand (``"resid_pre"``, ``"attn_out"``, ``"z"``, ...), a template with ``{l}``
    or a full name of block ``layer``."""
    if "{l}" in hook:
        return hook.format(l=layer)
    name = get_act_name(hook, layer)
    if name == hook and not hook.startswith("blocks."):
        raise KeyError(
            f"'{hook}' is not a block activation; use a TL shorthand (resid_pre, resid_mid, "
            "resid_post, attn_out, mlp_out, z, q, k, v, pattern, pre, post) or 'blocks.{l}.NAME'"
        )
    return name


def _source_at(source: Source, hook: str, layer: int) -> torch.Tensor:
    if callable(source):
        return source(layer)
    name = hook_name(hook, layer)
    if name not in source:
        raise KeyError(f"the source cache has no '{name}'; cache it with run_with_cache")
    return source[name]


@torch.no_grad()
def base_residuals(model, tokens: torch.Tensor, layers: Sequence[int] | None = None) -> dict:
    """The base run's residual stream entering each layer, from one forward pass."""
    n = model.cfg.n_effective_layers
    layers = range(n) if layers is None else layers
    names = {f"blocks.{l}.hook_resid_pre" for l in layers}
    _, cache = model.run_with_cache(tokens, names_filter=lambda nm: nm in names)
    return {l: cache[f"blocks.{l}.hook_resid_pre"] for l in layers}


def _replace(act: torch.Tensor, src: torch.Tensor, mask: torch.Tensor, n_cells: int):
    """act [cells * batch, *act]; src [batch | cells, batch, *act]; mask [cells, *act[:-1]]."""
    a = act.view(n_cells, -1, *act.shape[1:])
    if src.dim() == act.dim():
        src = src.unsqueeze(0)
    m = mask.view(n_cells, 1, *mask.shape[1:], 1)
    return torch.where(m, src.to(a.dtype), a).view_as(act)


@torch.no_grad()
def patch_grid(
    model,
    base_tokens: torch.Tensor,
    source: Source,
    hook: str,
    masks: torch.Tensor,
    *,
    answer_pos: torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    base_resid: Mapping[int, torch.Tensor] | None = None,
    max_rows: int | None = None,
) -> torch.Tensor:
    """Patch every (layer, cell) of a grid; returns ``reduce(logits)`` stacked as
    [layers, cells, ...].

    ``masks`` [cells, *act_shape[1:-1]] (bool) says, per cell, which slice of the activation
    (without batch and feature dims: [pos] for the residual stream, [pos, head] for ``z``) is
    taken from the source. ``reduce`` maps the logits of one layer, [cells, batch, d_vocab]
    at ``answer_pos`` (or [cells, batch, pos, d_vocab] without it), to a tensor
    [cells, ...]; the default keeps the logits. ``max_rows`` caps cells x batch per forward
    pass (memory on large models); by default one pass per layer.
    """
    n_layers = model.cfg.n_effective_layers
    layers = list(range(n_layers)) if layers is None else list(layers)
    masks = masks.to(torch.bool).to(base_tokens.device)
    n_cells, batch = masks.shape[0], base_tokens.shape[0]
    if base_resid is None:
        base_resid = base_residuals(model, base_tokens, layers)
    reduce = reduce or (lambda x: x)
    per_pass = n_cells if not max_rows else max(1, max_rows // batch)
    out = []
    for l in layers:
        src_full = _source_at(source, hook, l)
        name = hook_name(hook, l)
        parts = []
        for c0 in range(0, n_cells, per_pass):
            c1 = min(n_cells, c0 + per_pass)
            k = c1 - c0
            src = src_full[c0:c1] if _has_cell_dim(src_full, masks) else src_full
            m = masks[c0:c1]

            def fn(act, hook_point, src=src, m=m, k=k):
                return _replace(act, src, m, k)

            resid = base_resid[l].repeat(k, *([1] * (base_resid[l].dim() - 1)))
            tokens = base_tokens.repeat(k, 1)
            ap = None if answer_pos is None else answer_pos.repeat(k)
            with model.hooks([(name, fn)]):
                logits = model(tokens, ap, start_at_layer=l, residual=resid)
            parts.append(reduce(logits.view(k, batch, *logits.shape[1:])))
        out.append(torch.cat(parts))
    return torch.stack(out)


@torch.no_grad()
def patch_grid_looped(
    model,
    base_tokens: torch.Tensor,
    source: Source,
    hook: str,
    masks: torch.Tensor,
    *,
    answer_pos: torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The same grid as :func:`patch_grid`, one full forward pass per cell (TransformerLens's
    ``generic_activation_patch`` loop): the reference for tests and ``bench/``."""
    n_layers = model.cfg.n_effective_layers
    layers = list(range(n_layers)) if layers is None else list(layers)
    masks = masks.to(torch.bool).to(base_tokens.device)
    reduce = reduce or (lambda x: x)
    out = []
    for l in layers:
        src_full = _source_at(source, hook, l)
        row = []
        for c in range(masks.shape[0]):
            src = src_full[c] if _has_cell_dim(src_full, masks) else src_full

            def fn(act, hook_point, src=src, m=masks[c : c + 1]):
                return _replace(act, src, m, 1)

            logits = model.run_with_hooks(base_tokens, answer_pos,
                                          fwd_hooks=[(hook_name(hook, l), fn)])
            row.append(reduce(logits.unsqueeze(0)))
        out.append(torch.cat(row))
    return torch.stack(out)


def _has_cell_dim(src: torch.Tensor, masks: torch.Tensor) -> bool:
    # An activation is [batch, *mask_dims, features]; a per-cell source has one more dim.
    return src.dim() == masks.dim() + 2


def _metric_reduce(metric: Metric) -> Callable[[torch.Tensor], torch.Tensor]:
    """A TL-style metric (logits of one patched run -> scalar) applied to each cell."""

    def reduce(logits: torch.Tensor) -> torch.Tensor:
        vals = [torch.as_tensor(metric(x), dtype=torch.float32).mean() for x in logits]
        return torch.stack(vals)

    return reduce


# --- TransformerLens-shaped API (denoising: run corrupted, patch clean) -----------------------


def _by_pos(model, corrupted_tokens, clean_cache, metric, hook, answer_pos):
    P = corrupted_tokens.shape[1]
    masks = torch.eye(P, dtype=torch.bool)
    return patch_grid(model, corrupted_tokens, clean_cache, hook, masks, answer_pos=answer_pos,
                      reduce=_metric_reduce(metric))


def get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, patching_metric,
                            answer_pos=None) -> torch.Tensor:
    """[n_layers, pos]: the clean residual stream entering each layer at one position."""
    return _by_pos(model, corrupted_tokens, clean_cache, patching_metric, "resid_pre", answer_pos)


def get_act_patch_resid_mid(model, corrupted_tokens, clean_cache, patching_metric,
                            answer_pos=None) -> torch.Tensor:
    """[n_layers, pos]: the clean residual stream between attention and MLP."""
    return _by_pos(model, corrupted_tokens, clean_cache, patching_metric, "resid_mid", answer_pos)


def get_act_patch_attn_out(model, corrupted_tokens, clean_cache, patching_metric,
                           answer_pos=None) -> torch.Tensor:
    """[n_layers, pos]: the clean attention output of a layer at one position."""
    return _by_pos(model, corrupted_tokens, clean_cache, patching_metric, "attn_out", answer_pos)


def get_act_patch_mlp_out(model, corrupted_tokens, clean_cache, patching_metric,
                          answer_pos=None) -> torch.Tensor:
    """[n_layers, pos]: the clean MLP output of a layer at one position."""
    return _by_pos(model, corrupted_tokens, clean_cache, patching_metric, "mlp_out", answer_pos)


def get_act_patch_block_every(model, corrupted_tokens, clean_cache, patching_metric,
                              answer_pos=None) -> torch.Tensor:
    """[3, n_layers, pos]: resid_pre, attn_out, mlp_out."""
    return torch.stack([
        _by_pos(model, corrupted_tokens, clean_cache, patching_metric, h, answer_pos)
        for h in ("resid_pre", "attn_out", "mlp_out")
    ])


def get_act_patch_attn_head_out_all_pos(model, corrupted_tokens, clean_cache, patching_metric,
                                        answer_pos=None) -> torch.Tensor:
    """[n_layers, n_heads]: one head's clean output (``hook_z``) at every position."""
    P, H = corrupted_tokens.shape[1], model.cfg.n_heads
    masks = torch.zeros(H, P, H, dtype=torch.bool)
    masks[torch.arange(H), :, torch.arange(H)] = True
    return patch_grid(model, corrupted_tokens, clean_cache, "z", masks, answer_pos=answer_pos,
                      reduce=_metric_reduce(patching_metric))


def get_act_patch_attn_head_out_by_pos(model, corrupted_tokens, clean_cache, patching_metric,
                                       answer_pos=None) -> torch.Tensor:
    """[n_layers, pos, n_heads]: one head's clean output at one position."""
    P, H = corrupted_tokens.shape[1], model.cfg.n_heads
    masks = torch.eye(P * H, dtype=torch.bool).view(P * H, P, H)
    grid = patch_grid(model, corrupted_tokens, clean_cache, "z", masks, answer_pos=answer_pos,
                      reduce=_metric_reduce(patching_metric))
    return grid.view(grid.shape[0], P, H)


def logit_diff_metric(correct: torch.Tensor, wrong: torch.Tensor) -> Metric:
    """A common metric: mean logit(correct) - logit(wrong) over the batch (answer logits)."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(logits.shape[0], device=logits.device)
        return (logits[idx, correct] - logits[idx, wrong]).mean()

    return metric


__all__ = [
    "base_residuals",
    "get_act_patch_attn_head_out_all_pos",
    "get_act_patch_attn_head_out_by_pos",
    "get_act_patch_attn_out",
    "get_act_patch_block_every",
    "get_act_patch_mlp_out",
    "get_act_patch_resid_mid",
    "get_act_patch_resid_pre",
    "hook_name",
    "logit_diff_metric",
    "patch_grid",
    "patch_grid_looped",
]
