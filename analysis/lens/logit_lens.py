"""Logit lens (methods.md section 1): what the model would predict if it stopped at layer l.

p_l = softmax(post(W_U N_f(h_l) + b_U)), the final norm's statistics recomputed per layer
(``analysis.core.readout.readout``). Layer 0 = embedding output, layer L = last block's output before
the final norm.

Memory: the residual stream of one prompt batch is captured once (hooks, forward stopped at the
final norm, so the model's own [B, T, V] logits are never built), then reduced chunk of positions
by chunk, layer by layer: readout -> top-k / softmax -> per-position statistics -> drop. At no
point does a [L+1, B, T, V] tensor exist; the largest vocabulary-sized tensors are two
[rows, V] blocks (the current layer's logits, overwritten by its probabilities, and the last
layer's probabilities, kept for KL), rows = ``chunk_rows`` (default: about 32 MB of fp32 logits
each, still enough rows for an efficient unembedding matmul).

Precision: every sum over the vocabulary is of shifted logits zs = z - max(z) <= 0 and is summed
pairwise (error ~ eps log V), so no two terms of size max(z) (30-200 nats in real models) cancel:
with lse' = log sum exp(zs) = lse - max(z), H = lse' - p . zs, log p_t = zs_t - lse', and
KL(p_L || p_l) = p_L . log p_L - p_L . log p_l, where p_L . log p_l = p_L . zs_l - lse'_l sum(p_L).
In fp32 the statistics stay within ~1e-6 nats of fp64 statistics of the same logits (V = 65,536,
|max z| ~ 150 in the tests), where lse - p . z summed over raw logits was off by ~5e-3.

Speed: per layer and position one top-k, one subtraction, one exp, two sums, two dot products
(p_l . zs_l for the entropy, p_L . zs_l for KL) and one comparison pass for the target rank;
log-probabilities are never materialised. The statistics run on blocks of a chunk's rows sized
to stay in cache (about 12 MB), so their several passes over the vocabulary do not go to memory.

Where the parts live: the result types and aggregates in analysis.lens.results, target modes, token ids and the
residual capture in analysis.lens.inputs, the per-layer statistics in analysis.lens.stats, the two-checkpoint
comparison in analysis.lens.comparison and the sharded run in analysis.lens.sharded; this module keeps
``lens_trace`` (and ``_readout``, its one readout).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analysis.compute.backend import current_backend
from analysis.core.batching import batch_from_ids, chunks, pad_token_id
from analysis.core.errors import InputError
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.core.readout import readout
from analysis.core.tokens import decode
from analysis.lens.inputs import (
    TARGET_FINAL_TOP1,
    TARGET_MODES,
    TARGET_NEXT,
    TARGET_NONE,
    TARGET_TEXT,
    capture_residuals,
    encode_prompts,
    target_rows,
)
from analysis.lens.results import LensTrace
from analysis.lens.sharded import lens_trace_sharded
from analysis.lens.stats import decision_depth, default_block_rows, default_chunk_rows, layer_stats, store_layer
from analysis.lens.tuned import check as check_translator


def _readout(ad, h: torch.Tensor) -> torch.Tensor:
    """Lens logits of residual rows h [r, d] -> z [r, V] fp32 (the one place lens_trace reads out)."""
    return readout(ad, h)


# --------------------------------------------------------------------------------------------- lens
def _check_arguments(lm: LoadedModel, prompts: Sequence[str], k: int, target_mode: str, batch_size: int,
                     token_ids: Sequence[Sequence[int]] | None) -> list[list[int]]:
    """The token id rows of the prompts (encoded, or the given ones checked), after checking k, the mode and the
    batch size; InputError naming the first bad one."""
    V = lm.adapter.vocab_size
    if target_mode not in TARGET_MODES:
        raise InputError(f"Unknown target mode {target_mode!r}; choose one of {', '.join(TARGET_MODES)}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= min(V, 1000):
        raise InputError(f"Top-k must be a whole number from 1 to {min(V, 1000)}, got {k!r}.")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise InputError(f"Batch size must be at least 1, got {batch_size!r}.")
    if token_ids is None:
        return encode_prompts(lm, prompts)
    rows = [list(map(int, r)) for r in token_ids]
    if len(rows) != len(prompts) or any(not r for r in rows):
        raise InputError("token_ids must give a non-empty id row for every prompt.")
    bad = [t for r in rows for t in r if not 0 <= t < V]
    if bad:
        raise InputError(f"Token id {bad[0]} is outside this model's vocabulary (0..{V - 1}).")
    return rows


class _Out:
    """The trace's arrays (left-aligned: row n, position t), filled chunk by chunk and layer by layer."""

    def __init__(self, rows: list[list[int]], n_layers: int, k: int, vocab_size: int, target_mode: str,
                 text_targets: list[int]) -> None:
        N, T, L = len(rows), max(len(r) for r in rows), n_layers
        self.n_layers = L
        self.input_ids = np.full((N, T), -1, dtype=np.int64)
        self.mask = np.zeros((N, T), dtype=bool)
        self.top_ids = np.full((N, L + 1, T, k), -1, dtype=np.int64)
        self.top_probs = np.full((N, L + 1, T, k), np.nan, dtype=np.float32)
        self.entropy, self.kl, self.target_prob, self.xent = (np.full((N, L + 1, T), np.nan, dtype=np.float32)
                                                              for _ in range(4))
        self.target_rank = np.zeros((N, L + 1, T), dtype=np.int64)
        self.target_ids = np.full((N, T), -1, dtype=np.int64)
        self.next_ids = np.full((N, T), -1, dtype=np.int64)
        self.log_v = math.log(vocab_size)
        for n, r in enumerate(rows):
            self.input_ids[n, : len(r)] = r
            self.mask[n, : len(r)] = True
            self.next_ids[n, : len(r) - 1] = r[1:]
            if target_mode == TARGET_TEXT:
                self.target_ids[n, : len(r)] = text_targets[n]
            elif target_mode == TARGET_NEXT:
                self.target_ids[n, : len(r) - 1] = r[1:]

    def store(self, st: dict[str, torch.Tensor], layer: int, nn: np.ndarray, tt: np.ndarray) -> None:
        store_layer(st, layer, nn, tt, self.log_v, self.top_ids, self.top_probs, self.entropy, self.kl,
                    self.target_prob, self.target_rank, self.xent)


