"""Checkpoint logit shift (Cross-model Control, Wu et al. 2024): what changed between checkpoints A and B.

The same text runs through A and B, teacher-forced on a reference continuation (the prompt set's
``response``, or B's own greedy output of N tokens). Step t is the prediction of continuation token t
(step 0 is predicted from the last prompt token). Per step the shift is
S_t = log_softmax(z_B) - log_softmax(z_A) over B's vocabulary (the reference model's). Only reduced
views are kept: per step the top-N tokens by B's probability with their shifts, KL(B||A), and over
the set the tokens that gained and lost the most probability (over each step's top-N of A and of B).

Different tokenizers: A reads the same text with its own tokenizer; a step counts when A has a token
starting at the same character of the continuation; A's log-probs are read through the PM-MinED map
(B token -> A token; analysis.token_map); unmapped columns get shift 0 (methods.md section 5).
Shapes: T = continuation steps, N = top-N, L = blocks, V = B's vocabulary.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from analysis.batching import batch_from_ids, pad_token_id
from analysis.errors import IncompatibleModelsError, InputError, NumericalError
from analysis.forward import run
from analysis.loading import LoadedModel
from analysis.token_map import TokenMap, Vocab, build_token_map, same_tokenizer, vocab_of

Progress = Callable[[float, str], None] | None
REFERENCES = ("response", "greedy")


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class PromptShift:
    """One prompt's reduced shift.

    tokens [T]: the continuation tokens (B's tokenizer) predicted at each step; offsets [T]: their
    character offsets in ``continuation``; top_ids/top_shift/top_logp_a/top_logp_b [T, N]: per step
    B's top-N tokens sorted by shift (descending); top_tokens [T][N]; kl [T] = KL(B||A) in nats
    (NaN where A has no aligned step); logp_a/logp_b [T]: log-prob of the reference token.
    """

    prompt: str
    continuation: str
    tokens: tuple[str, ...]
    token_ids: np.ndarray
    offsets: np.ndarray
    top_ids: np.ndarray
    top_tokens: tuple[tuple[str, ...], ...]
    top_shift: np.ndarray
    top_logp_a: np.ndarray
    top_logp_b: np.ndarray
    kl: np.ndarray
    logp_a: np.ndarray
    logp_b: np.ndarray


@dataclass(frozen=True)
class TokenTotals:
    """Per-token shift over a set, over the steps where the token is in A's or B's top-N: ids [K] (B's
    vocabulary), tokens [K], count [K] (such steps), total [K] (sum of its shift S, nats), mean [K] = total / count,
    mass [K] (sum of p_B - p_A: probability moved onto the token). Sorted by mass, descending: the most promoted
    first, the most suppressed last. (Ranking by mass, not by log-ratio, keeps tail tokens whose tiny
    probabilities change by large factors from crowding out what B actually says more or less often.)"""

    ids: np.ndarray
    tokens: tuple[str, ...]
    count: np.ndarray
    total: np.ndarray
    mean: np.ndarray
    mass: np.ndarray

    def promoted(self, k: int = 20) -> "TokenTotals":
        """The k tokens that gained the most probability (mass > 0), most promoted first."""
        keep = np.flatnonzero(self.mass > 0)[:k]
        return self._take(keep)

    def suppressed(self, k: int = 20) -> "TokenTotals":
        """The k tokens that lost the most probability (mass < 0), most suppressed first."""
        keep = np.flatnonzero(self.mass < 0)[::-1][:k]
        return self._take(keep)

    def _take(self, idx: np.ndarray) -> "TokenTotals":
        return TokenTotals(self.ids[idx], tuple(self.tokens[i] for i in idx), self.count[idx], self.total[idx],
                           self.mean[idx], self.mass[idx])


@dataclass(frozen=True)
class ShiftResult:
    """The shift from checkpoint A to B over a prompt set (reduced; see PromptShift and TokenTotals).

    mapped_share: share of B's tokens with an A token (1.0 with the same tokenizer); same_tokenizer: no
    map was needed.
    """

    model_a: str
    model_b: str
    reference: str
    top_n: int
    prompts: tuple[PromptShift, ...]
    totals: TokenTotals
    same_tokenizer: bool
    mapped_share: float

    @property
    def mean_kl(self) -> float:
        """Mean KL(B||A) over all aligned steps of all prompts (nats)."""
        kl = np.concatenate([p.kl for p in self.prompts]) if self.prompts else np.zeros(0)
        kl = kl[np.isfinite(kl)]
        return float(kl.mean()) if kl.size else float("nan")


@dataclass(frozen=True)
class LayerKL:
    """Per-layer lens KL(A_l || B_l) (nats), layers 0..L: mean [L+1] over prompts and continuation steps;
    per_prompt: one [L+1, T] array per prompt."""

    model_a: str
    model_b: str
    mean: np.ndarray
    per_prompt: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Similarity:
    """Shift similarity between pair 1 (A->A') and pair 2 (B->B') on shared or mapped tokens.

    Per aligned step (both pairs predict a token at the same character of the continuation): Pearson and
    cosine of S1 and S2 over the compared token columns, and the same with the token correspondence
    permuted (control, mean over n_shuffles). *_by_prompt [P]: per-prompt means (NaN if no step aligned);
    pearson/cosine/control_*: the mean over prompts. columns: "top" (union of both pairs' top-N by the
    reference model) or "all" (every mapped token). second_on_first: per prompt [T1, N] pair 2's shift at
    pair 1's heatmap columns (NaN where unmapped or unaligned).
    """

    pair1: ShiftResult
    pair2: ShiftResult
    columns: str
    mapped_share: float
    pearson_by_prompt: np.ndarray
    cosine_by_prompt: np.ndarray
    control_pearson_by_prompt: np.ndarray
    control_cosine_by_prompt: np.ndarray
    n_steps: int
    second_on_first: tuple[np.ndarray, ...]
    pearson: float = field(init=False)
    cosine: float = field(init=False)
    control_pearson: float = field(init=False)
    control_cosine: float = field(init=False)

    def __post_init__(self) -> None:
        for name in ("pearson", "cosine", "control_pearson", "control_cosine"):
            v = getattr(self, f"{name}_by_prompt")
            v = v[np.isfinite(v)]
            object.__setattr__(self, name, float(v.mean()) if v.size else float("nan"))


@dataclass(frozen=True)
class Compatibility:
    """What can be compared between two checkpoints, with a sentence for the page."""

    same_tokenizer: bool
    same_depth: bool
    same_width: bool
    message: str

    @property
    def lens_kl(self) -> bool:
        """The per-layer lens KL needs the same tokenizer and the same number of layers."""
        return self.same_tokenizer and self.same_depth


# ------------------------------------------------------------------------------------------ checks
def compatibility(a: LoadedModel, b: LoadedModel) -> Compatibility:
    """Which views are possible for A vs B, and a user-facing sentence saying so."""
    same_tok = same_tokenizer(a.tokenizer, b.tokenizer) and a.adapter.vocab_size == b.adapter.vocab_size
    same_depth = a.adapter.n_layers == b.adapter.n_layers
    same_width = a.adapter.d_model == b.adapter.d_model
    parts = []
    if not same_tok:
        parts.append(f"Checkpoints A ({a.name}) and B ({b.name}) use different tokenizers, so their logits do not "
                     "index the same tokens: the per-token shift and KL(B||A) are compared on tokens mapped with "
                     "PM-MinED (unmapped tokens get shift 0, steps only where both split the text at the same "
                     "character), and the per-layer lens KL needs the same tokenizer, so it is not available.")
    elif not same_depth:
        parts.append(f"Checkpoints A ({a.name}, {a.adapter.n_layers} layers) and B ({b.name}, "
                     f"{b.adapter.n_layers} layers) differ in depth: the shift and KL(B||A) work, but the per-layer "
                     "lens KL compares layer l with layer l and needs the same number of layers.")
    return Compatibility(same_tok, same_depth, same_width, " ".join(parts))


def require_lens_compatible(a: LoadedModel, b: LoadedModel) -> None:
    """Raise IncompatibleModelsError (explaining what still works) unless the per-layer lens KL is possible."""
    c = compatibility(a, b)
    if not c.lens_kl:
        raise IncompatibleModelsError(c.message)


# ------------------------------------------------------------------------------------------ helpers
def _encode(tok: Any, text: str, special: bool) -> list[int]:
    return list(tok(text, add_special_tokens=special)["input_ids"])


def _offsets(tok: Any, vocab: Vocab, ids: Sequence[int], text: str) -> np.ndarray:
    """Step key of each of ``ids`` in ``text``: the character where the token's first non-space character sits
    (its start if it is all whitespace), so " Paris" and "Paris" after a split-off space align. [T] int64.

    Uses the tokenizer's offset mapping when it re-tokenizes ``text`` to exactly ``ids``, else cumulative
    token texts.
    """
    ids = [int(i) for i in ids]
    if getattr(tok, "is_fast", False):
        try:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            if list(enc["input_ids"]) == ids:
                out = []
                for s, e in enc["offset_mapping"]:
                    piece = text[s:e]
                    out.append(s + (len(piece) - len(piece.lstrip())) if piece.strip() else s)
                return np.asarray(out, dtype=np.int64)
        except Exception:  # noqa: BLE001 - fall back to cumulative token texts
            pass
    out, pos = [], 0
    for i in ids:
        piece = vocab.text(i)
        out.append(pos + (len(piece) - len(piece.lstrip())) if piece.strip() else pos)
        pos += len(piece)
    return np.asarray(out, dtype=np.int64)


def _logprobs(lm: LoadedModel, ids: list[int]) -> torch.Tensor:
    """log_softmax of the model's logits for one token row: [T, V] fp32 (CPU)."""
    batch = batch_from_ids([ids], pad_token_id(lm.tokenizer))
    logits = run(lm, batch)[0]
    if not torch.isfinite(logits).all():
        raise NumericalError(f"{lm.name} produced NaN or infinite logits on this prompt.")
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def greedy_continuation(lm: LoadedModel, prompt: str, n_tokens: int) -> list[int]:
    """The model's greedy continuation of ``prompt``: up to n_tokens ids (stops after EOS)."""
    ids = _encode(lm.tokenizer, prompt, True)
    out: list[int] = []
    eos = getattr(lm.tokenizer, "eos_token_id", None)
    for _ in range(int(n_tokens)):
        if len(ids) + len(out) >= lm.context_length:
            break
        batch = batch_from_ids([ids + out], pad_token_id(lm.tokenizer))
        nxt = int(run(lm, batch)[0, -1].argmax())
        out.append(nxt)
        if eos is not None and nxt == eos:
            break
    return out


@dataclass
class _Side:
    """One model's full rows for one prompt (internal; never returned)."""

    logp: torch.Tensor  # [T, V] aligned with the reference steps (NaN rows where unaligned)
    valid: np.ndarray  # [T] bool


class _Pair:
    """Runs one pair A->B on one text at a time and returns B's and A's (mapped) rows."""

    def __init__(self, a: LoadedModel, b: LoadedModel):
        self.a, self.b = a, b
        self.vocab_b = vocab_of(b.tokenizer, b.adapter.vocab_size)
        self.same = same_tokenizer(a.tokenizer, b.tokenizer) and a.adapter.vocab_size == b.adapter.vocab_size
        if self.same:
            self.vocab_a = self.vocab_b
            self.map_ba = None
            self.mapped_share = 1.0
        else:
            self.vocab_a = vocab_of(a.tokenizer, a.adapter.vocab_size)
            tm: TokenMap = build_token_map(b.tokenizer, a.tokenizer, b.adapter.vocab_size, a.adapter.vocab_size)
            self.map_ba = torch.as_tensor(tm.mapping)
            self.mapped_share = tm.mapped_share

    def reference_ids(self, prompt: str, response: str | None, reference: str, n_tokens: int) -> list[int]:
        """The continuation token ids (B's tokenizer)."""
        if reference == "greedy":
            return greedy_continuation(self.b, prompt, n_tokens)
        if response is None or response == "":
            raise InputError("Reference 'response' needs a response for every prompt; this prompt has none: "
                             f"{prompt[:60]!r}. Use B's greedy output instead, or add a 'response' column.")
        return _encode(self.b.tokenizer, response, False)

    def rows(self, prompt: str, cont_ids: list[int], text: str | None = None
             ) -> tuple[torch.Tensor, _Side, str, np.ndarray]:
        """(B's log-probs [T, V_B], A's side on B's columns, continuation text, step keys [T]).

        ``text``: the continuation as text (default: B's token texts joined)."""
        b, a = self.b, self.a
        p_ids = _encode(b.tokenizer, prompt, True)
        full = p_ids + cont_ids
        if len(full) > b.context_length:
            raise InputError(f"Prompt + continuation is {len(full)} tokens, longer than {b.name}'s context of "
                             f"{b.context_length}: {prompt[:60]!r}.")
        T = len(cont_ids)
        lp_b = _logprobs(b, full)[len(p_ids) - 1: len(p_ids) - 1 + T]
        if text is None:
            text = "".join(self.vocab_b.text(i) for i in cont_ids)
        offsets = _offsets(b.tokenizer, self.vocab_b, cont_ids, text)
        if self.same:
            lp_a = _logprobs(a, full)[len(p_ids) - 1: len(p_ids) - 1 + T]
            return lp_b, _Side(lp_a, np.ones(T, dtype=bool)), text, offsets
        pa = _encode(a.tokenizer, prompt, True)
        ca = _encode(a.tokenizer, text, False)
        if len(pa) + len(ca) > a.context_length:
            raise InputError(f"Prompt + continuation is longer than {a.name}'s context of {a.context_length}.")
        lp_a_own = _logprobs(a, pa + ca)[len(pa) - 1: len(pa) - 1 + len(ca)]
        off_a = {int(o): k for k, o in enumerate(_offsets(a.tokenizer, self.vocab_a, ca, text))}
        V = lp_b.shape[1]
        lp_a = torch.full((T, V), float("nan"))
        valid = np.zeros(T, dtype=bool)
        mapped = self.map_ba >= 0
        for t, o in enumerate(offsets):
            k = off_a.get(int(o))
            if k is None:
                continue
            valid[t] = True
            row = torch.zeros(V)
            row[mapped] = lp_a_own[k][self.map_ba[mapped]]
            lp_a[t] = torch.where(mapped, row, lp_b[t])  # unmapped columns: A := B, so their shift is 0
        return lp_b, _Side(lp_a, valid), text, offsets


def _kl_rows(lp_b: torch.Tensor, side: _Side, mapped: torch.Tensor | None) -> np.ndarray:
    """KL(B||A) per step [T]; with a map, both renormalised over the mapped columns."""
    if mapped is None:
        kl = (lp_b.exp() * (lp_b - side.logp)).sum(-1)
    else:
        b = torch.log_softmax(lp_b[:, mapped], dim=-1)
        a = torch.log_softmax(torch.nan_to_num(side.logp[:, mapped], nan=0.0), dim=-1)
        kl = (b.exp() * (b - a)).sum(-1)
    out = kl.clamp(min=0).numpy().astype(np.float64)
    out[~side.valid] = np.nan
    return out


class _Accumulator:
    """Builds a ShiftResult prompt by prompt, keeping only reduced arrays."""

    def __init__(self, pair: _Pair, top_n: int):
        self.pair, self.top_n = pair, int(top_n)
        self.prompts: list[PromptShift] = []
        self.count: dict[int, int] = defaultdict(int)
        self.total: dict[int, float] = defaultdict(float)
        self.mass: dict[int, float] = defaultdict(float)

    def add(self, prompt: str, cont_ids: list[int], lp_b: torch.Tensor, side: _Side, text: str,
            offsets: np.ndarray) -> PromptShift:
        T, V = lp_b.shape
        n = min(self.top_n, V)
        S = torch.nan_to_num(lp_b - side.logp, nan=0.0)  # [T, V]: a per-prompt temporary
        top_b = lp_b.topk(n, dim=-1).indices  # [T, n]
        sh = S.gather(1, top_b)
        order = sh.argsort(dim=1, descending=True)
        top_ids = top_b.gather(1, order)
        top_shift = sh.gather(1, order)
        top_lpa = side.logp.gather(1, top_ids)
        top_lpb = lp_b.gather(1, top_ids)
        top_a = torch.nan_to_num(side.logp, nan=-float("inf")).topk(n, dim=-1).indices
        for t in range(T):
            if not side.valid[t]:
                continue
            cols = torch.unique(torch.cat([top_b[t], top_a[t]]))
            vals = S[t, cols]
            dp = lp_b[t, cols].exp() - side.logp[t, cols].exp()
            for c, v, m in zip(cols.tolist(), vals.tolist(), dp.tolist()):
                self.count[c] += 1
                self.total[c] += v
                self.mass[c] += m
        ids_t = torch.as_tensor(cont_ids, dtype=torch.long)
        mapped = None if self.pair.same else (self.pair.map_ba >= 0)
        ps = PromptShift(
            prompt=prompt, continuation=text,
            tokens=self.pair.vocab_b.texts(cont_ids), token_ids=np.asarray(cont_ids, dtype=np.int64), offsets=offsets,
            top_ids=top_ids.numpy().astype(np.int64),
            top_tokens=tuple(self.pair.vocab_b.texts(r) for r in top_ids.tolist()),
            top_shift=top_shift.numpy().astype(np.float32),
            top_logp_a=top_lpa.numpy().astype(np.float32), top_logp_b=top_lpb.numpy().astype(np.float32),
            kl=_kl_rows(lp_b, side, mapped),
            logp_a=side.logp.gather(1, ids_t[:, None])[:, 0].numpy().astype(np.float32) if T else np.zeros(0, np.float32),
            logp_b=lp_b.gather(1, ids_t[:, None])[:, 0].numpy().astype(np.float32) if T else np.zeros(0, np.float32),
        )
        self.prompts.append(ps)
        return ps

    def result(self, reference: str) -> ShiftResult:
        ids = np.asarray(sorted(self.total, key=lambda c: (-self.mass[c], c)), dtype=np.int64)
        count = np.asarray([self.count[int(c)] for c in ids], dtype=np.int64)
        total = np.asarray([self.total[int(c)] for c in ids], dtype=np.float64)
        mass = np.asarray([self.mass[int(c)] for c in ids], dtype=np.float64)
        totals = TokenTotals(ids, self.pair.vocab_b.texts(ids), count, total, total / np.maximum(count, 1), mass)
        return ShiftResult(self.pair.a.name, self.pair.b.name, reference, self.top_n, tuple(self.prompts), totals,
                           self.pair.same, self.pair.mapped_share)


def _check_inputs(prompts: Sequence[str], responses: Sequence[str | None] | None, reference: str, top_n: int,
                  n_tokens: int) -> list[str | None]:
    if reference not in REFERENCES:
        raise InputError(f"Unknown reference '{reference}': use 'response' (the set's responses) or 'greedy' "
                         "(B's greedy output).")
    if not prompts:
        raise InputError("No prompts to compare.")
    if top_n < 1:
        raise InputError(f"Top-N must be at least 1, got {top_n}.")
    if reference == "greedy" and n_tokens < 1:
        raise InputError(f"The greedy continuation needs at least 1 token, got {n_tokens}.")
    resp = list(responses) if responses is not None else [None] * len(prompts)
    if len(resp) != len(prompts):
        raise InputError("There must be one response per prompt.")
    if reference == "response":
        missing = [i + 1 for i, r in enumerate(resp) if not r]
        if missing:
            raise InputError(f"{len(missing)} prompt(s) have no response (prompt {', '.join(map(str, missing[:5]))}); "
                             "use B's greedy output as the reference, or add a 'response' column.")
    return resp


# ------------------------------------------------------------------------------------------ public API
def compute_shift(a: LoadedModel, b: LoadedModel, prompts: Sequence[str], responses: Sequence[str | None] | None = None,
                  *, reference: str = "response", n_tokens: int = 16, top_n: int = 100,
                  progress: Progress = None) -> ShiftResult:
    """Shift S = log_softmax(B) - log_softmax(A) teacher-forced on the reference continuation, reduced per step."""
    resp = _check_inputs(prompts, responses, reference, top_n, n_tokens)
    pair = _Pair(a, b)
    acc = _Accumulator(pair, top_n)
    for i, (p, r) in enumerate(zip(prompts, resp)):
        cont = pair.reference_ids(p, r, reference, n_tokens)
        lp_b, side, text, offsets = pair.rows(p, cont, r if reference == "response" else None)
        acc.add(p, cont, lp_b, side, text, offsets)
        if progress:
            progress((i + 1) / len(prompts), f"prompt {i + 1}/{len(prompts)}")
    return acc.result(reference)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else float("nan")


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else float("nan")


def _finite_mean(v: Sequence[float]) -> float:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors (NaN if one is constant)."""
    return _pearson(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def cosine(x: np.ndarray, y: np.ndarray) -> float:
    """Cosine similarity of two equal-length vectors (NaN if one is zero)."""
    return _cosine(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def shift_similarity(pair1: tuple[LoadedModel, LoadedModel], pair2: tuple[LoadedModel, LoadedModel],
                     prompts: Sequence[str], responses: Sequence[str | None] | None = None, *,
                     reference: str = "response", n_tokens: int = 16, top_n: int = 100, columns: str = "top",
                     n_shuffles: int = 20, seed: int = 0, progress: Progress = None) -> Similarity:
    """Compare the shifts of pair 1 (A->A') and pair 2 (B->B') per aligned step on shared or mapped tokens.

    Both pairs read the same continuation text (the responses, or pair 1's B greedy output); pair 1's
    reference vocabulary is mapped to pair 2's with PM-MinED (identity when they share a tokenizer).
    """
    if columns not in ("top", "all"):
        raise InputError(f"columns must be 'top' or 'all', got {columns!r}.")
    resp = _check_inputs(prompts, responses, reference, top_n, n_tokens)
    p1, p2 = _Pair(*pair1), _Pair(*pair2)
    acc1, acc2 = _Accumulator(p1, top_n), _Accumulator(p2, top_n)
    b1, b2 = pair1[1], pair2[1]
    m12 = torch.as_tensor(build_token_map(b1.tokenizer, b2.tokenizer, b1.adapter.vocab_size, b2.adapter.vocab_size).mapping)
    m21 = torch.as_tensor(build_token_map(b2.tokenizer, b1.tokenizer, b2.adapter.vocab_size, b1.adapter.vocab_size).mapping)
    mapped_share = float((m12 >= 0).float().mean())
    all_src = torch.nonzero(m12 >= 0).flatten()
    rng = np.random.default_rng(seed)
    pr, co, cpr, cco, second = [], [], [], [], []
    n_steps = 0
    for i, (p, r) in enumerate(zip(prompts, resp)):
        cont1 = p1.reference_ids(p, r, reference, n_tokens)
        lp1, side1, text, off1 = p1.rows(p, cont1, r if reference == "response" else None)
        ps1 = acc1.add(p, cont1, lp1, side1, text, off1)
        cont2 = _encode(b2.tokenizer, r if reference == "response" else text, False)
        lp2, side2, text2, off2 = p2.rows(p, cont2, text)
        acc2.add(p, cont2, lp2, side2, text2, off2)
        S1 = torch.nan_to_num(lp1 - side1.logp, nan=0.0)
        S2 = torch.nan_to_num(lp2 - side2.logp, nan=0.0)
        step2 = {int(o): k for k, o in enumerate(off2) if side2.valid[k]}
        sec = np.full(ps1.top_ids.shape, np.nan, dtype=np.float32)
        vals = ([], [], [], [])
        for t, o in enumerate(off1):
            k = step2.get(int(o))
            if k is None or not side1.valid[t]:
                continue
            tgt = m12[torch.as_tensor(ps1.top_ids[t])]
            ok = tgt >= 0
            sec[t, ok.numpy()] = S2[k, tgt[ok]].numpy()
            if columns == "all":
                src = all_src
            else:
                from_1 = lp1[t].topk(min(top_n, lp1.shape[1])).indices
                from_2 = m21[lp2[k].topk(min(top_n, lp2.shape[1])).indices]
                src = torch.unique(torch.cat([from_1, from_2[from_2 >= 0]]))
                src = src[m12[src] >= 0]
            if src.numel() < 3:
                continue
            x = S1[t, src].double().numpy()
            y = S2[k, m12[src]].double().numpy()
            vals[0].append(_pearson(x, y))
            vals[1].append(_cosine(x, y))
            perm_p, perm_c = [], []
            for _ in range(int(n_shuffles)):
                yp = y[rng.permutation(len(y))]
                perm_p.append(_pearson(x, yp))
                perm_c.append(_cosine(x, yp))
            vals[2].append(_finite_mean(perm_p))
            vals[3].append(_finite_mean(perm_c))
            n_steps += 1
        second.append(sec)
        for lst, v in zip((pr, co, cpr, cco), vals):
            lst.append(_finite_mean(v))
        if progress:
            progress((i + 1) / len(prompts), f"prompt {i + 1}/{len(prompts)}")
    return Similarity(acc1.result(reference), acc2.result(reference), columns, mapped_share,
                      np.asarray(pr), np.asarray(co), np.asarray(cpr), np.asarray(cco), n_steps, tuple(second))


def layer_kl(a: LoadedModel, b: LoadedModel, prompts: Sequence[str], responses: Sequence[str | None] | None = None,
             *, reference: str = "response", n_tokens: int = 16, progress: Progress = None) -> LayerKL:
    """Per-layer lens KL(A_l || B_l) over the continuation steps ("where in depth did tuning act"), layers 0..L.

    Computed by analysis.lens.lens_compare on prompt + continuation text; kept at the positions that
    predict continuation tokens."""
    require_lens_compatible(a, b)
    from analysis.lens import lens_compare  # the logit-lens engine's KL(A_l || B_l) per layer and position
    resp = _check_inputs(prompts, responses, reference, 1, n_tokens)
    pair = _Pair(a, b)
    texts, starts = [], []
    for i, (p, r) in enumerate(zip(prompts, resp)):
        if reference == "greedy":
            cont = pair.reference_ids(p, r, reference, n_tokens)
            r = "".join(pair.vocab_b.text(t) for t in cont)
        texts.append(p + r)
        starts.append(len(_encode(b.tokenizer, p, True)) - 1)
        if progress:
            progress(0.5 * (i + 1) / len(prompts), "reference continuations")
    half = (lambda f, m: progress(0.5 + 0.5 * f, m)) if progress else None
    comp = lens_compare(a, b, texts, progress=half)
    per = []
    for n, s in enumerate(starts):
        length = int(comp.mask[n].sum())
        per.append(comp.kl[n, :, s:length - 1].astype(np.float64))  # positions predicting continuation tokens
    allv = np.concatenate(per, axis=1) if per else np.zeros((a.adapter.n_layers + 1, 0))
    mean = allv.mean(axis=1) if allv.shape[1] else np.full(allv.shape[0], np.nan)
    return LayerKL(a.name, b.name, mean, tuple(per))
