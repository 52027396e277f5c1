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
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from analysis.architectures import NORM_LAYERNORM, Adapter
from analysis.batching import Batch, chunks, encode
from analysis.errors import InputError, UnsupportedArchitectureError
from analysis.forward import run
from analysis.hooks import HookSpec, capture, input_hook, output_hook, residual_hook
from analysis.loading import LoadedModel
from analysis.readout import bias_term, direct_logit_attribution, frozen_norm, norm_scale, unembed

Progress = Callable[[float, str], None]
VIEWS = ("target", "competitor", "difference")
BATCH_SIZE = 8
SOURCE_IMP_LIMIT = 8192  # head x source importances are computed when L * H * T is at most this (auto mode)
CAPTURE_BUDGET = 512 * 2**20  # bytes of captured activations per forward pass (prompts are batched below it)
IMP_GEMM_BYTES = 64 * 2**20  # importances: one [rows, V] fp32 logits block per unembedding GEMM (bounds memory)
IMP_BLOCK_BYTES = 8 * 2**20  # importances: rows per log-softmax pass, a block that stays in cache

# Where each architecture's value vectors live: (module inside a block, its output [B, T, X] -> v [B, T, n_kv, hd]).
ValueFn = Callable[[torch.Tensor, int, int], torch.Tensor]


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


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Attribution:
    """Contributions at the final position T to one readout direction (target, competitor or their difference).

    Logit units (pre-cap, frozen final scale) unless the name starts with imp_ (nats of log-probability).
    L = blocks, H = query heads, T = prompt tokens.
    """

    direction: str
    logit: float  # the model's pre-cap logit (difference) at T
    bias: float  # part no component owns: u . beta_final + b_U
    embed: float  # DLA of the embedding output at T
    attn: np.ndarray  # [L] DLA of each block's attention write at T (includes the o_proj bias)
    mlp: np.ndarray  # [L] DLA of each block's MLP write at T
    attn_bias: np.ndarray  # [L] DLA of the o_proj bias (0 where there is none)
    heads: np.ndarray  # [L, H] DLA of each head's write at T (sum_h + attn_bias = attn)
    sources: np.ndarray  # [L, H, T] DLA of head h's write into T coming from source p (sum_p = heads)
    attn_at_pos: np.ndarray  # [L, T] NOT additive: DLA of the attention write at p through T's readout
    mlp_at_pos: np.ndarray  # [L, T] NOT additive: DLA of the MLP write at p through T's readout
    imp_attn: np.ndarray  # [L] Imp(attention write | block input)
    imp_mlp: np.ndarray  # [L] Imp(MLP write | mid-block residual)
    imp_heads: np.ndarray  # [L, H] Imp(head write | block input)
    imp_sources: np.ndarray | None  # [L, H, T] Imp(head x source write | block input), None when skipped
    imp_total: float  # log p(final) - log p(embedding), both through the frozen readout (= sum of imp_attn + imp_mlp)

    @property
    def attn_grid(self) -> np.ndarray:
        """[L, T] attention contribution from source p into T at layer l (rows sum to attn - attn_bias)."""
        return self.sources.sum(axis=1)

    @property
    def total(self) -> float:
        """embed + all sublayers + bias: equals ``logit`` (the decomposition identity)."""
        return float(self.embed + self.attn.sum() + self.mlp.sum() + self.bias)


@dataclass(frozen=True)
class FlowResult:
    """The logit flow of one prompt at its final position (see the module docstring for definitions)."""

    prompt: str
    tokens: tuple[str, ...]  # [T] token texts
    token_ids: tuple[int, ...]
    target: str
    target_id: int
    competitor: str | None
    competitor_id: int | None
    top_token: str  # the model's own top-1 at T
    target_logprob: float  # log p(target) at T from the model
    target_rank: int  # 1 = the model's top-1
    sigma: float  # the frozen final-norm scale at T
    n_layers: int
    n_heads: int
    model_type: str
    notes: tuple[str, ...]
    checks: dict[str, float]  # relative errors of the identities (see check_names)
    by_view: dict[str, Attribution] = field(repr=False)

    def view(self, name: str = "target") -> Attribution:
        """The Attribution for 'target', 'competitor' or 'difference' (the last two need a competitor)."""
        if name not in self.by_view:
            raise InputError(f"The '{name}' view needs a competing token; this prompt has none.")
        return self.by_view[name]

    @property
    def views(self) -> tuple[str, ...]:
        """The views this result has."""
        return tuple(v for v in VIEWS if v in self.by_view)


