"""``ActivationCache``: activations by hook name, with TransformerLens's shorthand keys and its
residual-stream helpers (same signatures and results as TransformerLens 3.x).

``cache["resid_pre", 1]`` is ``cache["blocks.1.hook_resid_pre"]``; ``cache["resid_post", -1]``
the last layer's; ``cache["scale", 1, "ln1"]`` is ``blocks.1.ln1.hook_scale``; ``cache["attn",
0]`` the pattern; ``cache["embed"]`` is ``hook_embed``. Layers count effective layers: a looped
model (``n_loops`` > 1) has ``n_layers * n_loops`` of them.
"""

from __future__ import annotations

import torch

from groklab.models.names import get_act_name


def _pos(t: torch.Tensor, pos_slice) -> torch.Tensor:
    """TransformerLens's ``Slice`` on the position dim (-2): None keeps all, an int keeps one
    position (dropping the dim), a tuple gives ``slice(*tuple)``, a list or tensor selects."""
    if pos_slice is None:
        return t
    if isinstance(pos_slice, int):
        return t.select(-2, pos_slice)
    if isinstance(pos_slice, tuple):
        pos_slice = slice(*pos_slice)
    if isinstance(pos_slice, (list, torch.Tensor)):
        return t.index_select(-2, torch.as_tensor(pos_slice, device=t.device))
    return t[..., pos_slice, :]


class ActivationCache(dict):
    """A dict of activations keyed by hook name (TransformerLens's ``cache_dict`` is the dict
    itself)."""

    def __init__(self, data: dict[str, torch.Tensor], model=None, has_batch_dim: bool = True):
        super().__init__(data)
        self.model = model
        self.has_batch_dim = has_batch_dim

    @property
    def cache_dict(self) -> "ActivationCache":
        return self

    @property
    def _n_layers(self) -> int:
        return self.model.cfg.n_effective_layers

    def __getitem__(self, key):
        if isinstance(key, str):
            if dict.__contains__(self, key):
                return super().__getitem__(key)
            return super().__getitem__(get_act_name(key))
        if len(key) > 1 and key[1] is not None and key[1] < 0:
            key = (key[0], self._n_layers + key[1], *key[2:])
        return super().__getitem__(get_act_name(*key))

    def to(self, device) -> "ActivationCache":
        for k in self:
            self[k] = super().__getitem__(k).to(device)
        return self

    def remove_batch_dim(self) -> "ActivationCache":
        """Drops the batch dimension of a cache of one example."""
        if self.has_batch_dim:
            sizes = {v.shape[0] for v in self.values() if v.dim()}
            if sizes - {1}:
                raise ValueError(f"remove_batch_dim needs a batch of one, got sizes {sizes}")
            for k in self:
                self[k] = super().__getitem__(k)[0]
            self.has_batch_dim = False
        return self

    def stack_activation(self, activation_name: str, layer: int = -1,
                         sublayer_type: str | None = None) -> torch.Tensor:
        """[layers, ...]: ``activation_name`` of every layer before ``layer`` (-1/None: all)."""
        layer = self._n_layers if layer is None or layer == -1 else layer
        return torch.stack([self[(activation_name, l, sublayer_type)] for l in range(layer)])

    def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False,
                          apply_ln: bool = False, pos_slice=None, mlp_input: bool = False,
                          return_labels: bool = False):
        """[components, batch, pos, d_model]: resid_pre of every layer up to ``layer`` (-1/None:
        every layer, then the final resid_post), with resid_mid too under ``incl_mid``; labels
        ``"0_pre"``, ``"0_mid"``, ..., ``"final_post"``.

        ``apply_ln`` up to the final layer runs each component through the final LayerNorm with
        its own statistics (TransformerLens >= 2.18): ready for the unembedding, the logit lens.
        Up to an earlier layer it divides by that layer's cached ln1 scale (ln2 with
        ``mlp_input``), as :meth:`apply_ln_to_stack` does.
        """
        n = self._n_layers
        layer = n if layer is None or layer == -1 else layer
        parts, labels = [], []
        for l in range(layer + 1):
            if l == n:
                parts.append(self["resid_post", n - 1])
                labels.append("final_post")
                continue
            parts.append(self["resid_pre", l])
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer):
                parts.append(self["resid_mid", l])
                labels.append(f"{l}_mid")
        stack = torch.stack([_pos(p, pos_slice) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                           has_batch_dim=self.has_batch_dim,
                                           recompute_ln=layer == n)
        return (stack, labels) if return_labels else stack

    def decompose_resid(self, layer: int | None = None, mlp_input: bool = False,
                        mode: str = "all", apply_ln: bool = False, pos_slice=None,
                        incl_embeds: bool = True, return_labels: bool = False):
        """[components, batch, pos, d_model]: the residual stream entering ``layer`` as the sum
        of its parts: embed, pos_embed, then each earlier layer's attn_out and mlp_out (``mode``
        "attn" or "mlp" keeps one kind; ``mlp_input`` adds this layer's attn_out)."""
        layer = self._n_layers if layer is None or layer == -1 else layer
        parts, labels = [], []
        if incl_embeds:
            for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
                if dict.__contains__(self, name):
                    parts.append(self[name])
                    labels.append(label)
        for l in range(layer):
            if mode != "mlp":
                parts.append(self["attn_out", l])
                labels.append(f"{l}_attn_out")
            if mode != "attn":
                parts.append(self["mlp_out", l])
                labels.append(f"{l}_mlp_out")
        if mlp_input and mode != "mlp":
            parts.append(self["attn_out", layer])
            labels.append(f"{layer}_attn_out")
        stack = torch.stack([_pos(p, pos_slice) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice, mlp_input=mlp_input)
        return (stack, labels) if return_labels else stack

    def apply_ln_to_stack(self, residual_stack: torch.Tensor, layer: int | None = None,
                          mlp_input: bool = False, pos_slice=None, batch_slice=None,
                          has_batch_dim: bool = True, recompute_ln: bool = False) -> torch.Tensor:
        """Treat each component of the stack as the input of ``layer`` (``n_layers``/None: the
        unembedding) and scale it as that LayerNorm scaled the whole stream: centre, then divide
        by the cached ``hook_scale`` (shared by all components, so the parts still add up).
        ``recompute_ln`` at the unembedding instead runs ``ln_final`` on each component with its
        own statistics (weight and bias included). Without LayerNorm: unchanged."""
        if self.model.cfg.normalization_type is None:
            return residual_stack
        n = self._n_layers
        layer = n if layer is None or layer == -1 else layer
        if has_batch_dim and batch_slice is not None:
            residual_stack = residual_stack[:, batch_slice]
        if recompute_ln and layer == n:
            return torch.stack([self.model.ln_final(x) for x in residual_stack])
        key = "ln_final.hook_scale" if layer == n else f"blocks.{layer}.ln{2 if mlp_input else 1}.hook_scale"
        if not dict.__contains__(self, key):
            raise KeyError(f"apply_ln needs the cached LayerNorm scale '{key}'; cache it")
        scale = _pos(self[key], pos_slice)
        if batch_slice is not None and self.has_batch_dim:
            scale = scale[batch_slice]
        residual_stack = residual_stack - residual_stack.mean(-1, keepdim=True)
        return residual_stack / scale
