"""Logit lens statistics: per-position top-k, entropy, KL(p_L || p_l), target probability and rank of one layer.

Computed from a chunk of lens logits in place (see analysis.lens.logit_lens for the precision argument), on row blocks sized
by ``default_chunk_rows`` / ``default_block_rows``; also the decision depth and the write into the result arrays.
"""
from __future__ import annotations

import numpy as np
import torch

_CACHE_BYTES = 12 << 20  # one [rows, V] fp32 block of about this size stays in a CPU's last-level cache
_GEMM_BYTES = 32 << 20  # logits of one unembedding matmul: enough rows for an efficient matrix product


def default_chunk_rows(vocab_size: int) -> int:
    """Positions per unembedding matmul: one [rows, V] fp32 block of about 32 MB (an efficient GEMM), 16..4096."""
    return int(min(4096, max(16, _GEMM_BYTES // (4 * max(vocab_size, 1)))))


def default_block_rows(vocab_size: int) -> int:
    """Positions per statistics block: one [rows, V] fp32 block of about 12 MB (stays in cache), 16..4096."""
    return int(min(4096, max(16, _CACHE_BYTES // (4 * max(vocab_size, 1)))))


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product [r, V] x [r, V] -> [r], summed pairwise (error ~ eps log V; a batched matrix
    product keeps one running total per row and loses ~1e-4 relative at V = 50k)."""
    return torch.linalg.vecdot(a, b)


def layer_stats(z: torch.Tensor, k: int, last: dict[str, torch.Tensor] | None, target: torch.Tensor | None,
                 nxt: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Statistics of one layer's lens logits z [r, V] fp32, which are overwritten with p; see the module docstring.

    At layer L pass ``last=None``: the result then also holds what the other layers' KL(p_L || p_l) needs:
    "p" (p_L [r, V], z's own storage), "s" (sum p_L [r]) and "neg_h" (p_L . log p_L [r]). Other layers pass it.
    """
    top_v, top_i = torch.topk(z, k, dim=-1)
    m = top_v[:, :1]  # [r, 1] the top logit
    out = {"top_i": top_i}
    if target is not None:  # from z itself, before it is overwritten
        valid = target >= 0
        zt = z.gather(1, target.clamp(min=0)[:, None])
        out["t_rank"] = torch.where(valid, (z > zt).sum(-1, dtype=torch.int32) + 1, 0)
        zt_s = (zt - m).squeeze(1)
    zs = z - m  # [r, V] <= 0, exactly 0 at the top: every sum below is of these, so nothing of size max(z) cancels
    p = torch.exp(zs, out=z)
    total = p.sum(-1, keepdim=True)  # pairwise, in [1, V]
    p.div_(total)
    lse_s = torch.log(total.squeeze(1))  # lse - m, in [0, log V]
    dot = _rowdot(p, zs)  # p . (z - m)
    out["entropy"] = lse_s - dot
    out["top_p"] = torch.exp((top_v - m) - lse_s[:, None])
    if target is not None:
        out["t_prob"] = torch.where(valid, torch.exp(zt_s - lse_s), torch.nan)
    if nxt is not None:
        out["xent"] = torch.where(nxt >= 0, lse_s - zs.gather(1, nxt.clamp(min=0)[:, None]).squeeze(1), torch.nan)
    if last is None:  # this is layer L itself
        s = p.sum(-1)
        out.update(p=p, s=s, neg_h=dot - lse_s * s, kl=torch.zeros_like(dot))
    else:  # KL = p_L . log p_L - p_L . log p_l, where p_L . log p_l = p_L . (z_l - m_l) - (lse_l - m_l) sum p_L
        out["kl"] = last["neg_h"] - (_rowdot(last["p"], zs) - lse_s * last["s"])
    return out


def decision_depth(top1: np.ndarray) -> np.ndarray:
    """top1 [..., L+1, T] -> first layer from which top1 equals top1 at L through L: [..., T]."""
    agree = top1 == top1[..., -1:, :]
    # trailing run of agreement, counted from layer L downwards
    run = np.cumprod(agree[..., ::-1, :], axis=-2).sum(axis=-2)
    return (top1.shape[-2] - run).astype(np.int64)


def store_layer(st: dict[str, torch.Tensor], layer: int, nn: np.ndarray, tt: np.ndarray, log_v: float, top_ids,
                 top_probs, entropy, kl, target_prob, target_rank, xent) -> None:
    """Write one layer's per-position statistics of a chunk into the result arrays (left-aligned)."""
    top_ids[nn, layer, tt] = st["top_i"].cpu().numpy()
    top_probs[nn, layer, tt] = st["top_p"].float().cpu().numpy()
    entropy[nn, layer, tt] = st["entropy"].clamp(0.0, log_v).float().cpu().numpy()  # rounding noise only
    kl[nn, layer, tt] = st["kl"].clamp(min=0.0).float().cpu().numpy()
    if "t_prob" in st:
        target_prob[nn, layer, tt] = st["t_prob"].float().cpu().numpy()
        target_rank[nn, layer, tt] = st["t_rank"].cpu().numpy()
    if "xent" in st:
        xent[nn, layer, tt] = st["xent"].float().cpu().numpy()