@dataclass(frozen=True)
class FlowSetResult:
    """Logit flow over a prompt set: one FlowResult per prompt plus averages."""

    results: tuple[FlowResult, ...]
    notes: tuple[str, ...]

    def members(self, view: str) -> list[Attribution]:
        """The per-prompt Attributions that have ``view``."""
        return [r.by_view[view] for r in self.results if view in r.by_view]

    def mean(self, view: str, name: str) -> np.ndarray:
        """Mean over prompts of a per-layer field (attn, mlp, attn_bias, heads, imp_attn, imp_mlp, imp_heads)."""
        items = self.members(view)
        if not items:
            raise InputError(f"No prompt in this set has a '{view}' view (it needs a competing token).")
        return np.mean([np.asarray(getattr(a, name), dtype=np.float64) for a in items], axis=0)

    def aligned(self, view: str, name: str, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean over prompts of a [L, T] grid aligned at the final token: ([L, K] mean, [K] prompt counts).

        Column K-1 is the final position T, column K-1-j is T-j. ``name``: attn_grid, attn_at_pos, mlp_at_pos.
        """
        items = self.members(view)
        if not items:
            raise InputError(f"No prompt in this set has a '{view}' view (it needs a competing token).")
        grids = [np.asarray(getattr(a, name), dtype=np.float64) for a in items]
        K = width or max(g.shape[1] for g in grids)
        L = grids[0].shape[0]
        total = np.zeros((L, K))
        count = np.zeros(K)
        for g in grids:
            k = min(K, g.shape[1])
            total[:, K - k:] += g[:, g.shape[1] - k:]
            count[K - k:] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return mean, count

    def table(self) -> list[dict[str, Any]]:
        """One row per prompt: texts, logits, sublayer totals and the largest head and source."""
        rows = []
        for i, r in enumerate(self.results):
            a = r.view("target")
            l, h = np.unravel_index(int(np.argmax(np.abs(a.heads))), a.heads.shape)
            grid = a.attn_grid
            gl, gp = np.unravel_index(int(np.argmax(np.abs(grid))), grid.shape)
            row: dict[str, Any] = {
                "prompt": r.prompt, "target": r.target, "competitor": r.competitor, "top_token": r.top_token,
                "target_rank": r.target_rank, "target_logprob": r.target_logprob, "target_logit": a.logit,
                "embed": a.embed, "attention_total": float(a.attn.sum()), "mlp_total": float(a.mlp.sum()),
                "bias": a.bias, "top_head": f"L{int(l)}H{int(h)}", "top_head_dla": float(a.heads[l, h]),
                "top_source": f"block {int(gl)} <- {r.tokens[gp]!r} (pos {int(gp)})",
                "top_source_dla": float(grid[gl, gp]),
            }
            if "difference" in r.by_view:
                d = r.by_view["difference"]
                row.update({"logit_difference": d.logit, "diff_attention_total": float(d.attn.sum()),
                            "diff_mlp_total": float(d.mlp.sum())})
            row["max_identity_error"] = max(r.checks.values()) if r.checks else 0.0
            row["index"] = i
            rows.append(row)
        return rows


# ------------------------------------------------------------------------------------------ tokens
def _decode(tokenizer: Any, token_id: int) -> str:
    try:
        return tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    except TypeError:
        return tokenizer.decode([int(token_id)])


def resolve_token(tokenizer: Any, text: str, what: str = "target") -> tuple[int, str | None]:
    """(token id, note or None) for a target/competitor text: its first token (note if it has more); '#123' = token id."""
    if text is None or text == "":
        raise InputError(f"The {what} is empty; type a token (with its leading space, e.g. ' Paris').")
    stripped = text.strip()
    if stripped.startswith("#") and stripped[1:].isdigit():
        tid = int(stripped[1:])
        vocab = int(getattr(tokenizer, "vocab_size", 0) or 0)
        if vocab and not 0 <= tid < vocab:
            raise InputError(f"The {what} {text!r} is not a token id of this model (0..{vocab - 1}).")
        return tid, None
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise InputError(f"The {what} {text!r} does not tokenize to anything; type a visible token.")
    if len(ids) == 1:
        return int(ids[0]), None
    parts = " + ".join(repr(_decode(tokenizer, i)) for i in ids)
    first = _decode(tokenizer, ids[0])
    return int(ids[0]), (f"The {what} {text!r} is {len(ids)} tokens ({parts}); the analysis uses its first token "
                         f"{first!r}.")


# ------------------------------------------------------------------------------------------ capture
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


def _value_site(ad: Adapter) -> tuple[str, ValueFn]:
    if ad.model_type not in VALUE_SITES:
        raise UnsupportedArchitectureError(f"Logit flow does not know where '{ad.model_type}' keeps its value vectors.")
    return VALUE_SITES[ad.model_type]


def _o_proj_weight(ad: Adapter, layer: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W_O as [d, H*hd] (fp32) and its bias [d] or None."""
    mod = ad.o_proj(layer)
    w = mod.weight.float()
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
    gain = 1.0 + mod.weight.float().to(a_T.device)
    scale = torch.sqrt(a_T.float().pow(2).mean() + eps)
    return lambda x: gain * x / scale


def _gather_last(last: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(t: torch.Tensor) -> torch.Tensor:
        return t[torch.arange(t.shape[0], device=t.device), last.to(t.device)].detach().float().clone()
    return fn


def _capture_hooks(ad: Adapter, store: dict, bt: tuple[int, int], last: torch.Tensor) -> list[HookSpec]:
    """Hooks for one pass: residuals at T, full sublayer writes, o_proj input/output at T, probabilities, values."""
    at_T = _gather_last(last)
    full = lambda t: t.detach().float().clone()  # noqa: E731
    site, _ = _value_site(ad)
    hooks: list[HookSpec] = [residual_hook(ad, l, capture(store, ("h", l), at_T)) for l in range(ad.n_layers + 1)]
    for i in range(ad.n_layers):
        hooks.append(output_hook(ad.attn_write(i), capture(store, ("attn", i), full), bt))
        hooks.append(output_hook(ad.mlp_write(i), capture(store, ("mlp", i), full), bt))
        hooks.append(input_hook(ad.o_proj(i), capture(store, ("z", i), at_T), bt))
        hooks.append(output_hook(ad.o_proj(i), capture(store, ("o", i), at_T), bt))
        hooks.append(output_hook(ad.block_part(i, site), capture(store, ("v", i), full), bt))

        def probs(mod: torch.nn.Module, args: tuple, out: Any, i: int = i) -> None:
            w = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
            if w is None:
                raise UnsupportedArchitectureError(
                    "The attention module returned no attention probabilities even in eager mode; head x source "
                    "attribution is not available for this model.")
            idx = last.to(w.device)
            store[("a", i)] = w[torch.arange(w.shape[0], device=w.device), :, idx].detach().float().clone()
        hooks.append((ad.block_part(i, ad.row.attn), "forward", probs))
    return hooks


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
            kw = {} if self._lsm is None else {"out": self._lsm[: zb.shape[0]]}
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


@dataclass
class _Row:
    """Everything one prompt's attribution needs, in fp32 on the CPU, trimmed to its T real tokens."""

    h: list[torch.Tensor]  # L+1 of [d] at T
    attn: list[torch.Tensor]  # L of [T, d]
    mlp: list[torch.Tensor]
    z: list[torch.Tensor]  # L of [H*hd] at T
    o: list[torch.Tensor]  # L of [d] o_proj output at T
    a: list[torch.Tensor]  # L of [H, T]
    v: list[torch.Tensor]  # L of [T, n_kv, hd]
    logits: torch.Tensor  # [V] the model's logits at T


def _head_parts(ad: Adapter, row: _Row, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Callable]:
    """(head writes [H, d], head x source writes [H, T, d], bias write [d] or None, post map) at T, as written."""
    H, hd = ad.n_heads, ad.head_dim
    W, b = _o_proj_weight(ad, layer)
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


def _rel(err: float, scale: float) -> float:
    return float(err) / max(1.0, float(scale))


def _attribute_all(ad: Adapter, row: _Row, directions: Sequence[tuple[str, int, int | None]],
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
        hw, sw, bw, _ = _head_parts(ad, row, i)
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
                   batch_size: int = BATCH_SIZE, progress: Progress | None = None) -> FlowSetResult:
    """Logit flow of every prompt (target: text -> first token, None -> the model's top-1; competitor optional)."""
    if not prompts:
        raise InputError("No prompts to analyse.")
    n = len(prompts)
    targets = list(targets) if targets is not None else [None] * n
    competitors = list(competitors) if competitors is not None else [None] * n
    if len(targets) != n or len(competitors) != n:
        raise InputError("Give one target and one competitor (or None) per prompt.")
    ad = lm.adapter
    _value_site(ad)
    tok = lm.tokenizer
    results: list[FlowResult] = []
    set_notes: list[str] = []
    for sl in _memory_chunks(lm, prompts, batch_size):
        if progress:
            progress(sl.start / n, f"prompts {sl.start + 1}-{sl.stop} of {n}")
        batch = encode(tok, list(prompts[sl]), padding_side="right", max_length=lm.context_length)
        results.extend(_run_batch(lm, batch, list(prompts[sl]), targets[sl], competitors[sl], source_importance,
                                  offset=sl.start))
    if progress:
        progress(1.0, "done")
    n_multi = sum(1 for r in results if any("tokens (" in x for x in r.notes))
    if n_multi:
        set_notes.append(f"{n_multi} prompt(s) have a multi-token target or competitor; their first token is used.")
    return FlowSetResult(tuple(results), tuple(set_notes))


def _memory_chunks(lm: LoadedModel, prompts: Sequence[str], batch_size: int) -> list[slice]:
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
               source_importance: bool | None = None, progress: Progress | None = None) -> FlowResult:
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
        logits_all = run(lm, batch, _capture_hooks(ad, store, (B, Tmax), last))
    logits_T = logits_all[torch.arange(B, device=logits_all.device), last.to(logits_all.device)].cpu()  # [B, V]
    del logits_all  # [B, T, V]: only the final positions are read
    _, vfn = _value_site(ad)
    out = []
    for b in range(B):
        T = int(last[b]) + 1
        logits = logits_T[b]
        row = _Row(
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


def _one(lm: LoadedModel, row: _Row, prompt: str, ids: list[int], target: str | None, competitor: str | None,
         source_importance: bool | None) -> FlowResult:
    ad = lm.adapter
    tok = lm.tokenizer
    L, H, T = ad.n_layers, ad.n_heads, len(ids)
    notes: list[str] = []
    top = int(row.logits.argmax())
    if target is None or target == "":
        t = top
        notes.append(f"Target = the model's top-1 prediction {_decode(tok, t)!r}.")
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
        prompt=prompt, tokens=tuple(_decode(tok, i) for i in ids), token_ids=tuple(int(i) for i in ids),
        target=_decode(tok, t), target_id=t, competitor=_decode(tok, c) if c is not None else None, competitor_id=c,
        top_token=_decode(tok, top), target_logprob=float(lp[t]), target_rank=int((row.logits > row.logits[t]).sum()) + 1,
        sigma=sigma, n_layers=L, n_heads=H, model_type=ad.model_type, notes=tuple(notes), checks=checks,
        by_view=by_view)


def failed_checks(result: FlowResult, tol: float) -> list[str]:
    """Human-readable names of the identities that exceed ``tol`` on this result (empty when all hold)."""
    return [f"{CHECK_NAMES[k]} (rel. err {v:.1e})" for k, v in result.checks.items() if v > tol]