def layer_groups(n_layers: int, n_rows: int, rows_per_block: int) -> list[list[int]]:
    """Layers L, 0, 1, ..., L-1 in groups whose stacked rows (layers x ``n_rows``) fit one readout block of
    ``rows_per_block`` rows (at least one layer per group): each group is one unembedding matmul, so W_U is read
    once per group, not once per layer. Layer L comes first (its p_L is needed for the other layers' KL)."""
    order = [n_layers, *range(n_layers)]
    per = max(1, int(rows_per_block) // max(int(n_rows), 1))
    return [order[i: i + per] for i in range(0, len(order), per)]


def _reduce_chunk(ad: Any, flat: dict[int, torch.Tensor], idx: torch.Tensor, nn: np.ndarray, tt: np.ndarray,
                  tgt_c: torch.Tensor | None, nxt_c: torch.Tensor, out: _Out, k: int, block_rows: int,
                  rows_per_chunk: int, target_mode: str, translator: Any) -> None:
    """Every layer's statistics of one chunk of positions: the layers' rows stacked into readout blocks of about
    ``rows_per_chunk`` rows (``layer_groups``: one matmul per block, so a short prompt reads W_U once, not L+1
    times), then each layer's rows reduced on cache-sized blocks; layer L first, its p_L kept block by block for
    the other layers' KL."""
    L = ad.n_layers
    P = len(nn)
    blocks = chunks(P, block_rows)
    last: list[dict[str, torch.Tensor]] = []
    tgt_b: list[torch.Tensor | None] = []
    for group in layer_groups(L, P, rows_per_chunk):
        hs = [flat[layer][idx] if translator is None or layer == L else translator.apply(layer, flat[layer][idx])
              for layer in group]
        z = _readout(ad, hs[0] if len(hs) == 1 else torch.cat(hs))
        del hs
        for j, layer in enumerate(group):
            zl = z[j * P: (j + 1) * P]
            if layer == L:
                _reduce_last(zl, blocks, tgt_c, nxt_c, out, k, target_mode, nn, tt, last, tgt_b)
                continue
            for i, b in enumerate(blocks):
                out.store(layer_stats(zl[b], k, last[i], tgt_b[i], nxt_c[b]), layer, nn[b], tt[b])
        del z


def _reduce_last(z: torch.Tensor, blocks: list[slice], tgt_c: torch.Tensor | None, nxt_c: torch.Tensor, out: _Out,
                 k: int, target_mode: str, nn: np.ndarray, tt: np.ndarray, last: list, tgt_b: list) -> None:
    """Layer L's statistics of a chunk (z [P, V] becomes p_L, kept in ``last`` block by block with sum p_L and
    p_L . log p_L); ``tgt_b`` gets each block's targets (at layer L itself for the final-top-1 mode)."""
    L = out.n_layers
    for b in blocks:
        tgt = tgt_c[b] if tgt_c is not None else None
        st = layer_stats(z[b], k, None, tgt, nxt_c[b])
        last.append({"p": st.pop("p"), "s": st.pop("s"), "neg_h": st.pop("neg_h")})
        if target_mode == TARGET_FINAL_TOP1:  # at layer L the target is the top-1 itself
            tgt = st["top_i"][:, 0]
            out.target_ids[nn[b], tt[b]] = tgt.cpu().numpy()
            st["t_prob"] = st["top_p"][:, 0]
            st["t_rank"] = torch.ones_like(tgt, dtype=torch.int32)
        tgt_b.append(tgt)
        out.store(st, L, nn[b], tt[b])


def lens_trace(lm: LoadedModel, prompts: Sequence[str], *, k: int = 10, target_mode: str = TARGET_NONE,
               targets: str | int | Sequence[str | int | None] | None = None, batch_size: int = 16,
               chunk_rows: int | None = None, block_rows: int | None = None, padding_side: str = "right",
               token_ids: Sequence[Sequence[int]] | None = None, progress: Progress = None,
               translator=None) -> LensTrace:
    """Logit lens of every layer 0..L at every position of ``prompts`` (see LensTrace for what is kept); with a
    ``translator`` (analysis.lens.tuned.Translator, checked against lm) the tuned lens: layers l < L read out
    T_l(h_l)."""
    ad = lm.adapter
    if translator is not None:
        check_translator(translator, lm)
    L, V = ad.n_layers, ad.vocab_size
    rows = _check_arguments(lm, prompts, k, target_mode, batch_size, token_ids)
    k = int(k)
    text_targets, notes = target_rows(lm, rows, target_mode, targets)
    if translator is None and (backend := current_backend()).shards_for(lm, len(chunks(len(rows), int(batch_size)))) > 1:
        return lens_trace_sharded(backend, lm, prompts, rows, text_targets, notes, k=k, target_mode=target_mode,
                                  batch_size=int(batch_size), chunk_rows=chunk_rows, block_rows=block_rows,
                                  padding_side=padding_side, progress=progress)
    N = len(rows)
    rows_per_chunk = int(chunk_rows) if chunk_rows else default_chunk_rows(V)
    block_rows = min(rows_per_chunk, int(block_rows) if block_rows else default_block_rows(V))
    out = _Out(rows, L, k, V, target_mode, text_targets)
    pad = pad_token_id(lm.tokenizer)
    batches = chunks(N, int(batch_size))
    total_work = sum(int(out.mask[s].sum()) for s in batches) * (L + 2)
    done = 0
    dev = lm.device
    for s in batches:
        batch = batch_from_ids(rows[s], pad, padding_side)
        if progress:
            progress(done / total_work, f"forward pass, prompts {s.start + 1}-{s.stop} of {N}")
        store = capture_residuals(lm, batch.input_ids, batch.attention_mask, batch.position_ids)
        B, Tb = batch.input_ids.shape
        # real positions of this batch, flattened [P], and where they go in the left-aligned output
        real = batch.attention_mask.reshape(-1).nonzero().squeeze(1)
        t_idx = (batch.position_ids.reshape(-1)[real]).numpy()  # position ids count real tokens only
        n_idx = (real // Tb).numpy() + s.start
        done += len(real)
        real_dev = real.to(dev)
        flat = {layer: store[layer].reshape(B * Tb, -1) for layer in store}
        tgt_all = torch.as_tensor(out.target_ids[n_idx, t_idx], device=dev)
        nxt_all = torch.as_tensor(out.next_ids[n_idx, t_idx], device=dev)
        with torch.inference_mode():
            for c in chunks(len(real), rows_per_chunk):  # readout blocks of these positions' rows, stacked over layers
                _reduce_chunk(ad, flat, real_dev[c], n_idx[c], t_idx[c],
                              tgt_all[c] if target_mode in (TARGET_TEXT, TARGET_NEXT) else None, nxt_all[c], out, k,
                              block_rows, rows_per_chunk, target_mode, translator)
                done += len(n_idx[c]) * (L + 1)
                if progress:
                    progress(min(done / total_work, 1.0), f"reducing layers, prompts {s.start + 1}-{s.stop} of {N}")
        del store, flat
    return _trace(lm, prompts, out, k, target_mode, notes, progress)


def _trace(lm: LoadedModel, prompts: Sequence[str], out: _Out, k: int, target_mode: str, notes: list[str],
           progress: Progress) -> LensTrace:
    """The LensTrace of the filled arrays: decision depths, and the text of every token id it names."""
    depth = decision_depth(out.top_ids[..., 0])
    depth[~out.mask] = -1
    used = set(np.unique(out.top_ids[out.top_ids >= 0]).tolist()) | set(np.unique(out.input_ids[out.mask]).tolist())
    used |= set(np.unique(out.target_ids[out.target_ids >= 0]).tolist())
    strings = {int(i): decode(lm.tokenizer, int(i)) for i in sorted(used)}
    if progress:
        progress(1.0, "done")
    return LensTrace(model_name=lm.name, prompts=tuple(prompts), n_layers=lm.adapter.n_layers,
                     vocab_size=lm.adapter.vocab_size, k=k, target_mode=target_mode, input_ids=out.input_ids,
                     mask=out.mask, top_ids=out.top_ids, top_probs=out.top_probs, entropy=out.entropy, kl=out.kl,
                     target_ids=out.target_ids, target_prob=out.target_prob, target_rank=out.target_rank,
                     xent=out.xent, decision_depth=depth, strings=strings, notes=tuple(notes))
