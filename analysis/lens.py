"""Logit lens (methods.md section 1): what the model would predict if it stopped at layer l.

p_l = softmax(post(W_U N_f(h_l) + b_U)), the final norm's statistics recomputed per layer
(``analysis.readout.readout``). Layer 0 = embedding output, layer L = last block's output before
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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from analysis.batching import batch_from_ids, chunks, pad_token_id
from analysis.errors import IncompatibleModelsError, InputError
from analysis.hooks import HookSpec, attached, residual_capture_hooks
from analysis.loading import LoadedModel
from analysis.readout import readout

TARGET_NONE = "none"  # no target token
TARGET_TEXT = "text"  # per prompt a text (its first token) or a token id; the same token at every position
TARGET_FINAL_TOP1 = "final_top1"  # the model's own final top-1 at each position
TARGET_NEXT = "next_token"  # the actual next token at each position (none at the last one)
TARGET_MODES = (TARGET_NONE, TARGET_TEXT, TARGET_FINAL_TOP1, TARGET_NEXT)

Progress = Callable[[float, str], None] | None
_CACHE_BYTES = 12 << 20  # one [rows, V] fp32 block of about this size stays in a CPU's last-level cache
_GEMM_BYTES = 32 << 20  # logits of one unembedding matmul: enough rows for an efficient matrix product


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class LensTrace:
    """The logit lens over a prompt set.

    Shapes: N prompts, T = the longest prompt in tokens, L = number of blocks (layers 0..L),
    K = top-k. Positions are left-aligned whatever the padding side: position t of prompt n is
    its t-th token (BOS included); ``mask[n, t]`` is False past the prompt's end, where float
    arrays hold NaN and int arrays -1 (ranks 0).
      input_ids [N, T] int64        mask [N, T] bool
      top_ids [N, L+1, T, K] int64  top_probs [N, L+1, T, K] float32 (descending)
      entropy [N, L+1, T] float32   H(p_l) in nats, in [0, log V]
      kl [N, L+1, T] float32        KL(p_L || p_l) in nats (>= 0; 0 at layer L)
      target_ids [N, T] int64       -1 where there is no target
      target_prob [N, L+1, T] float32 (NaN without target), target_rank [N, L+1, T] int64 in [1, V] (0 without)
      xent [N, L+1, T] float32      -log p_l(actual next token); NaN at each prompt's last position
      decision_depth [N, T] int64   first layer from which the final top-1 stays top-1 through L
    ``strings`` maps every token id that appears in the arrays to its text.
    """

    model_name: str
    prompts: tuple[str, ...]
    n_layers: int
    vocab_size: int
    k: int
    target_mode: str
    input_ids: np.ndarray
    mask: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    entropy: np.ndarray
    kl: np.ndarray
    target_ids: np.ndarray
    target_prob: np.ndarray
    target_rank: np.ndarray
    xent: np.ndarray
    decision_depth: np.ndarray
    strings: dict[int, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def lengths(self) -> np.ndarray:
        """Real tokens per prompt: [N]."""
        return self.mask.sum(axis=1)

    @property
    def last_index(self) -> np.ndarray:
        """Index of each prompt's last real token: [N]."""
        return self.lengths - 1

    def token(self, token_id: int) -> str:
        """The text of a token id that appears in this trace."""
        return self.strings.get(int(token_id), f"<{int(token_id)}>")

    def tokens(self, n: int) -> list[str]:
        """The input tokens of prompt ``n`` as text: [length]."""
        return [self.token(i) for i in self.input_ids[n, : int(self.lengths[n])]]


@dataclass(frozen=True, eq=False)
class LensComparison:
    """KL(A_l || B_l) between two checkpoints on identical token ids.

    kl [N, L+1, T] float32 in nats (NaN on padding, positions left-aligned as in LensTrace);
    mean_kl [L+1]: mean over all real positions; mean_kl_last [L+1]: mean over each prompt's
    last position. input_ids [N, T] int64 (-1 on padding), mask [N, T] bool.
    """

    model_a: str
    model_b: str
    prompts: tuple[str, ...]
    n_layers: int
    input_ids: np.ndarray
    mask: np.ndarray
    kl: np.ndarray
    mean_kl: np.ndarray
    mean_kl_last: np.ndarray
    strings: dict[int, str] = field(default_factory=dict)

    def tokens(self, n: int) -> list[str]:
        """The input tokens of prompt ``n`` as text."""
        length = int(self.mask[n].sum())
        return [self.strings.get(int(i), f"<{int(i)}>") for i in self.input_ids[n, :length]]


