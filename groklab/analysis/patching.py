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

Passes are sized by memory, not by the grid: one huge batch is memory-bound on a CPU and can be
slower per row than many small ones, so cells go through in chunks of about ``max_rows`` rows
(cells x batch). The default chunk keeps one pass's largest activation near ``PASS_BYTES``; the
caller can set ``max_rows`` (fewer rows: less memory; more: fewer Python round trips on a GPU).

The ``get_act_patch_*`` functions follow TransformerLens 3.x: the metric maps the logits of one
patched run to one number (a metric returning one value per row raises, as TransformerLens's
``.item()`` does), and results are float32 with TL's shapes.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from groklab.models.hooks import reads_only
from groklab.models.names import get_act_name

Metric = Callable[[torch.Tensor], torch.Tensor | float]
# source(l) -> activation of the source run at layer l: [batch, *act] (one source for every
# cell) or [cells, batch, *act] (a source per cell, e.g. one counterfactual per position).
Source = Callable[[int], torch.Tensor] | Mapping[str, torch.Tensor]

PASS_BYTES = 2**23  # ~8 MB: flat up to ~4 cells x 300 rows per pass on a CPU, slower above


def hook_name(hook: str, layer: int) -> str:
    """A TL shorthand (``"resid_pre"``, ``"attn_out"``, ``"z"``, ...), a template with ``{l}``
    or a full name of block ``layer``."""
    if "{l}" in hook:
        return hook.format(l=layer)
    return get_act_name(hook, layer) if not hook.startswith("blocks.") else hook


