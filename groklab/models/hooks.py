"""The core of TransformerLens's hook machinery, with its call conventions, without depending on
TransformerLens.

A :class:`HookPoint` is an identity module. :class:`HookedRootModule` names every HookPoint by
its attribute path, so ``blocks.0.attn.hook_pattern`` *is* the module tree and names are never
declared twice. Hook functions are called as TransformerLens calls them,
``fn(activation, hook=hook_point)``, and may return a replacement.

What a hook may do. A forward hook receives a tensor of its own: it may edit it in place (with
autograd on or off) without touching a parameter, another hook point's activation or anything
autograd saved. The hook point copies its input only while such a hook is attached (a hook that
only reads, like ``run_with_cache``'s, is marked with :func:`reads_only` and costs no copy), so a
forward no hook watches does exactly what it did without hook points. Backward hooks
(``dir="bwd"``) receive the gradient of the hook point's output, ``fn(grad, hook=hook_point)``,
and may return a replacement; one removed before the backward pass does not fire.

Hooks are global state on the model: ``hooks()``, ``run_with_hooks`` and ``run_with_cache``
remove the hooks they added in a ``finally`` block, so an exception inside a forward pass never
leaves a hook behind. ``add_hook`` attaches one until ``reset_hooks`` (``is_permanent``: until
``reset_hooks(including_permanent=True)``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Literal, Sequence

import torch
from torch import nn

from groklab.models.cache import ActivationCache
from groklab.models.names import get_act_name

HookFn = Callable[..., torch.Tensor | None]  # fn(activation, hook=HookPoint)
NamesFilter = None | str | Sequence[str] | Callable[[str], bool]
Direction = Literal["fwd", "bwd", "both"]


def reads_only(fn: HookFn) -> HookFn:
    """Marks a hook that never edits its activation in place nor returns a replacement (it
    reads, like ``run_with_cache``'s): its hook point need not copy, and a LayerNorm whose
    scale only such hooks watch may compute it fused."""
    fn.reads_only = True
    return fn


class LensHandle:
    """One attached hook (TransformerLens's name); ``remove()`` detaches it."""

    def __init__(self, point: "HookPoint", fn: HookFn, dir: str, is_permanent: bool,
                 level: int | None):
        self.point, self.fn, self.dir = point, fn, dir
        self.is_permanent, self.context_level = is_permanent, level
        self.active = True

    def remove(self) -> None:
        if not self.active:
            return
        self.active = False
        hooks = self.point.fwd_hooks if self.dir == "fwd" else self.point.bwd_hooks
        if self in hooks:
            hooks.remove(self)
        self.point._refresh()

    def _on_grad(self, grad: torch.Tensor):
        if self.active:
            return self.fn(grad, hook=self.point)
        return None


class HookPoint(nn.Module):
    """Identity; the place where a hook reads or replaces an activation."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""
        self.fwd_hooks: list[LensHandle] = []
        self.bwd_hooks: list[LensHandle] = []
        self.ctx: dict = {}
        self._copy = False  # a hook may edit in place, or a backward hook listens
        self.attached = False  # any hook, forward or backward

    def add_hook(self, hook: HookFn, dir: Literal["fwd", "bwd"] = "fwd",
                 is_permanent: bool = False, level: int | None = None,
                 prepend: bool = False) -> LensHandle:
        if dir not in ("fwd", "bwd"):
            raise ValueError(f"hook direction must be 'fwd' or 'bwd', got {dir!r}")
        handle = LensHandle(self, hook, dir, is_permanent, level)
        hooks = self.fwd_hooks if dir == "fwd" else self.bwd_hooks
        hooks.insert(0, handle) if prepend else hooks.append(handle)
        self._refresh()
        return handle

    def add_perma_hook(self, hook: HookFn, dir: Literal["fwd", "bwd"] = "fwd") -> LensHandle:
        return self.add_hook(hook, dir=dir, is_permanent=True)

    def has_hooks(self, dir: Direction = "both", including_permanent: bool = True,
                  level: int | None = None) -> bool:
        hooks = {"fwd": self.fwd_hooks, "bwd": self.bwd_hooks,
                 "both": self.fwd_hooks + self.bwd_hooks}[dir]
        return any((including_permanent or not h.is_permanent)
                   and (level is None or h.context_level == level) for h in hooks)

    def remove_hooks(self, dir: Direction = "fwd", including_permanent: bool = False,
                     level: int | None = None) -> None:
        hooks = {"fwd": self.fwd_hooks, "bwd": self.bwd_hooks,
                 "both": self.fwd_hooks + self.bwd_hooks}[dir]
        for h in list(hooks):
            if including_permanent or (not h.is_permanent
                                       and (level is None or h.context_level == level)):
                h.remove()

    def clear_context(self) -> None:
        self.ctx = {}

    def layer(self) -> int:
        """The block index in ``blocks.{l}.…`` names."""
        return int(self.name.split(".")[1])

    def _refresh(self) -> None:
        # Plain attributes set through __dict__: nn.Module.__setattr__ costs more than the rest
        # of attaching a hook, and run_with_cache attaches one per hook point per call.
        state = self.__dict__
        state["_copy"] = bool(self.bwd_hooks) or any(
            not getattr(h.fn, "reads_only", False) for h in self.fwd_hooks)
        state["attached"] = bool(self.fwd_hooks or self.bwd_hooks)

    def _run_hooks(self, output: torch.Tensor) -> torch.Tensor:
        # Forward hooks in order, each seeing the previous one's replacement; backward hooks
        # then listen to the final output (TransformerLens: the gradient of what flows on).
        for h in list(self.fwd_hooks):
            out = h.fn(output, hook=self)
            if out is not None:
                output = out
        if self.bwd_hooks and output.requires_grad:
            for h in list(self.bwd_hooks):
                output.register_hook(h._on_grad)
        return output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Hooks run here rather than as torch forward hooks: a module without torch hooks
        # takes nn.Module's fast call path, which is most of the cost of an idle hook point.
        if not self.attached:
            return x
        if self._copy:
            # A tensor of the hook's own: x may be a view of a parameter (a broadcast one:
            # every row the same memory) or saved by autograd (softmax and sqrt keep outputs).
            x = x.clone()
        return self._run_hooks(x)


def watched(hp: HookPoint) -> bool:
    """Whether anything listens at ``hp``: a groklab / TransformerLens hook, or a plain torch
    forward hook someone registered on the module."""
    return hp.attached or bool(hp._forward_hooks)


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
    """Hook naming, ``add_hook``/``reset_hooks``, ``hooks()``, ``run_with_hooks`` and
    ``run_with_cache``, with TransformerLens's signatures."""

    def setup(self) -> None:
        """Call at the end of ``__init__``: files every HookPoint under its attribute path."""
        self.hook_dict: dict[str, HookPoint] = {}
        self.mod_dict: dict[str, nn.Module] = {}
        self.context_level = 0
        for name, module in self.named_modules():
            if name:
                self.mod_dict[name] = module
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def hook_points(self) -> Iterable[HookPoint]:
        return self.hook_dict.values()

    def _resolve(self, name: str | Callable[[str], bool]) -> list[HookPoint]:
        if callable(name):
            return [hp for n, hp in self.hook_dict.items() if name(n)]
        if name not in self.hook_dict:
            raise KeyError(f"no hook point named '{name}'; see model.hook_dict for the names")
        return [self.hook_dict[name]]

    def add_hook(self, name: str | Callable[[str], bool], hook: HookFn,
                 dir: Literal["fwd", "bwd"] = "fwd", is_permanent: bool = False,
                 level: int | None = None, prepend: bool = False) -> list[LensHandle]:
        """Attach ``hook`` to the named hook point (or every one a predicate accepts) until
        ``reset_hooks``; returns the handles."""
        return [hp.add_hook(hook, dir=dir, is_permanent=is_permanent, level=level,
                            prepend=prepend) for hp in self._resolve(name)]

    def add_perma_hook(self, name, hook: HookFn, dir: Literal["fwd", "bwd"] = "fwd"):
        return self.add_hook(name, hook, dir=dir, is_permanent=True)

    def remove_all_hook_fns(self, direction: Direction = "both", including_permanent: bool = False,
                            level: int | None = None) -> None:
        for hp in self.hook_points():
            hp.remove_hooks(direction, including_permanent=including_permanent, level=level)

    def clear_contexts(self) -> None:
        for hp in self.hook_points():
            hp.clear_context()

    def reset_hooks(self, clear_contexts: bool = True, direction: Direction = "both",
                    including_permanent: bool = False, level: int | None = None) -> None:
        if clear_contexts:
            self.clear_contexts()
        self.remove_all_hook_fns(direction, including_permanent, level=level)

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
              bwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
              reset_hooks_end: bool = True, clear_contexts: bool = False):
        """Context manager: the hooks are active inside the block and removed on exit."""
        handles: list[LensHandle] = []
        self.context_level += 1
        try:
            for hooks, dir in ((fwd_hooks, "fwd"), (bwd_hooks, "bwd")):
                for name, fn in hooks:
                    handles += self.add_hook(name, fn, dir=dir, level=self.context_level)
            yield self
        finally:
            if reset_hooks_end:
                for h in handles:
                    h.remove()
                if clear_contexts:
                    self.clear_contexts()
            self.context_level -= 1

    def run_with_hooks(self, *args, fwd_hooks=(), bwd_hooks=(), reset_hooks_end: bool = True,
                       clear_contexts: bool = False, **kwargs):
        """One forward pass with the hooks; backward hooks need ``reset_hooks_end=False`` to
        still be attached when ``backward()`` runs (as in TransformerLens)."""
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            return self(*args, **kwargs)

    def run_with_cache(self, *args, names_filter: NamesFilter = None, device=None,
                       remove_batch_dim: bool = False, incl_bwd: bool = False,
                       reset_hooks_end: bool = True, clear_contexts: bool = False,
                       detach: bool = True, return_cache_object: bool = True, **kwargs):
        """Returns (output, cache) where cache maps hook names to activations.

        ``names_filter`` limits what is stored (a name, a list of names or a predicate), which
        keeps memory proportional to what an analysis reads rather than to the whole model.
        ``incl_bwd`` calls ``backward()`` on the output (a scalar: ``return_type="loss"``) and
        stores each gradient under ``NAME_grad``. ``remove_batch_dim`` (batch of one) drops the
        batch dimension.
        """
        keep = _name_filter(names_filter)
        cache: dict[str, torch.Tensor] = {}

        def saver(suffix: str):
            @reads_only
            def store(act: torch.Tensor, hook: HookPoint):
                act = act.detach() if detach and act.requires_grad else act
                if device is not None:
                    act = act.to(device)
                cache[hook.name + suffix] = act[0] if remove_batch_dim else act
            return store

        names = [name for name in self.hook_dict if keep(name)]
        fwd = [(name, saver("")) for name in names]
        bwd = [(name, saver("_grad")) for name in names] if incl_bwd else []
        with self.hooks(fwd, bwd, reset_hooks_end, clear_contexts):
            out = self(*args, **kwargs)
            if incl_bwd:
                out.backward()
        if not return_cache_object:
            return out, cache
        return out, ActivationCache(cache, self, has_batch_dim=not remove_batch_dim)


__all__ = ["ActivationCache", "HookPoint", "HookedRootModule", "LensHandle", "get_act_name",
           "reads_only", "watched"]
