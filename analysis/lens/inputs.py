"""Logit lens inputs: target modes, prompts as token ids, the target token per prompt and the captured residuals.

``encode_prompts`` and ``resolve_target`` turn texts into checked token ids; ``capture_residuals`` runs one batch
and keeps h_l for l = 0..L, stopping the forward pass at the final norm so the model's own logits are never built.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from analysis.core.errors import InputError
from analysis.core.hooks import HookSpec, attached, residual_capture_hooks
from analysis.core.loading import LoadedModel
from analysis.core.tokens import first_token
from analysis.core.wording import plural, verb

TARGET_NONE = "none"  # no target token
TARGET_TEXT = "text"  # per prompt a text (its first token) or a token id; the same token at every position
TARGET_FINAL_TOP1 = "final_top1"  # the model's own final top-1 at each position
TARGET_NEXT = "next_token"  # the actual next token at each position (none at the last one)
TARGET_MODES = (TARGET_NONE, TARGET_TEXT, TARGET_FINAL_TOP1, TARGET_NEXT)


# --------------------------------------------------------------------------------------------- helpers
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
    """One target as (token id, note or None): a text's first token, or a token id checked against the vocabulary
    (analysis.core.tokens.first_token)."""
    return first_token(tokenizer, target, vocab_size)


def target_rows(lm: LoadedModel, rows: list[list[int]], mode: str,
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
        notes.append(f"{missing} of {plural(len(per), 'prompt')} {verb(missing)} no target; their target views are "
                     "empty.")
    return ids, notes  # one note per prompt: the UI and the reports collapse them (components.notes)


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
    with attached(lm.lock, hooks), torch.inference_mode(), contextlib.suppress(_StopForward):
        lm.model(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev),
                 position_ids=position_ids.to(dev), use_cache=False)
    missing = [l for l in range(ad.n_layers + 1) if l not in store]
    if missing:  # pragma: no cover - the adapter's self-check would fail first
        raise InputError(f"The residual stream at layers {missing} was not captured; the adapter does not fit.")
    return store