def _checked_name(model, hook: str, layer: int) -> str:
    name = hook_name(hook, layer)
    if name not in model.hook_dict:
        raise KeyError(
            f"'{hook}' is not a block activation of this model; use a TL shorthand (resid_pre, "
            "resid_mid, resid_post, attn_out, mlp_out, z, q, k, v, pattern, pre, post) or "
            "'blocks.{l}.NAME'"
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
    """act [cells * batch, *act]; src [batch | cells, batch, *act]; mask [cells, *lead] where
    lead are the leading dims of an activation (after batch) that a cell selects."""
    a = act.view(n_cells, -1, *act.shape[1:])
    if src.dim() == act.dim():
        src = src.unsqueeze(0)
    m = mask.view(n_cells, 1, *mask.shape[1:], *[1] * (act.dim() - mask.dim()))
    return torch.where(m, src.to(a.dtype), a).view_as(act)


def default_max_rows(model, pos: int, full_logits: bool = True) -> int:
    """Rows (cells x batch) per pass that keep its largest activation near ``PASS_BYTES``."""
    c = model.cfg
    width = max(c.d_mlp, 3 * c.d_model, c.n_heads * pos, c.d_vocab_out if full_logits else 0)
    return max(1, PASS_BYTES // (4 * pos * width))


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

    ``masks`` [cells, *lead] (bool) says, per cell, which slice of the activation is taken from
    the source, over its leading dims after batch: [pos] for the residual stream, [pos, head]
    for ``z``, [head, dest] for a pattern's rows, [head, dest, src] for single entries; the
    remaining dims are taken whole. ``reduce`` maps the logits of one pass, [cells, batch,
    d_vocab] at ``answer_pos`` (or [cells, batch, pos, d_vocab] without it), to a tensor
    [cells, ...]; the default keeps the logits. ``max_rows`` caps cells x batch per forward
    pass (default: :func:`default_max_rows`).
    """
    n_layers = model.cfg.n_effective_layers
    layers = list(range(n_layers)) if layers is None else list(layers)
    masks = masks.to(torch.bool).to(base_tokens.device)
    n_cells, batch, pos = masks.shape[0], base_tokens.shape[0], base_tokens.shape[1]
    names = {l: _checked_name(model, hook, l) for l in layers}
    if base_resid is None:
        base_resid = base_residuals(model, base_tokens, layers)
    reduce = reduce or (lambda x: x)
    max_rows = max_rows or default_max_rows(model, pos, answer_pos is None)
    per_pass = max(1, min(n_cells, max_rows // batch))
    out = []
    for l in layers:
        src_full = _source_at(source, hook, l)
        parts = []
        for c0 in range(0, n_cells, per_pass):
            c1 = min(n_cells, c0 + per_pass)
            k = c1 - c0

            @reads_only
            def fn(act, hook, c0=c0, c1=c1, k=k, src_full=src_full):
                src = src_full[c0:c1] if src_full.dim() == act.dim() + 1 else src_full
                return _replace(act, src, masks[c0:c1], k)

            resid = base_resid[l].repeat(k, *([1] * (base_resid[l].dim() - 1)))
            ap = None if answer_pos is None else answer_pos.repeat(k)
            with model.hooks([(names[l], fn)]):
                logits = model(resid, ap, start_at_layer=l, tokens=base_tokens.repeat(k, 1))
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
            @reads_only
            def fn(act, hook, c=c, src_full=src_full):
                src = src_full[c] if src_full.dim() == act.dim() + 1 else src_full
                return _replace(act, src, masks[c : c + 1], 1)

            logits = model.run_with_hooks(base_tokens, answer_pos,
                                          fwd_hooks=[(_checked_name(model, hook, l), fn)])
            row.append(reduce(logits.unsqueeze(0)))
        out.append(torch.cat(row))
    return torch.stack(out)


def _metric_reduce(metric: Metric) -> Callable[[torch.Tensor], torch.Tensor]:
    """A TL-style metric (logits of one patched run -> one number) applied to each cell."""

    def reduce(logits: torch.Tensor) -> torch.Tensor:
        vals = []
        for x in logits:
            v = torch.as_tensor(metric(x))
            if v.numel() != 1:  # TransformerLens calls .item() on it, which raises too
                raise RuntimeError(
                    f"patching_metric must return one number per patched run; it returned "
                    f"shape {tuple(v.shape)} (average over the batch inside the metric)")
            vals.append(v.reshape(()).float())
        return torch.stack(vals)

    return reduce


# --- TransformerLens-shaped API (denoising: run corrupted, patch clean) -----------------------


def _cells(kind: str, P: int, H: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Masks of one kind of TL grid and the shape of its per-layer result."""
    eye = lambda n: torch.eye(n, dtype=torch.bool)  # noqa: E731
    if kind == "pos":  # [batch, pos, ...]
        return eye(P), (P,)
    if kind == "pos_head":  # [batch, pos, head, d_head]
        return eye(P * H).view(P * H, P, H), (P, H)
    if kind == "head":
        m = torch.zeros(H, P, H, dtype=torch.bool)
        m[torch.arange(H), :, torch.arange(H)] = True
        return m, (H,)
    if kind == "pattern_head":  # [batch, head, dest, src]
        return eye(H), (H,)
    if kind == "pattern_dest":
        return eye(H * P).view(H * P, H, P), (H, P)
    return eye(H * P * P).view(H * P * P, H, P, P), (H, P, P)  # pattern_dest_src


def _tl_grid(model, corrupted_tokens, clean_cache, metric, hook, kind, answer_pos=None,
             max_rows=None, base_resid=None):
    masks, shape = _cells(kind, corrupted_tokens.shape[1], model.cfg.n_heads)
    grid = patch_grid(model, corrupted_tokens, clean_cache, hook, masks, answer_pos=answer_pos,
                      reduce=_metric_reduce(metric), max_rows=max_rows, base_resid=base_resid)
    return grid.view(grid.shape[0], *shape)


_TL = {  # name -> (hook, cells, doc)
    "resid_pre": ("resid_pre", "pos", "[n_layers, pos]: the clean residual stream entering a layer."),
    "resid_mid": ("resid_mid", "pos", "[n_layers, pos]: the clean stream between attn and MLP."),
    "attn_out": ("attn_out", "pos", "[n_layers, pos]: the clean attention output."),
    "mlp_out": ("mlp_out", "pos", "[n_layers, pos]: the clean MLP output."),
    **{f"attn_head_{a}_by_pos": (h, "pos_head", f"[n_layers, pos, n_heads]: one head's clean "
                                 f"{a} vector at one position.")
       for a, h in (("out", "z"), ("q", "q"), ("k", "k"), ("v", "v"))},
    **{f"attn_head_{a}_all_pos": (h, "head", f"[n_layers, n_heads]: one head's clean {a} "
                                  f"vectors at every position.")
       for a, h in (("out", "z"), ("q", "q"), ("k", "k"), ("v", "v"))},
    "attn_head_pattern_all_pos": ("pattern", "pattern_head",
                                  "[n_layers, n_heads]: one head's whole clean pattern."),
    "attn_head_pattern_by_pos": ("pattern", "pattern_dest",
                                 "[n_layers, n_heads, dest_pos]: one row of a head's pattern."),
    "attn_head_pattern_dest_src_pos": ("pattern", "pattern_dest_src", "[n_layers, n_heads, "
                                       "dest_pos, src_pos]: one entry of a head's pattern."),
}


def _tl_function(short: str):
    """TransformerLens's ``get_act_patch_<short>``, batched."""
    hook, kind, doc = _TL[short]
    name = f"get_act_patch_{short}"

    def fn(model, corrupted_tokens, clean_cache, patching_metric, answer_pos=None,
           max_rows=None):
        return _tl_grid(model, corrupted_tokens, clean_cache, patching_metric, hook, kind,
                        answer_pos, max_rows)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc + " ``answer_pos`` hands the metric logits at those positions only; " \
        "``max_rows`` caps rows per forward pass."
    return fn


get_act_patch_resid_pre = _tl_function("resid_pre")
get_act_patch_resid_mid = _tl_function("resid_mid")
get_act_patch_attn_out = _tl_function("attn_out")
get_act_patch_mlp_out = _tl_function("mlp_out")
get_act_patch_attn_head_out_by_pos = _tl_function("attn_head_out_by_pos")
get_act_patch_attn_head_q_by_pos = _tl_function("attn_head_q_by_pos")
get_act_patch_attn_head_k_by_pos = _tl_function("attn_head_k_by_pos")
get_act_patch_attn_head_v_by_pos = _tl_function("attn_head_v_by_pos")
get_act_patch_attn_head_out_all_pos = _tl_function("attn_head_out_all_pos")
get_act_patch_attn_head_q_all_pos = _tl_function("attn_head_q_all_pos")
get_act_patch_attn_head_k_all_pos = _tl_function("attn_head_k_all_pos")
get_act_patch_attn_head_v_all_pos = _tl_function("attn_head_v_all_pos")
get_act_patch_attn_head_pattern_all_pos = _tl_function("attn_head_pattern_all_pos")
get_act_patch_attn_head_pattern_by_pos = _tl_function("attn_head_pattern_by_pos")
get_act_patch_attn_head_pattern_dest_src_pos = _tl_function("attn_head_pattern_dest_src_pos")


def _every(model, corrupted_tokens, clean_cache, metric, entries, answer_pos, max_rows):
    base = base_residuals(model, corrupted_tokens)
    return torch.stack([
        _tl_grid(model, corrupted_tokens, clean_cache, metric, *_TL[e][:2], answer_pos,
                 max_rows, base) for e in entries])


def get_act_patch_block_every(model, corrupted_tokens, clean_cache, patching_metric,
                              answer_pos=None, max_rows=None) -> torch.Tensor:
    """[3, n_layers, pos]: resid_pre, attn_out, mlp_out."""
    return _every(model, corrupted_tokens, clean_cache, patching_metric,
                  ("resid_pre", "attn_out", "mlp_out"), answer_pos, max_rows)


def get_act_patch_attn_head_all_pos_every(model, corrupted_tokens, clean_cache, patching_metric,
                                          answer_pos=None, max_rows=None) -> torch.Tensor:
    """[5, n_layers, n_heads]: a head's output, q, k, v and pattern, at every position."""
    return _every(model, corrupted_tokens, clean_cache, patching_metric,
                  [f"attn_head_{a}_all_pos" for a in ("out", "q", "k", "v", "pattern")],
                  answer_pos, max_rows)


def get_act_patch_attn_head_by_pos_every(model, corrupted_tokens, clean_cache, patching_metric,
                                         answer_pos=None, max_rows=None) -> torch.Tensor:
    """[5, n_layers, pos, n_heads]: a head's output, q, k, v (by position) and pattern (by
    destination position)."""
    vec = _every(model, corrupted_tokens, clean_cache, patching_metric,
                 [f"attn_head_{a}_by_pos" for a in ("out", "q", "k", "v")], answer_pos, max_rows)
    pattern = get_act_patch_attn_head_pattern_by_pos(
        model, corrupted_tokens, clean_cache, patching_metric, answer_pos, max_rows)
    return torch.cat([vec, pattern.transpose(1, 2)[None]])


def logit_diff_metric(correct: torch.Tensor, wrong: torch.Tensor) -> Metric:
    """A common metric: mean logit(correct) - logit(wrong) over the batch (answer logits)."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(logits.shape[0], device=logits.device)
        return (logits[idx, correct] - logits[idx, wrong]).mean()

    return metric


__all__ = [
    "base_residuals",
    "default_max_rows",
    "get_act_patch_attn_head_all_pos_every",
    "get_act_patch_attn_head_by_pos_every",
    "get_act_patch_block_every",
    "get_act_patch_attn_head_k_all_pos",
    "get_act_patch_attn_head_k_by_pos",
    "get_act_patch_attn_head_out_all_pos",
    "get_act_patch_attn_head_out_by_pos",
    "get_act_patch_attn_head_pattern_all_pos",
    "get_act_patch_attn_head_pattern_by_pos",
    "get_act_patch_attn_head_pattern_dest_src_pos",
    "get_act_patch_attn_head_q_all_pos",
    "get_act_patch_attn_head_q_by_pos",
    "get_act_patch_attn_head_v_all_pos",
    "get_act_patch_attn_head_v_by_pos",
    "get_act_patch_attn_out",
    "get_act_patch_mlp_out",
    "get_act_patch_resid_mid",
    "get_act_patch_resid_pre",
    "hook_name",
    "logit_diff_metric",
    "patch_grid",
    "patch_grid_looped",
]
