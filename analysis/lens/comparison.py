"""Logit lens comparison of two checkpoints: KL(A_l || B_l) per layer and position on identical token ids.

Both models must share the tokenizer, the vocabulary and the number of layers (``check_compatible`` says which
of these differs); the KL is computed chunk by chunk from both models' captured residual streams.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from analysis.core.batching import batch_from_ids, chunks, pad_token_id
from analysis.core.errors import IncompatibleModelsError, InputError
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.core.readout import readout
from analysis.core.tokens import decode
from analysis.lens.inputs import capture_residuals, encode_prompts
from analysis.lens.results import LensComparison, position_mask
from analysis.lens.stats import default_chunk_rows


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
            only_a, only_b = len(set(va.items()) - set(vb.items())), len(set(vb.items()) - set(va.items()))
            raise IncompatibleModelsError(
                f"{lm_a.name} and {lm_b.name} use different tokenizers ({len(va):,} vs {len(vb):,} tokens; "
                f"{only_a:,} (token, id) pairs only in A's, {only_b:,} only in B's). KL(A_l || B_l) needs both models "
                "to read the same token ids "
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
    last = position_mask(mask, "last")
    mean_all = np.nanmean(np.where(mask[:, None, :], kl, np.nan), axis=(0, 2)).astype(np.float32)
    mean_last = np.nanmean(np.where(last[:, None, :], kl, np.nan), axis=(0, 2)).astype(np.float32)
    strings = {int(i): decode(lm_a.tokenizer, int(i)) for i in np.unique(input_ids[mask]).tolist()}
    if progress:
        progress(1.0, "done")
    return LensComparison(model_a=lm_a.name, model_b=lm_b.name, prompts=tuple(prompts), n_layers=L,
                          input_ids=input_ids, mask=mask, kl=kl, mean_kl=mean_all, mean_kl_last=mean_last,
                          strings=strings)
