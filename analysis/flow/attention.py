"""Attention patterns: every query head's attention probabilities a^h_{q,k} over a prompt (methods.md section 2).

The pass is the logit flow's own capture path (analysis.flow.capture.eager_attention: the model's lock, eager
attention, the attention module's returned probabilities), so the pattern's last query row is the array the flow's
head x source attribution uses. Heads are query heads: in GQA models (llama-type) several query heads share one
key/value head, but each query head has its own pattern. Rows are trimmed to the prompt's real tokens, so left or
right padding inside a batch gives the same [T, T] pattern; each row sums to 1 and is 0 above the diagonal (causal).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from analysis.core.batching import chunks, encode
from analysis.core.errors import InputError
from analysis.core.forward import run
from analysis.core.hooks import HookSpec
from analysis.core.loading import LoadedModel
from analysis.core.tokens import decode
from analysis.flow.capture import eager_attention, returned_probs

PATTERN_BATCH = 8
PATTERN_BUDGET = 64 * 2**20  # bytes of fp32 patterns kept per model by attention_pattern_set (a cached result)


@dataclass(frozen=True)
class AttentionPatterns:
    """One prompt's attention probabilities: probs [L, H, T, T] fp32 (query row q, key column k), T real tokens."""

    prompt: str
    tokens: tuple[str, ...]  # [T] token texts
    token_ids: tuple[int, ...]
    probs: np.ndarray

    def head(self, layer: int, head: int) -> AttentionPattern:
        """The [T, T] pattern of one query head (InputError naming the valid range)."""
        L, H = self.probs.shape[:2]
        if not 0 <= layer < L or not 0 <= head < H:
            raise InputError(f"Head L{layer}H{head} is out of range: this model has blocks 0..{L - 1} and query "
                             f"heads 0..{H - 1}.")
        return AttentionPattern(self.tokens, self.probs[layer, head], int(layer), int(head))


@dataclass(frozen=True)
class AttentionPattern:
    """One query head's pattern: probs [T, T] (rows = query positions, columns = key positions, rows sum to 1)."""

    tokens: tuple[str, ...]
    probs: np.ndarray
    layer: int
    head: int


def head_label(layer: int, head: int) -> str:
    """'L{block}H{head}' (0-based block and query head), the id of a head everywhere."""
    return f"L{int(layer)}H{int(head)}"


def parse_head_label(text: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    """(block, head) of 'L3H2' (any case, 'L3.H2' too), checked against the model; InputError otherwise."""
    m = re.fullmatch(r"[Ll](\d+)\.?[Hh](\d+)", str(text).strip())
    if not m:
        raise InputError(f"'{text}' is not a head id; write L{{block}}H{{head}} with a 0-based block, e.g. L1H0.")
    layer, head = int(m.group(1)), int(m.group(2))
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise InputError(f"Head {head_label(layer, head)} is out of range: this model has blocks 0..{n_layers - 1} "
                         f"and query heads 0..{n_heads - 1}.")
    return layer, head


def _prob_hooks(lm: LoadedModel, store: dict, layers: Sequence[int]) -> list[HookSpec]:
    """Hooks storing each attention module's returned probabilities [B, H, T, T] (fp32, CPU) in store[i]."""
    ad = lm.adapter
    hooks: list[HookSpec] = []
    for i in layers:
        def probs(mod: torch.nn.Module, args: tuple, out: Any, i: int = i) -> None:
            store[i] = returned_probs(out, "attention patterns are").detach().float().cpu().clone()
        hooks.append((ad.block_part(i, ad.row.attn), "forward", probs))
    return hooks


def attention_patterns(lm: LoadedModel, prompts: Sequence[str], *, layers: Sequence[int] | None = None,
                       batch_size: int = PATTERN_BATCH, padding_side: str = "right") -> tuple[AttentionPatterns, ...]:
    """Every query head's [T, T] pattern for each prompt (layers: all blocks by default; probs [len(layers), H, T, T])."""
    if not prompts:
        raise InputError("No prompts to analyse.")
    ad = lm.adapter
    layers = list(range(ad.n_layers)) if layers is None else [int(l) for l in layers]
    for l in layers:
        if not 0 <= l < ad.n_layers:
            raise InputError(f"Block {l} is out of range: this model has blocks 0..{ad.n_layers - 1}.")
    out: list[AttentionPatterns] = []
    for sl in chunks(len(prompts), batch_size):
        batch = encode(lm.tokenizer, list(prompts[sl]), padding_side=padding_side, max_length=lm.context_length)
        store: dict = {}
        with eager_attention(lm):
            run(lm, batch, _prob_hooks(lm, store, layers))
        for b, prompt in enumerate(prompts[sl]):
            real = batch.real_positions(b)
            ids = batch.input_ids[b, real].tolist()
            probs = np.stack([store[i][b][:, real][:, :, real].numpy() for i in layers]).astype(np.float32)
            out.append(AttentionPatterns(prompt, tuple(decode(lm.tokenizer, t) for t in ids),
                                         tuple(int(t) for t in ids), probs))
    return tuple(out)


def attention_pattern(lm: LoadedModel, prompt: str, layer: int, head: int) -> AttentionPattern:
    """The [T, T] attention pattern of query head ``head`` of block ``layer`` on one prompt."""
    if not 0 <= int(head) < lm.adapter.n_heads:
        raise InputError(f"Head {head} is out of range: this model has query heads 0..{lm.adapter.n_heads - 1}.")
    pats = attention_patterns(lm, [prompt], layers=[layer])[0]
    return AttentionPattern(pats.tokens, pats.probs[0, int(head)], int(layer), int(head))


def attention_pattern_set(lm: LoadedModel, prompts: Sequence[str], *, budget: int = PATTERN_BUDGET
                          ) -> tuple[tuple[AttentionPatterns | None, ...], tuple[str, ...]]:
    """All blocks' patterns of each prompt while they fit ``budget`` bytes (later prompts: None, with a note)."""
    ad = lm.adapter
    lengths = [len(lm.tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    kept, used = 0, 0
    for n in lengths:
        size = ad.n_layers * ad.n_heads * n * n * 4
        if used + size > budget:
            break
        used, kept = used + size, kept + 1
    pats: list[AttentionPatterns | None] = list(attention_patterns(lm, prompts[:kept])) if kept else []
    notes: tuple[str, ...] = ()
    if kept < len(prompts):
        pats.extend([None] * (len(prompts) - kept))
        notes = (f"Attention patterns are kept for the first {kept} of {len(prompts)} prompts only (they would need "
                 f"more than {budget // 2**20} MiB).",)
    return tuple(pats), notes
