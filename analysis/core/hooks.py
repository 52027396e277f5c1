"""Hook utilities: attach forward hooks for the span of a ``with`` block, always removed, under the model lock.

One cached model serves every browser session, so hooks are only ever attached while the model's
lock is held (see ``attached``); every forward pass in the engine holds the same lock.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from analysis.core.architectures import Adapter

# (module, kind, fn): kind "forward" -> fn(module, args, output) -> new output | None
#                     kind "pre"     -> fn(module, args, kwargs) -> (args, kwargs) | None
HookSpec = tuple[nn.Module, str, Callable[..., Any]]


def block_output(out: Any) -> torch.Tensor:
    """The hidden-state tensor of a block/sublayer output (a tensor, or the first item of a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def with_block_output(out: Any, new: torch.Tensor) -> Any:
    """``out`` with its hidden-state tensor replaced by ``new``, keeping the tuple/tensor structure."""
    if isinstance(out, tuple):
        return (new,) + tuple(out[1:])
    if isinstance(out, list):
        return [new] + list(out[1:])
    return new


@contextmanager
def attached(lock: threading.RLock, hooks: Sequence[HookSpec]) -> Iterator[None]:
    """Attach ``hooks`` while holding ``lock``; every handle is removed on exit, also on error."""
    with lock:
        handles = []
        try:
            for module, kind, fn in hooks:
                if kind == "forward":
                    handles.append(module.register_forward_hook(fn))
                elif kind == "pre":
                    handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
                else:
                    raise ValueError(f"unknown hook kind {kind!r}")
            yield
        finally:
            for h in handles:
                h.remove()


def residual_hook(adapter: Adapter, layer: int, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> HookSpec:
    """A hook that sees (and may replace) the residual stream h_layer [B, T, d].

    Layer 0 is the input of block 0 (the embedding output); layer l >= 1 is the output of block l-1.
    ``fn`` returns a replacement tensor or None to leave the stream unchanged.
    """
    if not 0 <= layer <= adapter.n_layers:
        raise IndexError(f"layer {layer} outside 0..{adapter.n_layers}")
    if layer == 0:
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            h = args[0] if args else kwargs["hidden_states"]
            new = fn(h)
            if new is None:
                return None
            if args:
                return (new,) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}
        return adapter.blocks[0], "pre", pre

    def post(module: nn.Module, args: tuple, out: Any) -> Any:
        new = fn(block_output(out))
        return None if new is None else with_block_output(out, new)
    return adapter.blocks[layer - 1], "forward", post


def _as_btd(fn: Callable[[torch.Tensor], torch.Tensor | None], bt: tuple[int, int] | None
            ) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """Wrap ``fn`` so it always sees [B, T, ...] even where a model flattens tokens (OPT's MLP sees [B*T, ...])."""
    if bt is None:
        return fn

    def wrapped(t: torch.Tensor) -> torch.Tensor | None:
        if t.dim() == 2 and t.shape[0] == bt[0] * bt[1]:
            new = fn(t.view(bt[0], bt[1], -1))
            return None if new is None else new.reshape(t.shape)
        return fn(t)
    return wrapped


def output_hook(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor | None],
                bt: tuple[int, int] | None = None) -> HookSpec:
    """A hook that sees (and may replace) a module's output tensor (first item if it returns a tuple).

    Pass the batch shape ``bt`` = (B, T) for sublayer modules: ``fn`` then always sees [B, T, ...].
    """
    fn = _as_btd(fn, bt)

    def post(mod: nn.Module, args: tuple, out: Any) -> Any:
        new = fn(block_output(out))
        return None if new is None else with_block_output(out, new)
    return module, "forward", post


def input_hook(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor | None],
               bt: tuple[int, int] | None = None) -> HookSpec:
    """A hook that sees (and may replace) a module's first input (e.g. the down-projection's = neuron activations).

    Pass the batch shape ``bt`` = (B, T): ``fn`` then always sees [B, T, ...].
    """
    fn = _as_btd(fn, bt)

    def pre(mod: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
        x = args[0] if args else next(iter(kwargs.values()))
        new = fn(x)
        if new is None:
            return None
        if args:
            return (new,) + tuple(args[1:]), kwargs
        first = next(iter(kwargs))
        return args, {**kwargs, first: new}
    return module, "pre", pre


def capture(store: dict, key: Any, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
            ) -> Callable[[torch.Tensor], None]:
    """A hook body that stores (optionally transformed) activations in ``store[key]`` and changes nothing."""
    def fn(t: torch.Tensor) -> None:
        store[key] = transform(t) if transform is not None else t
        return
    return fn


def residual_capture_hooks(adapter: Adapter, layers: Sequence[int], store: dict,
                           transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[HookSpec]:
    """Hooks that store h_l for each requested layer into ``store[l]``."""
    return [residual_hook(adapter, l, capture(store, l, transform)) for l in layers]


def component_capture_hooks(adapter: Adapter, store: dict, bt: tuple[int, int],
                            transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[HookSpec]:
    """Hooks that store the embedding output ("embed") and every sublayer write (("attn", i), ("mlp", i)).

    ``bt`` = (B, T) of the batch; stored tensors are [B, T, d] before ``transform``.
    """
    hooks = [residual_hook(adapter, 0, capture(store, "embed", transform))]
    for i in range(adapter.n_layers):
        hooks.append(output_hook(adapter.attn_write(i), capture(store, ("attn", i), transform), bt))
        hooks.append(output_hook(adapter.mlp_write(i), capture(store, ("mlp", i), transform), bt))
    return hooks
