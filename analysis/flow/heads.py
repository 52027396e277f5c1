"""Logit flow head writes: each query head's write at T and its split over source positions, as the model writes them.

W_O^h z_h at T per head, W_O^h a^h_{T,p} v^h_p per head and source (GQA key/value heads repeated over their query
heads), the o_proj bias, all passed through Gemma-2's attention post-norm with its scale frozen at the clean value.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch

from analysis.core.architectures import Adapter
from analysis.core.errors import UnsupportedArchitectureError
from analysis.flow.capture import CapturedRow


def o_proj_weight(ad: Adapter, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W_O as [d, H*hd] (fp32) and its bias [d] or None."""
    mod = ad.o_proj(layer)
    w = cast(torch.Tensor, mod.weight).float()
    if ad.row.down_proj_conv1d:  # GPT-2 Conv1D: [in, out]
        w = w.T
    b = getattr(mod, "bias", None)
    return w, (b.float() if isinstance(b, torch.Tensor) else None)


def _post_norm_map(ad: Adapter, layer: int, a_T: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The attention post-norm (Gemma-2) as a linear map with its scale frozen at the clean value; identity otherwise."""
    if not ad.row.attn_write_is_post_norm:
        return lambda x: x
    mod = ad.attn_write(layer)
    eps = float(getattr(mod, "eps", getattr(mod, "variance_epsilon", 1e-6)))
    gain = 1.0 + cast(torch.Tensor, mod.weight).float().to(a_T.device)
    scale = torch.sqrt(a_T.float().pow(2).mean() + eps)
    return lambda x: gain * x / scale


def head_parts(ad: Adapter, row: CapturedRow, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Callable]:
    """(head writes [H, d], head x source writes [H, T, d], bias write [d] or None, post map) at T, as written."""
    H, hd = ad.n_heads, ad.head_dim
    W, b = o_proj_weight(ad, layer)
    W = W.to(row.z[layer].device)
    post = _post_norm_map(ad, layer, row.o[layer])
    Wh = W.reshape(W.shape[0], H, hd)  # [d, H, hd]
    z = row.z[layer].reshape(H, hd)
    heads = post(torch.einsum("dhk,hk->hd", Wh, z))
    v = row.v[layer]  # [T, n_kv, hd]
    n_kv = v.shape[1]
    if H % n_kv:
        raise UnsupportedArchitectureError(f"{H} query heads do not share {n_kv} key/value heads evenly.")
    v_rep = v.repeat_interleave(H // n_kv, dim=1)  # [T, H, hd] query head h uses kv head h // (H / n_kv)
    sources = post(torch.einsum("dhk,phk->hpd", Wh, v_rep) * row.a[layer][:, :, None])  # [H, T, d]
    bias = post(b.to(W.device)) if b is not None else None
    return heads, sources, bias, post