# --------------------------------------------------------------------------------------------- helpers
def decode(tokenizer, token_id: int) -> str:
    """The text one token id stands for (leading space kept)."""
    try:
        return tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    except TypeError:
        return tokenizer.decode([int(token_id)])
    except Exception:  # noqa: BLE001 - a tokenizer without decode still gets a label
        return str(tokenizer.convert_ids_to_tokens(int(token_id)))


def encode_prompts(lm: LoadedModel, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids (special tokens included, e.g. BOS) of each prompt; InputError if empty or too long."""
    if len(prompts) == 0:
        raise InputError("No prompts given: type a prompt or choose a prompt set.")
    rows = []
    for i, p in enumerate(prompts):
        ids = [int(t) for t in lm.tokenizer(p, add_special_tokens=True)["input_ids"]]
        if not ids:
            raise InputError(f"Prompt {i + 1} has no tokens.")
        if len(ids) > lm.context_length:
            raise InputError(f"Prompt {i + 1} has {len(ids)} tokens; the model's context is {lm.context_length}. "
                             "Shorten it.")
        rows.append(ids)
    return rows


def resolve_target(tokenizer, target: str | int, vocab_size: int) -> tuple[int, str | None]:
    """One target as (token id, note or None): a text's first token, or a token id checked against the vocabulary."""
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= int(target) < vocab_size:
            raise InputError(f"Target token id {int(target)} is out of range: this model's vocabulary has ids "
                             f"0..{vocab_size - 1}.")
        return int(target), None
    if not isinstance(target, str) or target == "":
        raise InputError("The target is empty. Type the target token's text (e.g. ' Paris', with its leading "
                         "space) or choose another target mode.")
    ids = [int(t) for t in tokenizer(target, add_special_tokens=False)["input_ids"]]
    if not ids:
        raise InputError(f"The target {target!r} does not tokenize to any token; type the token's text "
                         "(e.g. ' Paris').")
    if not 0 <= ids[0] < vocab_size:
        raise InputError(f"The target {target!r} tokenizes to id {ids[0]}, outside this model's vocabulary "
                         f"(0..{vocab_size - 1}).")
    note = None
    if len(ids) > 1:
        pieces = [decode(tokenizer, i) for i in ids]
        note = (f"The target {target!r} is {len(ids)} tokens ({' | '.join(repr(p) for p in pieces)}); "
                f"its first token {pieces[0]!r} is used.")
    return ids[0], note


def _target_rows(lm: LoadedModel, rows: list[list[int]], mode: str,
                 targets: str | int | Sequence[str | int | None] | None) -> tuple[list[int], list[str]]:
    """Per prompt the text-mode target id (-1 for none) and the notes to show."""
    if mode != TARGET_TEXT:
        return [-1] * len(rows), []
    if targets is None:
        raise InputError("Target mode 'text' needs a target: type one, or use a prompt set with a 'target' field.")
    per = [targets] * len(rows) if isinstance(targets, (str, int, np.integer)) else list(targets)
    if len(per) != len(rows):
        raise InputError(f"{len(per)} targets were given for {len(rows)} prompts; give one per prompt.")
    ids, notes, missing = [], [], 0
    for i, t in enumerate(per):
        if t is None:
            ids.append(-1)
            missing += 1
            continue
        tid, note = resolve_target(lm.tokenizer, t, lm.adapter.vocab_size)
        ids.append(tid)
        if note:
            notes.append((f"Prompt {i + 1}: " if len(per) > 1 else "") + note)
    if missing == len(per):
        raise InputError("None of the prompts has a target. Type a target or choose another target mode.")
    if missing:
        notes.append(f"{missing} of {len(per)} prompts have no target; their target views are empty.")
    if len(notes) > 12:
        notes = notes[:10] + [f"... and {len(notes) - 10} more notes like these."]
    return ids, notes


class _StopForward(Exception):
    """Raised by a hook on the final norm: everything the lens needs has been captured."""


def capture_residuals(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """h_l for l = 0..L of one batch: {l: [B, T, d]} (model dtype, model device); stops before the final norm."""
    ad = lm.adapter
    store: dict[int, torch.Tensor] = {}

    def stop(module, args, kwargs):
        raise _StopForward

    hooks: list[HookSpec] = residual_capture_hooks(ad, range(ad.n_layers + 1), store)
    hooks.append((ad.final_norm_module, "pre", stop))
    dev = lm.device
    with attached(lm.lock, hooks), torch.inference_mode():
        try:
            lm.model(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev),
                     position_ids=position_ids.to(dev), use_cache=False)
        except _StopForward:
            pass
    missing = [l for l in range(ad.n_layers + 1) if l not in store]
    if missing:  # pragma: no cover - the adapter's self-check would fail first
        raise InputError(f"The residual stream at layers {missing} was not captured; the adapter does not fit.")
    return store


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


def _layer_stats(z: torch.Tensor, k: int, last: dict[str, torch.Tensor] | None, target: torch.Tensor | None,
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


def _readout(ad, h: torch.Tensor) -> torch.Tensor:
    """Lens logits of residual rows h [r, d] -> z [r, V] fp32 (the one place lens_trace reads out)."""
    return readout(ad, h)


def _decision_depth(top1: np.ndarray) -> np.ndarray:
    """top1 [..., L+1, T] -> first layer from which top1 equals top1 at L through L: [..., T]."""
    agree = top1 == top1[..., -1:, :]
    # trailing run of agreement, counted from layer L downwards
    run = np.cumprod(agree[..., ::-1, :], axis=-2).sum(axis=-2)
    return (top1.shape[-2] - run).astype(np.int64)


# --------------------------------------------------------------------------------------------- lens
def lens_trace(lm: LoadedModel, prompts: Sequence[str], *, k: int = 10, target_mode: str = TARGET_NONE,
               targets: str | int | Sequence[str | int | None] | None = None, batch_size: int = 16,
               chunk_rows: int | None = None, block_rows: int | None = None, padding_side: str = "right",
               token_ids: Sequence[Sequence[int]] | None = None, progress: Progress = None) -> LensTrace:
    """Logit lens of every layer 0..L at every position of ``prompts`` (see LensTrace for what is kept)."""
    ad = lm.adapter
    L, V = ad.n_layers, ad.vocab_size
    if target_mode not in TARGET_MODES:
        raise InputError(f"Unknown target mode {target_mode!r}; choose one of {', '.join(TARGET_MODES)}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= min(V, 1000):
        raise InputError(f"Top-k must be a whole number from 1 to {min(V, 1000)}, got {k!r}.")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise InputError(f"Batch size must be at least 1, got {batch_size!r}.")
    k = int(k)
    rows = [list(map(int, r)) for r in token_ids] if token_ids is not None else encode_prompts(lm, prompts)
    if token_ids is not None:
        if len(rows) != len(prompts) or any(not r for r in rows):
            raise InputError("token_ids must give a non-empty id row for every prompt.")
        bad = [t for r in rows for t in r if not 0 <= t < V]
        if bad:
            raise InputError(f"Token id {bad[0]} is outside this model's vocabulary (0..{V - 1}).")
    text_targets, notes = _target_rows(lm, rows, target_mode, targets)
    N, T = len(rows), max(len(r) for r in rows)
    rows_per_chunk = int(chunk_rows) if chunk_rows else default_chunk_rows(V)
    block_rows = min(rows_per_chunk, int(block_rows) if block_rows else default_block_rows(V))
    log_v = math.log(V)

    input_ids = np.full((N, T), -1, dtype=np.int64)
    mask = np.zeros((N, T), dtype=bool)
    for n, r in enumerate(rows):
        input_ids[n, : len(r)] = r
        mask[n, : len(r)] = True
    top_ids = np.full((N, L + 1, T, k), -1, dtype=np.int64)
    top_probs = np.full((N, L + 1, T, k), np.nan, dtype=np.float32)
    entropy = np.full((N, L + 1, T), np.nan, dtype=np.float32)
    kl = np.full((N, L + 1, T), np.nan, dtype=np.float32)
    target_prob = np.full((N, L + 1, T), np.nan, dtype=np.float32)
    target_rank = np.zeros((N, L + 1, T), dtype=np.int64)
    xent = np.full((N, L + 1, T), np.nan, dtype=np.float32)
    target_ids = np.full((N, T), -1, dtype=np.int64)
    for n, r in enumerate(rows):
        if target_mode == TARGET_TEXT:
            target_ids[n, : len(r)] = text_targets[n]
        elif target_mode == TARGET_NEXT:
            target_ids[n, : len(r) - 1] = r[1:]
    next_ids = np.full((N, T), -1, dtype=np.int64)
    for n, r in enumerate(rows):
        next_ids[n, : len(r) - 1] = r[1:]

    pad = pad_token_id(lm.tokenizer)
    batches = chunks(N, int(batch_size))
    total_work = sum(int(mask[s].sum()) for s in batches) * (L + 2)
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
        b_idx = (real // Tb).numpy()
        t_idx = (batch.position_ids.reshape(-1)[real]).numpy()  # position ids count real tokens only
        n_idx = b_idx + s.start
        done += len(real)
        real_dev = real.to(dev)
        flat = {l: store[l].reshape(B * Tb, -1) for l in store}
        tgt_all = torch.as_tensor(target_ids[n_idx, t_idx], device=dev)
        nxt_all = torch.as_tensor(next_ids[n_idx, t_idx], device=dev)
        with torch.inference_mode():
            for c in chunks(len(real), rows_per_chunk):  # one unembedding matmul per layer over these positions
                idx = real_dev[c]
                nn, tt = n_idx[c], t_idx[c]
                blocks = chunks(len(nn), block_rows)  # statistics on cache-sized blocks of those rows
                nxt_c = nxt_all[c]
                tgt_c = tgt_all[c] if target_mode in (TARGET_TEXT, TARGET_NEXT) else None
                last, tgt_b = [], []
                p_last = _readout(ad, flat[L][idx])  # its blocks become p_L, kept for the other layers' KL
                for b in blocks:
                    tgt = tgt_c[b] if tgt_c is not None else None
                    st = _layer_stats(p_last[b], k, None, tgt, nxt_c[b])
                    last.append({"p": st.pop("p"), "s": st.pop("s"), "neg_h": st.pop("neg_h")})
                    if target_mode == TARGET_FINAL_TOP1:  # at layer L the target is the top-1 itself
                        tgt = st["top_i"][:, 0]
                        target_ids[nn[b], tt[b]] = tgt.cpu().numpy()
                        st["t_prob"] = st["top_p"][:, 0]
                        st["t_rank"] = torch.ones_like(tgt, dtype=torch.int32)
                    tgt_b.append(tgt)
                    _store_layer(st, L, nn[b], tt[b], log_v, top_ids, top_probs, entropy, kl, target_prob,
                                 target_rank, xent)
                for l in range(L):
                    z = _readout(ad, flat[l][idx])
                    for j, b in enumerate(blocks):
                        sl = _layer_stats(z[b], k, last[j], tgt_b[j], nxt_c[b])
                        _store_layer(sl, l, nn[b], tt[b], log_v, top_ids, top_probs, entropy, kl, target_prob,
                                     target_rank, xent)
                    del z
                del last, p_last
                done += len(nn) * (L + 1)
                if progress:
                    progress(min(done / total_work, 1.0), f"reducing layers, prompts {s.start + 1}-{s.stop} of {N}")
        del store, flat

    top1 = top_ids[..., 0]
    depth = _decision_depth(top1)
    depth[~mask] = -1
    used = set(np.unique(top_ids[top_ids >= 0]).tolist()) | set(np.unique(input_ids[mask]).tolist())
    used |= set(np.unique(target_ids[target_ids >= 0]).tolist())
    strings = {int(i): decode(lm.tokenizer, int(i)) for i in sorted(used)}
    if progress:
        progress(1.0, "done")
    return LensTrace(model_name=lm.name, prompts=tuple(prompts), n_layers=L, vocab_size=V, k=k,
                     target_mode=target_mode, input_ids=input_ids, mask=mask, top_ids=top_ids, top_probs=top_probs,
                     entropy=entropy, kl=kl, target_ids=target_ids, target_prob=target_prob,
                     target_rank=target_rank, xent=xent, decision_depth=depth, strings=strings, notes=tuple(notes))


def _store_layer(st: dict[str, torch.Tensor], layer: int, nn: np.ndarray, tt: np.ndarray, log_v: float, top_ids,
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


# --------------------------------------------------------------------------------------------- aggregates
def _position_mask(mask: np.ndarray, positions: str) -> np.ndarray:
    """[N, T] bool of the positions an aggregate uses: 'last' (each prompt's last token) or 'all' real ones."""
    if positions == "all":
        return mask
    if positions != "last":
        raise InputError(f"positions must be 'last' or 'all', got {positions!r}.")
    out = np.zeros_like(mask)
    out[np.arange(mask.shape[0]), mask.sum(axis=1) - 1] = True
    return out


def mean_kl_per_layer(trace: LensTrace, positions: str = "last") -> np.ndarray:
    """Mean KL(p_L || p_l) per layer over the set: [L+1] nats (positions 'last' or 'all')."""
    sel = _position_mask(trace.mask, positions)
    vals = np.where(sel[:, None, :], trace.kl, np.nan)
    return np.nanmean(vals, axis=(0, 2)).astype(np.float32)


def decision_depths(trace: LensTrace, positions: str = "last") -> np.ndarray:
    """Decision depth of every selected position (first layer from which the final top-1 stays top-1): [M] int."""
    sel = _position_mask(trace.mask, positions)
    return trace.decision_depth[sel]


def target_trajectory(trace: LensTrace, n: int, position: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probability [L+1], rank [L+1]) of prompt n's target at ``position`` (default: its last token)."""
    if not 0 <= n < len(trace.prompts):
        raise InputError(f"Prompt {n + 1} does not exist; the set has {len(trace.prompts)} prompts.")
    t = int(trace.last_index[n]) if position is None else int(position)
    if not 0 <= t < int(trace.lengths[n]):
        raise InputError(f"Position {t} is outside prompt {n + 1} (positions 0..{int(trace.lengths[n]) - 1}).")
    return trace.target_prob[n, :, t], trace.target_rank[n, :, t]


# --------------------------------------------------------------------------------------------- compare
def _vocab(tokenizer) -> dict[str, int] | None:
    """The tokenizer's token -> id map, or None if it has none."""
    get = getattr(tokenizer, "get_vocab", None)
    if get is None:
        return None
    try:
        return dict(get())
    except Exception:  # noqa: BLE001
        return None


def check_compatible(lm_a: LoadedModel, lm_b: LoadedModel) -> None:
    """Raise IncompatibleModelsError unless A and B share the vocabulary and the number of layers."""
    va, vb = _vocab(lm_a.tokenizer), _vocab(lm_b.tokenizer)
    if va is not None and vb is not None:
        if va != vb:
            only_a = len(set(va.items()) - set(vb.items()))
            raise IncompatibleModelsError(
                f"{lm_a.name} and {lm_b.name} use different tokenizers ({len(va):,} vs {len(vb):,} tokens, "
                f"{only_a:,} token-id pairs differ). KL(A_l || B_l) needs both models to read the same token ids "
                "and predict over the same vocabulary; compare checkpoints of the same model family instead.")
    elif type(lm_a.tokenizer) is not type(lm_b.tokenizer) or lm_a.tokenizer.vocab_size != lm_b.tokenizer.vocab_size:
        raise IncompatibleModelsError(f"{lm_a.name} and {lm_b.name} have tokenizers that cannot be shown to be equal; "
                                      "KL(A_l || B_l) needs a shared vocabulary.")
    if lm_a.adapter.vocab_size != lm_b.adapter.vocab_size:
        raise IncompatibleModelsError(
            f"{lm_a.name} predicts over {lm_a.adapter.vocab_size:,} tokens and {lm_b.name} over "
            f"{lm_b.adapter.vocab_size:,}; the distributions cannot be compared token by token.")
    if lm_a.adapter.n_layers != lm_b.adapter.n_layers:
        raise IncompatibleModelsError(
            f"{lm_a.name} has {lm_a.adapter.n_layers} layers and {lm_b.name} has {lm_b.adapter.n_layers}; "
            "a layer-by-layer comparison needs the same depth.")


def lens_compare(lm_a: LoadedModel, lm_b: LoadedModel, prompts: Sequence[str], *, batch_size: int = 16,
                 chunk_rows: int | None = None, progress: Progress = None) -> LensComparison:
    """KL(A_l || B_l) per layer and position on identical token ids (A's tokenization of ``prompts``)."""
    check_compatible(lm_a, lm_b)
    L, V = lm_a.adapter.n_layers, lm_a.adapter.vocab_size
    rows = encode_prompts(lm_a, prompts)
    longest = max(len(r) for r in rows)
    if longest > lm_b.context_length:
        raise InputError(f"A prompt has {longest} tokens; {lm_b.name}'s context is {lm_b.context_length}.")
    N, T = len(rows), longest
    input_ids = np.full((N, T), -1, dtype=np.int64)
    mask = np.zeros((N, T), dtype=bool)
    for n, r in enumerate(rows):
        input_ids[n, : len(r)] = r
        mask[n, : len(r)] = True
    kl = np.full((N, L + 1, T), np.nan, dtype=np.float32)
    rows_per_chunk = int(chunk_rows) if chunk_rows else default_chunk_rows(V)
    pad = pad_token_id(lm_a.tokenizer)
    batches = chunks(N, int(batch_size))
    for bi, s in enumerate(batches):
        if progress:
            progress(bi / len(batches), f"prompts {s.start + 1}-{s.stop} of {N}")
        batch = batch_from_ids(rows[s], pad, "right")
        store_a = capture_residuals(lm_a, batch.input_ids, batch.attention_mask, batch.position_ids)
        store_b = capture_residuals(lm_b, batch.input_ids, batch.attention_mask, batch.position_ids)
        B, Tb = batch.input_ids.shape
        real = batch.attention_mask.reshape(-1).nonzero().squeeze(1)
        n_idx = (real // Tb).numpy() + s.start
        t_idx = (real % Tb).numpy()
        with torch.inference_mode():
            for c in chunks(len(real), rows_per_chunk):
                for l in range(L + 1):
                    ha = store_a[l].reshape(B * Tb, -1)[real[c].to(store_a[l].device)]
                    hb = store_b[l].reshape(B * Tb, -1)[real[c].to(store_b[l].device)]
                    lpa = torch.log_softmax(readout(lm_a.adapter, ha), dim=-1)
                    lpb = torch.log_softmax(readout(lm_b.adapter, hb), dim=-1).to(lpa.device)
                    val = (lpa.exp() * (lpa - lpb)).sum(-1).clamp(min=0.0)
                    kl[n_idx[c], l, t_idx[c]] = val.float().cpu().numpy()
        del store_a, store_b
    last = _position_mask(mask, "last")
    mean_all = np.nanmean(np.where(mask[:, None, :], kl, np.nan), axis=(0, 2)).astype(np.float32)
    mean_last = np.nanmean(np.where(last[:, None, :], kl, np.nan), axis=(0, 2)).astype(np.float32)
    strings = {int(i): decode(lm_a.tokenizer, int(i)) for i in np.unique(input_ids[mask]).tolist()}
    if progress:
        progress(1.0, "done")
    return LensComparison(model_a=lm_a.name, model_b=lm_b.name, prompts=tuple(prompts), n_layers=L,
                          input_ids=input_ids, mask=mask, kl=kl, mean_kl=mean_all, mean_kl_last=mean_last,
                          strings=strings)
