"""The small core of TransformerLens's hook machinery, without depending on TransformerLens.

A :class:`HookPoint` is an identity module. :class:`HookedRootModule` names every HookPoint by
its attribute path, so ``blocks.0.attn.hook_pattern`` *is* the module tree and names are never
declared twice. Hooks are global state on the model; every public entry point here removes the
hooks it added in a ``finally`` block, so an exception inside a forward pass never leaves a hook
behind.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]
NamesFilter = None | str | Sequence[str] | Callable[[str], bool]


class HookPoint(nn.Module):
    """Identity; the place where a hook reads or replaces an activation."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""

    def add_hook(self, fn: HookFn):
        # nn.Module forward hooks receive (module, args, output); TransformerLens hooks
        # receive (activation, hook) and may return a replacement.
        def wrapped(module, args, output):
            return fn(output, self)

        return self.register_forward_hook(wrapped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _name_filter(names_filter: NamesFilter) -> Callable[[str], bool]:
    if names_filter is None:
        return lambda name: True
    if isinstance(names_filter, str):
        return lambda name: name == names_filter
    if callable(names_filter):
        return names_filter
    names = set(names_filter)
    return lambda name: name in names


class HookedRootModule(nn.Module):
    """Adds hook naming, ``hooks()``, ``run_with_hooks`` and ``run_with_cache``."""

    def setup(self) -> None:
        """Call at the end of ``__init__``: files every HookPoint under its attribute path."""
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def _resolve(self, name: str | Callable[[str], bool]) -> Iterable[HookPoint]:
        if callable(name):
            return [hp for n, hp in self.hook_dict.items() if name(n)]
        if name not in self.hook_dict:
            raise KeyError(f"no hook point named '{name}'; see model.hook_dict for the names")
        return [self.hook_dict[name]]

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = ()):
        """Context manager: the hooks are active inside the block and removed on exit."""
        handles = []
        try:
            for name, fn in fwd_hooks:
                for hp in self._resolve(name):
                    handles.append(hp.add_hook(fn))
            yield self
        finally:
            for h in handles:
                h.remove()

    def run_with_hooks(self, *args, fwd_hooks=(), **kwargs):
        with self.hooks(fwd_hooks):
            return self(*args, **kwargs)

    def run_with_cache(self, *args, names_filter: NamesFilter = None, detach: bool = True, **kwargs):
        """Returns (output, cache) where cache maps hook names to activations.

        ``names_filter`` limits what is stored (a name, a list of names or a predicate), which
        keeps memory proportional to what an analysis reads rather than to the whole model.
        """
        keep = _name_filter(names_filter)
        cache: dict[str, torch.Tensor] = {}

        def store(act: torch.Tensor, hook: HookPoint):
            cache[hook.name] = act.detach() if detach else act

        hooks = [(name, store) for name in self.hook_dict if keep(name)]
        with self.hooks(hooks):
            out = self(*args, **kwargs)
        return out, ActivationCache(cache, self)


class ActivationCache(dict):
    """A dict of activations keyed by hook name, with TransformerLens's shorthand keys.

    ``cache["resid_pre", 1]`` is ``cache["blocks.1.hook_resid_pre"]``;
    ``cache["pattern", 0]`` is ``cache["blocks.0.attn.hook_pattern"]``.
    """

    def __init__(self, data: dict[str, torch.Tensor], model: nn.Module | None = None):
        super().__init__(data)
        self.model = model

    def __getitem__(self, key):
        if isinstance(key, tuple):
            key = get_act_name(*key)
        return super().__getitem__(key)

    def accumulated_resid(self, apply_ln: bool = False) -> torch.Tensor:
        """[n_layers + 1, batch, pos, d_model]: resid_pre of every layer, then the final resid_post.

        With ``apply_ln`` each layer's stream goes through the final LayerNorm with its own
        statistics (recomputed per layer, as TransformerLens >= 2.18 does), ready for the
        unembedding: the logit lens.
        """
        n = self.model.cfg.n_effective_layers
        stack = [self[f"blocks.{l}.hook_resid_pre"] for l in range(n)]
        stack.append(self[f"blocks.{n - 1}.hook_resid_post"])
        resid = torch.stack(stack)
        if apply_ln:
            resid = self.model.ln_final(resid)
        return resid


_SHORT = {
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "resid_pre": "blocks.{l}.hook_resid_pre",
    "resid_mid": "blocks.{l}.hook_resid_mid",
    "resid_post": "blocks.{l}.hook_resid_post",
    "attn_out": "blocks.{l}.hook_attn_out",
    "mlp_out": "blocks.{l}.hook_mlp_out",
    "q": "blocks.{l}.attn.hook_q",
    "k": "blocks.{l}.attn.hook_k",
    "v": "blocks.{l}.attn.hook_v",
    "z": "blocks.{l}.attn.hook_z",
    "attn_scores": "blocks.{l}.attn.hook_attn_scores",
    "pattern": "blocks.{l}.attn.hook_pattern",
    "pre": "blocks.{l}.mlp.hook_pre",
    "post": "blocks.{l}.mlp.hook_post",
}


def get_act_name(name: str, layer: int | None = None) -> str:
    """TransformerLens-style shorthand: ``get_act_name("pattern", 0)`` -> full hook name."""
    if name not in _SHORT:
        return name
    return _SHORT[name].format(l=layer)
