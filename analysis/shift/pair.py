"""Checkpoint shift rows: one pair A->B run on one text, aligned step by step, reduced prompt by prompt.

ShiftPair teacher-forces both checkpoints on the reference continuation and returns B's log-probs and A's read on B's
columns (through the PM-MinED token map when the tokenizers differ, aligned by character offset);
ShiftAccumulator keeps per prompt only the top-N shifts, KL(B||A) per step and the per-token totals over the set.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from analysis.core.batching import batch_from_ids, pad_token_id
from analysis.core.errors import InputError, NumericalError
from analysis.core.forward import run
from analysis.core.loading import LoadedModel
from analysis.shift.results import PromptShift, ShiftResult, TokenTotals
from analysis.shift.token_map import TokenMap, Vocab, build_token_map, same_tokenizer, vocab_of


# ------------------------------------------------------------------------------------------ helpers
def encode_text(tok: Any, text: str, special: bool) -> list[int]:
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
    ids = encode_text(lm.tokenizer, prompt, True)
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


class ShiftPair:
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
        return encode_text(self.b.tokenizer, response, False)

    def rows(self, prompt: str, cont_ids: list[int], text: str | None = None
             ) -> tuple[torch.Tensor, _Side, str, np.ndarray]:
        """(B's log-probs [T, V_B], A's side on B's columns, continuation text, step keys [T]).

        ``text``: the continuation as text (default: B's token texts joined)."""
        b, a = self.b, self.a
        p_ids = encode_text(b.tokenizer, prompt, True)
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
        pa = encode_text(a.tokenizer, prompt, True)
        ca = encode_text(a.tokenizer, text, False)
        if len(pa) + len(ca) > a.context_length:
            raise InputError(f"Prompt + continuation is longer than {a.name}'s context of {a.context_length}.")
        lp_a_own = _logprobs(a, pa + ca)[len(pa) - 1: len(pa) - 1 + len(ca)]
        off_a = {int(o): k for k, o in enumerate(_offsets(a.tokenizer, self.vocab_a, ca, text))}
        V = lp_b.shape[1]
        lp_a = torch.full((T, V), float("nan"))
        valid = np.zeros(T, dtype=bool)
        map_ba = self.map_ba
        assert map_ba is not None  # built in __init__ whenever the tokenizers differ (not self.same)
        mapped = map_ba >= 0
        for t, o in enumerate(offsets):
            k = off_a.get(int(o))
            if k is None:
                continue
            valid[t] = True
            row = torch.zeros(V)
            row[mapped] = lp_a_own[k][map_ba[mapped]]
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


class ShiftAccumulator:
    """Builds a ShiftResult prompt by prompt, keeping only reduced arrays."""

    def __init__(self, pair: ShiftPair, top_n: int):
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
            for c, v, m in zip(cols.tolist(), vals.tolist(), dp.tolist(), strict=True):
                self.count[c] += 1
                self.total[c] += v
                self.mass[c] += m
        ids_t = torch.as_tensor(cont_ids, dtype=torch.long)
        mapped = None if self.pair.same else (cast(torch.Tensor, self.pair.map_ba) >= 0)  # a map unless same
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
