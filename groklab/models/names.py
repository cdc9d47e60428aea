"""TransformerLens's shorthand for hook names, with its exact rules (TransformerLens 2.x-3.x
``utils.get_act_name``), so ``cache["scale", 1, "ln1"]`` or ``"k6"`` mean what they mean there."""

from __future__ import annotations

import re

_LAYER_TYPE = {"a": "attn", "m": "mlp", "b": "", "block": "", "blocks": "", "attention": "attn"}
_ALIAS = {"attn": "pattern", "attn_logits": "attn_scores", "key": "k", "query": "q", "value": "v",
          "mlp_pre": "pre", "mlp_mid": "mid", "mlp_post": "post"}
_ATTN = {"k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern", "attn_scores"}
_MLP = {"pre", "post", "mid", "pre_linear"}


def get_act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """``get_act_name("pattern", 0)`` -> ``blocks.0.attn.hook_pattern``; ``("scale", 1, "ln1")``
    -> ``blocks.1.ln1.hook_scale``; ``"embed"`` -> ``hook_embed``; ``"scale"`` alone ->
    ``ln_final.hook_scale``; a full name is returned as it is."""
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    match = re.match(r"([a-z]+)(\d+)([a-z]?.*)", name)
    if match is not None:
        name, layer, layer_type = match.groups(0)
    name = _ALIAS.get(name, name)
    full = "" if layer is None else f"blocks.{layer}."
    if name in _ATTN:
        layer_type = "attn"
    elif name in _MLP:
        layer_type = "mlp"
    elif layer_type in _LAYER_TYPE:
        layer_type = _LAYER_TYPE[layer_type]
    if layer_type:
        full += f"{layer_type}."
    full += f"hook_{name}"
    if name in ("scale", "normalized") and layer is None:
        full = f"ln_final.{full}"
    return full
