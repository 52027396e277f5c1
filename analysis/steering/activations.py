"""Steering activations: token ids of contrast rows, the positions read (a position rule) and the pooled residuals.

``encode_rows`` gives each row's token ids and the positions to read (the last prompt token, or the response
tokens of prompt + response); ``pooled_residuals`` runs the model and averages h_l over those positions per layer.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from analysis.compute.backend import Backend, current_backend
from analysis.compute.sharding import consecutive_batches, shard_plan
from analysis.core.batching import batch_from_ids, chunks, pad_token_id
from analysis.core.errors import InputError, NumericalError, PromptSetError
from analysis.core.forward import run
from analysis.core.hooks import residual_hook
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.prompts import PromptRow

READ_RULES = ("last", "response")


# --------------------------------------------------------------------------------------------
# Reading activations
# --------------------------------------------------------------------------------------------
def token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's special tokens (e.g. BOS)."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode_rows(lm: LoadedModel, rows: Sequence[PromptRow], rule: str) -> list[tuple[list[int], list[int]]]:
    """(token ids, positions to read) per row: the last prompt token, or the response tokens of prompt+response."""
    if rule not in READ_RULES:
        raise InputError(f"Unknown position rule '{rule}'. Use one of: {', '.join(READ_RULES)}.")
    out = []
    for r in rows:
        p_ids = token_ids(lm.tokenizer, r.prompt)
        if not p_ids:
            raise PromptSetError(f"Line {r.row}: the prompt has no tokens.")
        if rule == "last":
            ids, pos = p_ids, [len(p_ids) - 1]
        else:
            if not r.response:
                raise PromptSetError(
                    f"Line {r.row}: the position rule 'mean over response tokens' needs a `response` on every row, "
                    "and this row has none. Add responses or use the last prompt token.")
            ids = token_ids(lm.tokenizer, r.prompt + r.response)
            pos = list(range(len(p_ids), len(ids)))
            if not pos:
                raise PromptSetError(f"Line {r.row}: the response adds no tokens after the prompt's {len(p_ids)}.")
        if len(ids) > lm.context_length:
            raise PromptSetError(f"Line {r.row}: {len(ids)} tokens is longer than the model's context of "
                                 f"{lm.context_length} tokens. Shorten it.")
        out.append((ids, pos))
    return out


def pooled_residuals(lm: LoadedModel, encoded: Sequence[tuple[Sequence[int], Sequence[int]]], layers: Sequence[int],
                     *, batch_size: int = 16, progress: Progress = None, hooks_extra: Sequence = ()) -> np.ndarray:
    """Mean of h_l over each row's read positions, for every requested layer: [N, len(layers), d] fp32."""
    for l in layers:
        lm.check_layer(int(l))
    n, d = len(encoded), lm.adapter.d_model
    if not hooks_extra and (backend := current_backend()).shards_for(lm, len(chunks(n, batch_size))) > 1:

        return pooled_residuals_sharded(backend, lm, encoded, layers, batch_size=batch_size, progress=progress)
    out = np.zeros((n, len(layers), d), dtype=np.float32)
    pad = pad_token_id(lm.tokenizer)
    parts = chunks(n, batch_size)
    for k, sl in enumerate(parts):
        rows = encoded[sl]
        batch = batch_from_ids([r[0] for r in rows], pad, "right")
        T = batch.input_ids.shape[1]
        w = torch.zeros(len(rows), T)
        for i, (_, pos) in enumerate(rows):
            w[i, list(pos)] = 1.0 / len(pos)
        w = w.to(lm.device)
        store: dict = {}

        def pool(key: int, store: dict = store, w: torch.Tensor = w) -> Callable[[torch.Tensor], None]:
            def fn(h: torch.Tensor) -> None:
                store[key] = torch.einsum("bt,btd->bd", w, h.float()).cpu()
            return fn
        hooks = list(hooks_extra) + [residual_hook(lm.adapter, int(l), pool(j)) for j, l in enumerate(layers)]
        run(lm, batch, hooks)
        for j in range(len(layers)):
            out[sl, j] = store[j].numpy()
        if progress is not None:
            progress((k + 1) / len(parts), f"activations {sl.stop}/{n}")
    if not np.isfinite(out).all():
        raise NumericalError("The model produced NaN or infinite activations on this prompt set.")
    return out


# ------------------------------------------------------------------------------------------ steering activations
def pooled_residuals_sharded(backend: Backend, lm: Any, encoded: Sequence, layers: Sequence[int], *, batch_size: int,
                             progress: Progress = None) -> np.ndarray:
    """pooled_residuals [N, len(layers), d] on the backend's shards, concatenated in input order."""
    plan = shard_plan(backend, lm, consecutive_batches(len(encoded), batch_size))
    shards = [(([encoded[i] for i in idx], list(layers)), dict(batch_size=batch_size)) for idx in plan]
    parts = backend.map_shards(lm, "analysis.steering.activations:pooled_residuals", shards, [len(i) for i in plan],
                               progress)
    return np.concatenate(parts, axis=0)
