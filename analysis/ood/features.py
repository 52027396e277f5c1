"""Per-prompt inputs of the OOD scores, from one batched, chunked forward pass per prompt set.

For every prompt and every requested layer (0 = embeddings .. L = last block's output before the final
norm) this keeps the last-token residual, the mask-aware mean over the prompt's real tokens (the BOS left out
of the mean when the tokenizer itself added it; a bos_token the tokenizer never adds, such as SmolLM2's
<|im_start|>, is a real token of the prompt when the prompt spells it out, and stays in), the head input at
the last token (the final norm applied to that residual) and a summary of the logit-lens logits there
(top-K + logsumexp); for the model's own final logits the same summary; and the per-sample mean token
log-likelihood with padding masked. Nothing of size [layers x batch x positions x vocab] is ever held: each
chunk reduces per layer to these numbers and is dropped.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from analysis.compute.backend import Backend, current_backend
from analysis.compute.sharding import shard_plan
from analysis.core.batching import Batch, bucketed, chunks, length_batches, n_batches, token_rows
from analysis.core.errors import InputError
from analysis.core.forward import run
from analysis.core.hooks import residual_hook
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.core.readout import final_norm, logsumexp_rows, softcap, unembed
from analysis.core.wording import plural, verb
from analysis.ood.scores import DEFAULT_TOP_K, LogitStats, vim_origin
from analysis.prompts import adds_bos

READOUT_ENTRIES = 1 << 24  # logits entries (64 MiB fp32) of one lens readout block (layers x prompts rows)
LENS_TOP_K = 1  # lens logits kept per layer: the layer scores read only the max logit (NECO) and the logsumexp (ViM)


@dataclass(frozen=True)
class OODFeatures:
    """Features of one prompt set (N prompts, n_l = len(layers) layers, width d, K kept logits).

    last, mean, head_in: [n_l, N, d] float32 (last-token residual, mean-pooled residual without BOS,
    final norm of the last-token residual = the unembedding's input at that layer).
    lens_top [n_l, N, K_lens] / lens_lse [n_l, N]: logit-lens logits at the last token (top-K_lens sorted,
    K_lens = LENS_TOP_K = 1 by default: the layer scores need no more; logsumexp).
    final_top [N, K] / final_lse [N]: the model's own final-position logits.
    mean_loglik [N]: mean over predicted tokens of log p(token | prefix); n_predicted [N] how many.
    vim_origin [d]: -pinv(W_U) b_U (zeros without an unembedding bias). vocab_size: V.
    blood [N, n_layers] (optional, needs gradients): per block l, the squared Frobenius norm of the Jacobian of
    the last token's h_{l+1} with respect to the last token's h_l (see blood_norms).
    """

    prompts: tuple[str, ...]
    layers: tuple[int, ...]
    last: np.ndarray
    mean: np.ndarray
    head_in: np.ndarray
    lens_top: np.ndarray
    lens_lse: np.ndarray
    final_top: np.ndarray
    final_lse: np.ndarray
    mean_loglik: np.ndarray
    n_predicted: np.ndarray
    vim_origin: np.ndarray
    vocab_size: int
    blood: np.ndarray | None = None  # [N, n_layers]: ||d h_{l+1} / d h_l||_F^2 at the last token, or None

    def __len__(self) -> int:
        return len(self.prompts)

    def pooled(self, pooling: str) -> np.ndarray:
        """The residual features for ``pooling`` ('last' or 'mean'): [n_l, N, d]."""
        if pooling not in ("last", "mean"):
            raise InputError(f"Pooling must be 'last' or 'mean', got {pooling!r}.")
        return self.last if pooling == "last" else self.mean

    def final_logits(self) -> LogitStats:
        """The final logits as a LogitStats [N]."""
        return LogitStats(self.final_top, self.final_lse, self.vocab_size)

    def lens_logits(self, layer_pos: int) -> LogitStats:
        """The lens logits of the layer at position ``layer_pos`` in ``layers`` as a LogitStats [N]."""
        return LogitStats(self.lens_top[layer_pos], self.lens_lse[layer_pos], self.vocab_size)


def pooling_weights(batch: Batch, bos_id: int | None) -> torch.Tensor:
    """Mean-pooling weights [B, T]: the attention mask with each row's first real token removed if it is
    ``bos_id`` (pass None when the tokenizer adds no BOS of its own).

    A row whose only real token is BOS keeps it (so every row has a non-empty mean).
    """
    mask = batch.attention_mask.bool()
    first = mask & (mask.long().cumsum(dim=1) == 1)
    w = mask.clone()
    if bos_id is not None:
        w &= ~(first & (batch.input_ids == int(bos_id)))
    empty = w.sum(dim=1) == 0
    w[empty] = mask[empty]
    return w.float()


def mean_token_loglik(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean log p(x_t | x_<t) over real predicted tokens (padding masked): ([B], counts [B]).

    logits [B, T, V]; position t predicts token t + 1 when both are real tokens. One row at a time into a
    reused [T - 1, V] log-softmax buffer (never a second [B, T, V] tensor).
    """
    ids = batch.input_ids.to(logits.device)
    mask = batch.attention_mask.to(logits.device).bool()
    B, T, V = logits.shape
    tok = torch.zeros(B, max(T - 1, 0), device=logits.device)
    buf = torch.empty(max(T - 1, 0), V, device=logits.device)
    for b in range(B):
        lp = torch.log_softmax(logits[b, :-1].float(), dim=-1, out=buf)
        tok[b] = lp.gather(-1, ids[b, 1:, None]).squeeze(-1)
    valid = (mask[:, 1:] & mask[:, :-1]).float()
    count = valid.sum(dim=1)
    return (tok * valid).sum(dim=1) / count.clamp(min=1), count


def _topk(z: torch.Tensor, k: int, buf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-k sorted logits [B, k], logsumexp [B]) of z [B, V] in fp32 (``buf``: a reused [>= B, V] buffer)."""
    z = z.float()
    k = min(k, z.shape[-1])
    top = z.amax(dim=-1, keepdim=True) if k == 1 else torch.topk(z, k, dim=-1).values
    return top, logsumexp_rows(z, buf)


def extract_features(lm: LoadedModel, prompts: Sequence[str], *, layers: Sequence[int] | None = None,
                     batch_size: int = 16, top_k: int = DEFAULT_TOP_K, lens_top_k: int = LENS_TOP_K,
                     padding_side: str = "right",
                     blood_draws: int = 0, bucket: bool = True, progress: Progress = None) -> OODFeatures:
    """Run ``prompts`` through the model in chunks and return their OODFeatures (see the class doc for shapes).

    One forward pass per batch captures every requested layer. ``top_k`` logits are kept of the final readout
    (the logit scores: GEN's M, LogitGap's N + 1), ``lens_top_k`` of every layer's lens readout. ``bucket`` batches prompts of similar token length
    together (less padding); every row of the result stays at its prompt's input position either way.
    """
    prompts = tuple(prompts)
    if not prompts:
        raise InputError("The prompt set is empty: nothing to compute features for.")
    ad = lm.adapter
    layers = tuple(range(ad.n_layers + 1)) if layers is None else tuple(lm.check_layer(int(l)) for l in layers)
    if not layers:
        raise InputError("Choose at least one layer.")
    if not blood_draws and (backend := current_backend()).shards_for(lm, n_batches(len(prompts), batch_size)) > 1:

        return extract_features_sharded(backend, lm, prompts, layers=layers, batch_size=batch_size, top_k=top_k,
                                        lens_top_k=lens_top_k, padding_side=padding_side, bucket=bucket,
                                        progress=progress)
    bos_id = lm.tokenizer.bos_token_id if adds_bos(lm.tokenizer) else None  # only a BOS the tokenizer added
    n, d, nl = len(prompts), ad.d_model, len(layers)
    k, k_lens = min(int(top_k), ad.vocab_size), min(int(lens_top_k), ad.vocab_size)
    last = np.zeros((nl, n, d), np.float32)
    mean = np.zeros((nl, n, d), np.float32)
    head_in = np.zeros((nl, n, d), np.float32)
    lens_top = np.zeros((nl, n, k_lens), np.float32)
    lens_lse = np.zeros((nl, n), np.float32)
    final_top = np.zeros((n, k), np.float32)
    final_lse = np.zeros(n, np.float32)
    loglik = np.zeros(n, np.float64)
    counts = np.zeros(n, np.int64)
    n_parts, done = n_batches(n, batch_size), 0
    buf: torch.Tensor | None = None  # [rows, V] log-softmax buffer of the lens readout, reused batch after batch
    for ci, (sl, batch) in enumerate(bucketed(lm.tokenizer, prompts, batch_size, padding_side=padding_side,
                                              max_length=lm.context_length, sort=bucket)):
        w = pooling_weights(batch, bos_id).to(lm.device)
        last_idx = batch.last_index().to(lm.device)
        rows = torch.arange(w.shape[0], device=lm.device)
        w_sum = w.sum(dim=1, keepdim=True)
        store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def pool(li: int, store: dict = store, rows: torch.Tensor = rows, last_idx: torch.Tensor = last_idx,
                 w: torch.Tensor = w, w_sum: torch.Tensor = w_sum) -> Callable[[torch.Tensor], None]:
            def fn(h: torch.Tensor) -> None:  # the pass only pools; the readout runs once for all layers below
                hf = h.float()
                store[li] = (hf[rows, last_idx], torch.einsum("bt,btd->bd", w, hf) / w_sum)
            return fn

        hooks = [residual_hook(ad, l, pool(i)) for i, l in enumerate(layers)]
        logits = run(lm, batch, hooks)
        with torch.inference_mode():
            ll, cnt = mean_token_loglik(logits, batch)
            ft, fl = _topk(logits[rows.to(logits.device), last_idx.to(logits.device)], k)
            del logits
            hl = torch.stack([store[i][0] for i in range(nl)])  # [n_l, B, d]
            hm = torch.stack([store[i][1] for i in range(nl)])
            store.clear()
            hi = final_norm(ad.final_norm, hl)  # the lens readout is softcap(W_U hi + b_U)
            flat = hi.reshape(-1, d)
            tops, lses = [], []
            rows_per = max(1, READOUT_ENTRIES // ad.vocab_size)
            if buf is None or buf.shape[0] < min(rows_per, flat.shape[0]):
                buf = torch.empty(min(rows_per, flat.shape[0]), ad.vocab_size, device=lm.device)
            for c in chunks(flat.shape[0], rows_per):
                top, lse = _topk(softcap(ad, unembed(ad, flat[c])), k_lens, buf)
                tops.append(top)
                lses.append(lse)
        last[:, sl], mean[:, sl], head_in[:, sl] = hl.cpu().numpy(), hm.cpu().numpy(), hi.cpu().numpy()
        lens_top[:, sl] = torch.cat(tops).reshape(nl, -1, k_lens).cpu().numpy()
        lens_lse[:, sl] = torch.cat(lses).reshape(nl, -1).cpu().numpy()
        final_top[sl], final_lse[sl] = ft.cpu().numpy(), fl.cpu().numpy()
        loglik[sl], counts[sl] = ll.cpu().numpy(), cnt.cpu().numpy().astype(np.int64)
        done += len(sl)
        if progress is not None:
            progress((ci + 1) / n_parts * (0.5 if blood_draws else 1.0), f"{done:,}/{n:,} prompts")
    short = np.flatnonzero(counts == 0)
    if short.size:
        raise InputError(f"{plural(short.size, 'prompt')} {verb(short.size)} a single token, so no token is predicted and the mean "
                         f"log-likelihood is undefined (prompt {int(short[0]) + 1}: {prompts[short[0]]!r}). "
                         "Use prompts of at least one word.")
    W = ad.W_U.detach().float().cpu().numpy()
    b = None if ad.b_U is None else ad.b_U.detach().float().cpu().numpy()
    blood = None
    if blood_draws:
        blood = blood_norms(lm, prompts, n_draws=blood_draws, batch_size=batch_size, padding_side=padding_side,
                            bucket=bucket,
                            progress=None if progress is None else (lambda f, m: progress(0.5 + 0.5 * f, f"BLOOD {m}")))
    return OODFeatures(prompts, layers, last, mean, head_in, lens_top, lens_lse, final_top, final_lse,
                       loglik, counts, vim_origin(W, b).astype(np.float32), int(ad.vocab_size), blood)


def blood_norms(lm: LoadedModel, prompts: Sequence[str], *, n_draws: int = 50, batch_size: int = 8, seed: int = 0,
                exact: bool = False, padding_side: str = "right", bucket: bool = True,
                progress: Progress = None) -> np.ndarray:
    """BLOOD's per-block ||J_l||_F^2 [N, n_layers], J_l = d h_{l+1}[last] / d h_l[last] (same token, others fixed).

    Every block input is replaced by a detached leaf, so one backward pass of sum_l v_l . h_{l+1}[last] gives
    J_l^T v_l for all blocks at once; E ||J^T v||^2 = ||J||_F^2 for v ~ N(0, I) (n_draws draws, seeded), or
    exactly with v running over the d basis vectors when ``exact``. Prompt i draws from its own generator seeded
    with (seed, i), so its estimate does not depend on the batching (``bucket``: similar lengths batched together).
    """
    ad = lm.adapter
    L, d, n = ad.n_layers, ad.d_model, len(prompts)
    if n_draws < 1 and not exact:
        raise InputError(f"BLOOD needs at least one random draw, got {n_draws}.")
    out = np.zeros((n, L), np.float64)
    n_parts, done = n_batches(n, batch_size), 0
    for ci, (sl, batch) in enumerate(bucketed(lm.tokenizer, prompts, batch_size, padding_side=padding_side,
                                              max_length=lm.context_length, sort=bucket)):
        gens = [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, int(i)]).generate_state(1)[0]))
                for i in sl]
        last_idx = batch.last_index().to(lm.device)
        rows = torch.arange(last_idx.shape[0], device=lm.device)
        leaves: dict[int, torch.Tensor] = {}
        outs: dict[int, torch.Tensor] = {}

        def hook(l: int, outs: dict = outs, leaves: dict = leaves, rows: torch.Tensor = rows,
                 last_idx: torch.Tensor = last_idx) -> Callable[[torch.Tensor], torch.Tensor | None]:
            def fn(h: torch.Tensor) -> torch.Tensor | None:
                if l >= 1:
                    outs[l] = h[rows, last_idx].float()
                if l == L:
                    return None
                leaf = h.detach().requires_grad_(True)
                leaves[l] = leaf
                return leaf
            return fn

        run(lm, batch, [residual_hook(ad, l, hook(l)) for l in range(L + 1)], grad=True)
        draws = d if exact else n_draws
        acc = torch.zeros(len(rows), L, device=lm.device, dtype=torch.float64)
        for k in range(draws):
            if exact:
                v = torch.zeros(len(rows), L, d)
                v[:, :, k] = 1.0
            else:
                v = torch.stack([torch.randn(L, d, generator=g) for g in gens])  # [B, L, d], row i from its own stream
            vs = [v[:, l].to(lm.device) for l in range(L)]
            total = cast(torch.Tensor, sum((outs[l + 1] * vs[l]).sum() for l in range(L)))  # L >= 1 blocks
            grads = torch.autograd.grad(total, [leaves[l] for l in range(L)], retain_graph=k < draws - 1)
            for l, g in enumerate(grads):
                acc[:, l] += g[rows, last_idx].double().pow(2).sum(dim=-1)
        out[sl] = (acc / (1 if exact else draws)).cpu().numpy()
        done += len(sl)
        if progress is not None:
            progress((ci + 1) / n_parts, f"{done:,}/{n:,} prompts")
    return out


# ------------------------------------------------------------------------------------------ OOD features
def short_prompts_error(prompts: Sequence[str], lengths: Sequence[int]) -> InputError | None:
    """extract_features' error for prompts of a single token (nothing predicted), or None."""
    short = np.flatnonzero(np.asarray(lengths) < 2)
    if not short.size:
        return None
    return InputError(f"{plural(short.size, 'prompt')} {verb(short.size)} a single token, so no token is predicted and "
                      f"the mean log-likelihood is undefined (prompt {int(short[0]) + 1}: {prompts[short[0]]!r}). "
                      "Use prompts of at least one word.")


def extract_features_sharded(backend: Backend, lm: Any, prompts: tuple[str, ...], *, layers: tuple[int, ...],
                             batch_size: int, top_k: int, lens_top_k: int, padding_side: str, bucket: bool,
                             progress: Progress = None) -> Any:
    """extract_features (without BLOOD) on the backend's shards, rows back at their input positions."""
    lengths = [len(r) for r in token_rows(lm.tokenizer, prompts, max_length=lm.context_length)]
    err = short_prompts_error(prompts, lengths)
    if err is not None:
        raise err
    plan = shard_plan(backend, lm, length_batches(lengths, batch_size, sort=bucket))
    shards = [(([prompts[i] for i in idx],), dict(layers=layers, batch_size=batch_size, top_k=top_k,
                                                 lens_top_k=lens_top_k, padding_side=padding_side, bucket=False))
              for idx in plan]
    parts = backend.map_shards(lm, "analysis.ood.features:extract_features", shards, [len(i) for i in plan], progress)
    n, p0 = len(prompts), parts[0]
    merged = {}
    for name, axis in (("last", 1), ("mean", 1), ("head_in", 1), ("lens_top", 1), ("lens_lse", 1), ("final_top", 0),
                       ("final_lse", 0), ("mean_loglik", 0), ("n_predicted", 0)):
        ref = getattr(p0, name)
        shape = list(ref.shape)
        shape[axis] = n
        arr = np.zeros(shape, ref.dtype)
        for idx, part in zip(plan, parts, strict=True):
            if axis:
                arr[:, idx] = getattr(part, name)
            else:
                arr[idx] = getattr(part, name)
        merged[name] = arr
    return OODFeatures(tuple(prompts), tuple(layers), vim_origin=p0.vim_origin, vocab_size=p0.vocab_size, blood=None,
                       **merged)
