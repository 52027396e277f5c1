"""Logit flow capture: the hooks of the one eager-attention forward pass that logit flow reads.

It records the residual stream at the final position T, the full attention and MLP writes, the o_proj input and
output at T, the attention probabilities of T and every source's value vectors (VALUE_SITES says where each
architecture keeps them), and holds one prompt's trimmed copy of them in a CapturedRow.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from analysis.core.architectures import Adapter
from analysis.core.errors import UnsupportedArchitectureError
from analysis.core.hooks import HookSpec, capture, input_hook, output_hook, residual_hook
from analysis.core.loading import LoadedModel

# Where each architecture's value vectors live: (module inside a block, its output [B, T, X] -> v [B, T, n_kv, hd]).
ValueFn = Callable[[torch.Tensor, int, int], torch.Tensor]


def returned_probs(out: Any, what: str) -> torch.Tensor:
    """The attention probabilities [B, H, T, T] an attention module returned with its output (eager attention);
    UnsupportedArchitectureError saying that ``what`` ("head x source attribution is", ...) is not available."""
    w = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
    if w is None:
        raise UnsupportedArchitectureError(
            f"The attention module returned no attention probabilities even in eager mode; {what} not available "
            "for this model.")
    return w


def _v_plain(out: torch.Tensor, n_heads: int, hd: int) -> torch.Tensor:
    return out.reshape(*out.shape[:2], -1, hd)


def _v_gpt2(out: torch.Tensor, n_heads: int, hd: int) -> torch.Tensor:
    return out[..., 2 * n_heads * hd:].reshape(*out.shape[:2], n_heads, hd)


def _v_neox(out: torch.Tensor, n_heads: int, hd: int) -> torch.Tensor:
    return out.reshape(*out.shape[:2], n_heads, 3 * hd)[..., 2 * hd:]


def _v_phi3(out: torch.Tensor, n_heads: int, hd: int) -> torch.Tensor:
    n_kv = (out.shape[-1] - n_heads * hd) // (2 * hd)
    return out[..., n_heads * hd + n_kv * hd:].reshape(*out.shape[:2], n_kv, hd)


VALUE_SITES: dict[str, tuple[str, ValueFn]] = {
    "gpt2": ("attn.c_attn", _v_gpt2),
    "gpt_neox": ("attention.query_key_value", _v_neox),
    "llama": ("self_attn.v_proj", _v_plain),
    "mistral": ("self_attn.v_proj", _v_plain),
    "qwen2": ("self_attn.v_proj", _v_plain),
    "gemma2": ("self_attn.v_proj", _v_plain),
    "phi3": ("self_attn.qkv_proj", _v_phi3),
    "opt": ("self_attn.v_proj", _v_plain),
}


@contextmanager
def eager_attention(lm: LoadedModel) -> Iterator[None]:
    """Hold the model lock and switch to eager attention (so attention modules return their probabilities)."""
    with lm.lock:
        cfg = lm.model.config
        prev = getattr(cfg, "_attn_implementation", None)
        switched = False
        if prev != "eager":
            try:
                lm.model.set_attn_implementation("eager")
                switched = True
            except Exception as err:  # noqa: BLE001 - report as a clear refusal
                raise UnsupportedArchitectureError(
                    f"This model cannot switch to eager attention ({err}); head x source attribution needs the "
                    "attention probabilities.") from err
        try:
            yield
        finally:
            if switched:
                lm.model.set_attn_implementation(prev)


def value_site(ad: Adapter) -> tuple[str, ValueFn]:
    if ad.model_type not in VALUE_SITES:
        raise UnsupportedArchitectureError(f"Logit flow does not know where '{ad.model_type}' keeps its value vectors.")
    return VALUE_SITES[ad.model_type]


def _gather_last(last: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(t: torch.Tensor) -> torch.Tensor:
        return t[torch.arange(t.shape[0], device=t.device), last.to(t.device)].detach().float().clone()
    return fn


def capture_hooks(ad: Adapter, store: dict, bt: tuple[int, int], last: torch.Tensor) -> list[HookSpec]:
    """Hooks for one pass: residuals at T, full sublayer writes, o_proj input/output at T, probabilities, values."""
    at_T = _gather_last(last)
    full = lambda t: t.detach().float().clone()  # noqa: E731
    site, _ = value_site(ad)
    hooks: list[HookSpec] = [residual_hook(ad, l, capture(store, ("h", l), at_T)) for l in range(ad.n_layers + 1)]
    for i in range(ad.n_layers):
        hooks.append(output_hook(ad.attn_write(i), capture(store, ("attn", i), full), bt))
        hooks.append(output_hook(ad.mlp_write(i), capture(store, ("mlp", i), full), bt))
        hooks.append(input_hook(ad.o_proj(i), capture(store, ("z", i), at_T), bt))
        hooks.append(output_hook(ad.o_proj(i), capture(store, ("o", i), at_T), bt))
        hooks.append(output_hook(ad.block_part(i, site), capture(store, ("v", i), full), bt))

        def probs(mod: torch.nn.Module, args: tuple, out: Any, i: int = i) -> None:
            w = returned_probs(out, "head x source attribution is")
            idx = last.to(w.device)
            store[("a", i)] = w[torch.arange(w.shape[0], device=w.device), :, idx].detach().float().clone()
        hooks.append((ad.block_part(i, ad.row.attn), "forward", probs))
    return hooks


@dataclass
class CapturedRow:
    """Everything one prompt's attribution needs, in fp32 on the CPU, trimmed to its T real tokens."""

    h: list[torch.Tensor]  # L+1 of [d] at T
    attn: list[torch.Tensor]  # L of [T, d]
    mlp: list[torch.Tensor]
    z: list[torch.Tensor]  # L of [H*hd] at T
    o: list[torch.Tensor]  # L of [d] o_proj output at T
    a: list[torch.Tensor]  # L of [H, T]
    v: list[torch.Tensor]  # L of [T, n_kv, hd]
    logits: torch.Tensor  # [V] the model's logits at T
