"""Reference means of MLP neurons (the values mean and clipped-mean ablation write): sums and counts per batch.

``activation_sums`` gives, per batch, each neuron's activation (the input of the down-projection) summed over the
batch's real tokens and the token count; ``mean_activations`` adds those sums in the batches' order and divides
by the total count. With a sharding backend (analysis.compute.backend) the batches run on its workers and the sums come
back per batch, so the mean is exactly the single-process mean (sums and counts, never means of means).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analysis.compute.backend import Backend, current_backend
from analysis.compute.sharding import shard_plan
from analysis.core.batching import bucketed, length_batches, n_batches, token_rows
from analysis.core.errors import InputError
from analysis.core.forward import run
from analysis.core.hooks import capture, input_hook
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.neurons.scan import NeuronId


def by_block(neurons: Sequence[NeuronId]) -> dict[int, list[int]]:
    """{block: [positions in ``neurons``]}."""
    out: dict[int, list[int]] = {}
    for j, (b, _) in enumerate(neurons):
        out.setdefault(b, []).append(j)
    return out


def mean_activations(lm: LoadedModel, prompts: Sequence[str], neurons: Sequence[NeuronId], *, batch_size: int = 8,
                     bucket: bool = True, progress: Progress = None) -> np.ndarray:
    """Mean activation of each neuron over every real token of ``prompts``: [len(neurons)] float64.

    ``bucket`` batches prompts of similar token length together (less padding; the mean is the same)."""
    prompts = [p for p in prompts if p and p.strip()]
    if not prompts:
        raise InputError("The reference set for mean ablation is empty: give at least one non-empty prompt.")
    if not neurons:
        return np.zeros(0)
    if (backend := current_backend()).shards_for(lm, n_batches(len(prompts), batch_size)) > 1:

        batch_sums, counts = activation_sums_sharded(backend, lm, prompts, neurons, batch_size=batch_size,
                                                     bucket=bucket, progress=progress)
    else:
        batch_sums, counts = activation_sums(lm, prompts, neurons, batch_size=batch_size, bucket=bucket,
                                             progress=progress)
    sums = torch.zeros(len(neurons), dtype=torch.float64)
    for row in batch_sums:  # sums and counts (never means of means), in the batches' order
        sums += torch.from_numpy(row)
    return (sums / max(int(counts.sum()), 1)).numpy()


def activation_sums(lm: LoadedModel, prompts: Sequence[str], neurons: Sequence[NeuronId], *, batch_size: int = 8,
                    bucket: bool = True, progress: Progress = None) -> tuple[np.ndarray, np.ndarray]:
    """Per batch, each neuron's activation summed over the batch's real tokens and the token count:
    ([n_batches, len(neurons)] float64, [n_batches] int64); the batches as ``bucketed`` makes them."""
    ad = lm.adapter
    groups = by_block(neurons)
    sums, counts = [], []
    n_parts = n_batches(len(prompts), batch_size)
    for n_s, (_, batch) in enumerate(bucketed(lm.tokenizer, prompts, batch_size, max_length=lm.context_length,
                                              sort=bucket)):
        B, T = batch.input_ids.shape
        mask = batch.attention_mask.bool()
        store: dict = {}
        hooks = []
        for b, js in groups.items():
            c = torch.as_tensor([neurons[j][1] for j in js], dtype=torch.long)

            def pick(t: torch.Tensor, c: torch.Tensor = c) -> torch.Tensor:
                return t[..., c.to(t.device)].detach().double().cpu()

            hooks.append(input_hook(ad.down_proj(b), capture(store, b, pick), bt=(B, T)))
        run(lm, batch, hooks)
        row = torch.zeros(len(neurons), dtype=torch.float64)
        for b, js in groups.items():
            row[js] = store[b][mask].sum(dim=0)
        sums.append(row.numpy())
        counts.append(int(mask.sum()))
        if progress:
            progress((n_s + 1) / n_parts, "reference means")
    return np.stack(sums) if sums else np.zeros((0, len(neurons))), np.asarray(counts, dtype=np.int64)


# ------------------------------------------------------------------------------------------ neuron reference means
def activation_sums_sharded(backend: Backend, lm: Any, prompts: Sequence[str], neurons: Sequence, *, batch_size: int,
                            bucket: bool, progress: Progress = None) -> tuple[np.ndarray, np.ndarray]:
    """activation_sums' per-batch sums [n_batches, n] and token counts [n_batches], in the single-process order."""
    lengths = [len(r) for r in token_rows(lm.tokenizer, prompts, max_length=lm.context_length)]
    plan = shard_plan(backend, lm, length_batches(lengths, batch_size, sort=bucket))
    shards = [(([prompts[i] for i in idx], list(neurons)), dict(batch_size=batch_size, bucket=False)) for idx in plan]
    parts = backend.map_shards(lm, "analysis.neurons.means:activation_sums", shards, [len(i) for i in plan],
                               progress)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
