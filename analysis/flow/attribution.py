"""Logit flow: which layers, heads and source positions build the prediction at the final position.

Everything is read out at the prompt's final position T with the final norm's scale frozen at its
clean value sigma (methods.md section 2), which makes the readout linear, so contributions add up:

* Sublayer level (additive): embed + sum_l (attn_l + mlp_l) + bias term = the model's pre-cap logit
  of the target (or the logit difference target - competitor), exactly.
* Head level (additive): attn_l at T = sum_h W_O^h z_h + b_O. Heads are query heads (GQA models share
  a key/value head between several query heads). Gemma-2 writes attention through
  post_attention_layernorm: its scale is frozen at the clean value too (the norm becomes linear), so
  the heads still sum to the written attention output exactly.
* Head x source position (additive): W_O^h z_h at T = sum_p a^h_{T,p} W_O^h v^h_p, with a the
  attention probabilities (the model runs with eager attention for this pass) and v^h_p the value
  vector of source p (read from the value projection's output: v_proj, or the value slice of the fused
  c_attn / query_key_value / qkv_proj). The attention grid cell (l, p) = sum over heads of the
  contribution from source p into T at layer l; a grid row sums to the layer's attention DLA minus
  the o_proj bias (shown as its own term). The route is verified on every pass: z at T must equal
  sum_p a_p v_p (``checks["value_route"]``).
* "At position" grids (NOT additive): the attention / MLP write at position p, read through the
  final position's frozen readout. They say what the sublayer at p writes toward the target, not how
  much of it reaches T.
* Log-probability importance Imp(v | r) = log softmax(g(r + v))_t - log softmax(g(r))_t with
  g = frozen final norm + unembedding + the model's own soft-cap, at T. Attention and heads use
  r = the block input; the MLP uses r = block input + attention write (the mid-block residual; for
  parallel-residual blocks the same sum, so attention and MLP importances telescope). In the
  difference view Imp is the change in log-odds of target over competitor.

Over a prompt set each prompt gets its own result; layer and head views are averaged, position grids
are averaged after aligning prompts at their final token (columns count back from T).

Where the parts live: the result types in analysis.flow.results, token resolution in analysis.flow.tokens, the
forward-pass capture (value sites, hooks) in analysis.flow.capture and the head / head x source writes in
analysis.flow.heads; this module keeps the readout maths, the log-probability importances and the entry points.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analysis.core.architectures import NORM_LAYERNORM, Adapter
from analysis.core.batching import Batch, chunks, encode
from analysis.core.errors import InputError
from analysis.core.forward import run
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.core.readout import bias_term, direct_logit_attribution, frozen_norm, norm_scale, unembed
from analysis.core.tokens import decode
from analysis.core.wording import plural, verb
from analysis.flow.capture import CapturedRow, capture_hooks, eager_attention, value_site
from analysis.flow.heads import head_parts
from analysis.flow.results import Attribution, FlowResult, FlowSetResult
from analysis.flow.tokens import resolve_token

BATCH_SIZE = 8
SOURCE_IMP_LIMIT = 8192  # head x source importances are computed when L * H * T is at most this (auto mode)
CAPTURE_BUDGET = 512 * 2**20  # bytes of captured activations per forward pass (prompts are batched below it)
IMP_GEMM_BYTES = 64 * 2**20  # importances: one [rows, V] fp32 logits block per unembedding GEMM (bounds memory)
IMP_BLOCK_BYTES = 8 * 2**20  # importances: rows per log-softmax pass, a block that stays in cache


# ------------------------------------------------------------------------------------------ maths
def _readout_vector(ad: Adapter, u: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """r with DLA(x) = x . r for the frozen readout: gain * u / sigma, mean-removed for LayerNorm: [d]."""
    fn = ad.final_norm
    r = fn.gain.to(u.device) * u / sigma
    return r - r.mean() if fn.kind == NORM_LAYERNORM else r


def imp_chunk_rows(vocab_size: int) -> int:
    """Residual rows per unembedding GEMM of the importances: a [rows, V] fp32 block of ~IMP_GEMM_BYTES, 16..4096."""
    return int(min(4096, max(16, IMP_GEMM_BYTES // (4 * max(vocab_size, 1)))))


class _LogProbs:
    """log softmax(g(x)) at a few tokens for residual rows x [n, d] added in any number of pieces (fp32, CPU).

    g = frozen final norm (scale sigma) + unembedding + the model's soft-cap. Rows are buffered and scored
    in chunks of ``chunk`` rows: one GEMM with W_U per chunk, then one log-softmax normaliser per row in
    cache-sized blocks, so memory is one [chunk, V] block however many rows come in. ``add`` returns the slice of
    ``result()`` [N, len(tokens)] that holds its rows. With fp32 weights the logits and log-softmax blocks are
    written into two buffers reused chunk after chunk: a fresh multi-MB tensor per chunk fragments the heap
    (the peak RSS grew with the number of chunks) and costs page faults.
    """

    def __init__(self, ad: Adapter, sigma: torch.Tensor, tokens: Sequence[int], chunk: int | None = None):
        self.ad, self.sigma = ad, sigma
        self.tokens = torch.tensor(list(tokens), dtype=torch.long)
        self.chunk = max(1, int(chunk or imp_chunk_rows(ad.vocab_size)))
        self.block = max(1, min(self.chunk, IMP_BLOCK_BYTES // (4 * max(ad.vocab_size, 1))))
        self.n = 0
        self._pending: list[torch.Tensor] = []
        self._n_pending = 0
        self._done: list[torch.Tensor] = []
        self._z: torch.Tensor | None = None  # [chunk, V] logits buffer (fp32 weights only)
        self._lsm: torch.Tensor | None = None  # [block, V] log-softmax buffer

    def add(self, x: torch.Tensor) -> slice:
        """Queue rows x [n, d]; scores whole chunks as soon as they are full."""
        sl = slice(self.n, self.n + x.shape[0])
        self.n += x.shape[0]
        self._pending.append(x)
        self._n_pending += x.shape[0]
        if self._n_pending >= self.chunk:
            self._flush(whole_chunks_only=True)
        return sl

    def _flush(self, whole_chunks_only: bool) -> None:
        x = torch.cat(self._pending) if len(self._pending) > 1 else self._pending[0]
        stop = (x.shape[0] // self.chunk) * self.chunk if whole_chunks_only else x.shape[0]
        for sl in chunks(stop, self.chunk):
            self._done.append(self._score(x[sl]))
        rest = x[stop:]
        self._pending = [rest] if rest.shape[0] else []
        self._n_pending = rest.shape[0]

    @torch.no_grad()
    def _score(self, x: torch.Tensor) -> torch.Tensor:
        ad, W, n = self.ad, self.ad.W_U, x.shape[0]
        xn = frozen_norm(ad.final_norm, x, self.sigma, with_bias=True)
        if W.dtype == torch.float32:  # = unembed(ad, xn), written into the reused buffer
            if self._z is None:
                self._z = torch.empty(self.chunk, W.shape[0], device=W.device)
                self._lsm = torch.empty(self.block, W.shape[0], device=W.device)
            z = torch.mm(xn.to(W.device), W.T, out=self._z[:n])
            if ad.b_U is not None:
                z.add_(ad.b_U)
        else:
            z = unembed(ad, xn)  # [n, V] pre-cap, product in the weights' dtype, returned in fp32
        tok = self.tokens.to(z.device)
        out = torch.empty(n, len(self.tokens))
        for sl in chunks(n, self.block):  # log_softmax: one fused kernel, ~2-3x faster than logsumexp on CPU
            zb = z[sl]
            if ad.softcap:  # softcap(): c * tanh(z / c), in place
                zb.div_(ad.softcap).tanh_().mul_(ad.softcap)
            kw: dict[str, Any] = {} if self._lsm is None else {"out": self._lsm[: zb.shape[0]]}
            out[sl] = torch.log_softmax(zb, dim=-1, **kw)[:, tok].cpu()
        return out

    def result(self) -> torch.Tensor:
        """[N, len(tokens)] log-probabilities of every row added so far, in the order added."""
        if self._n_pending:
            self._flush(whole_chunks_only=False)
        if len(self._done) > 1:
            self._done = [torch.cat(self._done)]
        return self._done[0] if self._done else torch.zeros(0, len(self.tokens))


def importance(ad: Adapter, r: torch.Tensor, vs: torch.Tensor, sigma: torch.Tensor, t: int, c: int | None) -> torch.Tensor:
    """Imp(v | r) at T for each row of vs [N, d] (frozen scale sigma; log-odds change of t over c if c given): [N]."""
    lp = _LogProbs(ad, sigma, [t] if c is None else [t, c])
    base, rows = lp.add(r[None]), lp.add(r[None] + vs)
    out = lp.result()
    score = out[:, 0] - (out[:, 1] if c is not None else 0.0)
    return score[rows] - score[base]


def _rel(err: float | torch.Tensor, scale: float | torch.Tensor) -> float:
    return float(err) / max(1.0, float(scale))


def _attribute_all(ad: Adapter, row: CapturedRow, directions: Sequence[tuple[str, int, int | None]],
                   source_imp: bool) -> tuple[dict[str, Attribution], dict[str, float]]:
    """Attributions for each (name, t, c) readout direction, and the identity checks, in one pass over the layers.

    Head x source writes [H, T, d] exist for one layer at a time only; the importance rows (r and r + v) queue
    in one _LogProbs pass shared by every direction, which scores them a chunk of rows at a time.
    """
    L, H = ad.n_layers, ad.n_heads
    T = row.attn[0].shape[0]
    sigma = norm_scale(ad.final_norm, row.h[L])
    comps = torch.stack([row.h[0]] + [x[T - 1] for i in range(L) for x in (row.attn[i], row.mlp[i])])
    precap = unembed(ad, frozen_norm(ad.final_norm, row.h[L], sigma, with_bias=True))
    acc: dict[str, dict[str, Any]] = {}
    for name, t, c in directions:
        u = (ad.W_U[t].float() - (ad.W_U[c].float() if c is not None else 0.0)).to(sigma.device)
        acc[name] = dict(
            t=t, c=c, rvec=_readout_vector(ad, u, sigma), dla=direct_logit_attribution(ad, comps, sigma, t, c),
            attn_bias=np.zeros(L), heads=np.zeros((L, H)), sources=np.zeros((L, H, T)), attn_pos=np.zeros((L, T)),
            mlp_pos=np.zeros((L, T)))
    # Importances: every residual row (r, r + v) of every layer goes through ONE log-prob pass shared by all
    # directions (they read different tokens of the same log-softmax), in GEMM-sized chunks of rows.
    tokens = list(dict.fromkeys(tok for _, t, c in directions for tok in (t, c) if tok is not None))
    lp = _LogProbs(ad, sigma, tokens)
    slots: list[tuple[slice, slice, slice, slice, slice | None]] = []
    route = heads_err = src_err = 0.0
    for i in range(L):
        hw, sw, bw, _ = head_parts(ad, row, i)
        r_in, a_T, m_T = row.h[i], row.attn[i][T - 1], row.mlp[i][T - 1]
        for x in acc.values():
            rvec = x["rvec"]
            x["heads"][i] = (hw @ rvec).numpy()
            x["sources"][i] = (sw @ rvec).numpy()
            if bw is not None:
                x["attn_bias"][i] = float(bw @ rvec)
            x["attn_pos"][i] = (row.attn[i] @ rvec).numpy()
            x["mlp_pos"][i] = (row.mlp[i] @ rvec).numpy()
        mid = r_in + a_T  # the attention row and the MLP's baseline (the mid-block residual)
        slots.append((lp.add(r_in[None]), lp.add(mid[None]), lp.add(r_in[None] + hw), lp.add(mid[None] + m_T[None]),
                      lp.add(r_in[None] + sw.reshape(H * T, -1)) if source_imp else None))
        # identities of this layer (in the residual space, independent of the readout direction)
        v_rep = row.v[i].repeat_interleave(H // row.v[i].shape[1], dim=1)
        z_rec = torch.einsum("hp,phk->hk", row.a[i], v_rep).reshape(-1)
        route = max(route, _rel((z_rec - row.z[i]).abs().max(), row.z[i].abs().max()))
        total = hw.sum(0) + (bw if bw is not None else 0.0)
        heads_err = max(heads_err, _rel((total - a_T).abs().max(), a_T.abs().max()))
        src_err = max(src_err, _rel((sw.sum(1) - hw).abs().max(), hw.abs().max()))
        del hw, sw, bw
    total_row = lp.add(row.h[0][None] + (row.h[L] - row.h[0])[None])
    logp = lp.result()  # [rows, tokens]
    col = {tok: j for j, tok in enumerate(tokens)}
    for x in acc.values():
        t, c = x["t"], x["c"]
        score = (logp[:, col[t]] - (logp[:, col[c]] if c is not None else 0.0)).numpy()  # [rows] fp32
        x["imp_attn"] = np.array([score[s[1]][0] - score[s[0]][0] for s in slots], dtype=np.float64)
        x["imp_mlp"] = np.array([score[s[3]][0] - score[s[1]][0] for s in slots], dtype=np.float64)
        x["imp_heads"] = np.stack([score[s[2]] - score[s[0]] for s in slots]).astype(np.float64)
        x["imp_sources"] = (np.stack([(score[s[4]] - score[s[0]]).reshape(H, T) for s in slots]).astype(np.float64)
                            if source_imp else None)
        x["imp_total"] = float(score[total_row][0] - score[slots[0][0]][0])
    out: dict[str, Attribution] = {}
    for name, x in acc.items():
        t, c, dla = x["t"], x["c"], x["dla"]
        out[name] = Attribution(
            direction=name, logit=float(precap[t] - (precap[c] if c is not None else 0.0)), bias=bias_term(ad, t, c),
            embed=float(dla[0]), attn=dla[1::2].numpy().astype(np.float64), mlp=dla[2::2].numpy().astype(np.float64),
            attn_bias=x["attn_bias"], heads=x["heads"], sources=x["sources"], attn_at_pos=x["attn_pos"],
            mlp_at_pos=x["mlp_pos"], imp_attn=x["imp_attn"], imp_mlp=x["imp_mlp"], imp_heads=x["imp_heads"],
            imp_sources=x["imp_sources"], imp_total=x["imp_total"])
    att = out[directions[0][0]]
    resid = row.h[0] + sum(row.attn[i][T - 1] + row.mlp[i][T - 1] for i in range(L))
    checks = {
        "decomposition": _rel((resid - row.h[L]).abs().max(), row.h[L].abs().max()),
        "dla_sum": abs(att.total - att.logit) / max(1.0, abs(att.logit)),
        "value_route": route, "heads_sum": heads_err, "sources_sum": src_err,
        "grid_rows": float(np.max(np.abs(att.attn_grid.sum(1) + att.attn_bias - att.attn)))
        / max(1.0, float(np.abs(att.attn).max())),
    }
    return out, checks


CHECK_NAMES = {
    "decomposition": "embedding + sublayer writes = final residual at T",
    "dla_sum": "sum of contributions + bias = pre-cap logit",
    "value_route": "z at T = sum_p a_p v_p (attention probabilities and value vectors read correctly)",
    "heads_sum": "heads + o_proj bias = attention write",
    "sources_sum": "source positions sum to each head's write",
    "grid_rows": "attention grid rows + o_proj bias = per-layer attention DLA",
}


def tolerance(lm: LoadedModel) -> float:
    """Relative tolerance for the identities: tight in fp32, loose in half precision."""
    return 1e-4 if lm.dtype == torch.float32 else 3e-2


# ------------------------------------------------------------------------------------------ public API
def logit_flow_set(lm: LoadedModel, prompts: Sequence[str], targets: Sequence[str | None] | None = None,
                   competitors: Sequence[str | None] | None = None, *, source_importance: bool | None = None,
                   batch_size: int = BATCH_SIZE, progress: Progress = None) -> FlowSetResult:
    """Logit flow of every prompt (target: text -> first token, None -> the model's top-1; competitor optional)."""
    if not prompts:
        raise InputError("No prompts to analyse.")
    n = len(prompts)
    targets = list(targets) if targets is not None else [None] * n
    competitors = list(competitors) if competitors is not None else [None] * n
    if len(targets) != n or len(competitors) != n:
        raise InputError("Give one target and one competitor (or None) per prompt.")
    ad = lm.adapter
    value_site(ad)
    tok = lm.tokenizer
    results: list[FlowResult] = []
    set_notes: list[str] = []
    for sl in memory_chunks(lm, prompts, batch_size):
        if progress:
            progress(sl.start / n, f"prompts {sl.start + 1}-{sl.stop} of {n}")
        batch = encode(tok, list(prompts[sl]), padding_side="right", max_length=lm.context_length)
        results.extend(_run_batch(lm, batch, list(prompts[sl]), targets[sl], competitors[sl], source_importance,
                                  offset=sl.start))
    if progress:
        progress(1.0, "done")
    n_multi = sum(1 for r in results if any("tokens (" in x for x in r.notes))
    if n_multi:
        set_notes.append(f"{plural(n_multi, 'prompt')} {verb(n_multi)} a multi-token target or competitor; "
                         "their first token is used.")
    return FlowSetResult(tuple(results), tuple(set_notes))


def memory_chunks(lm: LoadedModel, prompts: Sequence[str], batch_size: int) -> list[slice]:
    """Consecutive prompt slices of at most batch_size prompts whose captured activations fit CAPTURE_BUDGET bytes."""
    ad = lm.adapter
    per_token = ad.n_layers * 3 * ad.d_model * 4  # attention write, MLP write and value vectors, fp32
    lengths = [len(lm.tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    out, start, longest = [], 0, 0
    for i, n_tok in enumerate(lengths):
        new_longest = max(longest, n_tok)
        if i > start and ((i - start + 1) * new_longest * per_token > CAPTURE_BUDGET or i - start >= batch_size):
            out.append(slice(start, i))
            start, new_longest = i, n_tok
        longest = new_longest
    out.append(slice(start, len(prompts)))
    return out


def logit_flow(lm: LoadedModel, prompt: str, target: str | None = None, competitor: str | None = None, *,
               source_importance: bool | None = None, progress: Progress = None) -> FlowResult:
    """Logit flow of one prompt at its last position (see the module docstring for every definition)."""
    if not prompt:
        raise InputError("Type a prompt to analyse.")
    return logit_flow_set(lm, [prompt], [target], [competitor], source_importance=source_importance,
                          progress=progress).results[0]


def _run_batch(lm: LoadedModel, batch: Batch, prompts: list[str], targets: list, competitors: list,
               source_importance: bool | None, offset: int = 0) -> list[FlowResult]:
    ad = lm.adapter
    B, Tmax = batch.input_ids.shape
    last = batch.last_index()
    store: dict = {}
    with eager_attention(lm):
        logits_all = run(lm, batch, capture_hooks(ad, store, (B, Tmax), last))
    logits_T = logits_all[torch.arange(B, device=logits_all.device), last.to(logits_all.device)].cpu()  # [B, V]
    del logits_all  # [B, T, V]: only the final positions are read
    _, vfn = value_site(ad)
    out = []
    for b in range(B):
        T = int(last[b]) + 1
        logits = logits_T[b]
        row = CapturedRow(
            h=[store[("h", l)][b].cpu() for l in range(ad.n_layers + 1)],
            attn=[store[("attn", i)][b, :T].cpu() for i in range(ad.n_layers)],
            mlp=[store[("mlp", i)][b, :T].cpu() for i in range(ad.n_layers)],
            z=[store[("z", i)][b].cpu() for i in range(ad.n_layers)],
            o=[store[("o", i)][b].cpu() for i in range(ad.n_layers)],
            a=[store[("a", i)][b, :, :T].cpu() for i in range(ad.n_layers)],
            v=[vfn(store[("v", i)][b:b + 1, :T], ad.n_heads, ad.head_dim)[0].cpu() for i in range(ad.n_layers)],
            logits=logits,
        )
        try:
            out.append(_one(lm, row, prompts[b], batch.input_ids[b, :T].tolist(), targets[b], competitors[b],
                            source_importance))
        except InputError as err:
            if len(prompts) == 1 and offset == 0:
                raise
            raise InputError(f"Prompt {offset + b + 1}: {err}") from err
    return out


def _one(lm: LoadedModel, row: CapturedRow, prompt: str, ids: list[int], target: str | None, competitor: str | None,
         source_importance: bool | None) -> FlowResult:
    ad = lm.adapter
    tok = lm.tokenizer
    L, H, T = ad.n_layers, ad.n_heads, len(ids)
    notes: list[str] = []
    top = int(row.logits.argmax())
    if target is None or target == "":
        t = top
        notes.append(f"Target = the model's top-1 prediction {decode(tok, t)!r}.")
    else:
        t, note = resolve_token(tok, target, "target")
        if note:
            notes.append(note)
    if not 0 <= t < ad.vocab_size:
        raise InputError(f"The target token id {t} is outside this model's vocabulary (0..{ad.vocab_size - 1}).")
    c = None
    if competitor:
        c, note = resolve_token(tok, competitor, "competitor")
        if note:
            notes.append(note)
        if not 0 <= c < ad.vocab_size:
            raise InputError(f"The competitor token id {c} is outside this model's vocabulary (0..{ad.vocab_size - 1}).")
        if c == t:
            raise InputError(f"The competitor {competitor!r} is the same token as the target; pick a different one.")
    if ad.row.attn_write_is_post_norm:
        notes.append("Gemma-2 writes attention through post_attention_layernorm: its scale is frozen at the clean "
                     "value, so head and source contributions stay additive.")
    if ad.softcap:
        notes.append(f"Logits are soft-capped at {ad.softcap:g}: contributions add up to the pre-cap logit.")
    do_src = source_importance if source_importance is not None else L * H * T <= SOURCE_IMP_LIMIT
    if not do_src:
        notes.append("Head x source log-prob importances were skipped (too many cells); the DLA values are complete.")
    directions = [("target", t, None)] + ([("competitor", c, None), ("difference", t, c)] if c is not None else [])
    by_view, checks = _attribute_all(ad, row, directions, do_src)
    lp = torch.log_softmax(row.logits.float(), dim=-1)
    sigma = float(norm_scale(ad.final_norm, row.h[L]))
    return FlowResult(
        prompt=prompt, tokens=tuple(decode(tok, i) for i in ids), token_ids=tuple(int(i) for i in ids),
        target=decode(tok, t), target_id=t, competitor=decode(tok, c) if c is not None else None, competitor_id=c,
        top_token=decode(tok, top), target_logprob=float(lp[t]), target_rank=int((row.logits > row.logits[t]).sum()) + 1,
        sigma=sigma, n_layers=L, n_heads=H, model_type=ad.model_type, notes=tuple(notes), checks=checks,
        by_view=by_view)


def failed_checks(result: FlowResult, tol: float) -> list[str]:
    """Human-readable names of the identities that exceed ``tol`` on this result (empty when all hold)."""
    return [f"{CHECK_NAMES[k]} (rel. err {v:.1e})" for k, v in result.checks.items() if v > tol]
