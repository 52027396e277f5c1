"""Running the model: one locked, inference-mode forward pass with optional hooks."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from analysis.core.batching import Batch
from analysis.core.hooks import HookSpec, attached
from analysis.core.loading import LoadedModel


def run(lm: LoadedModel, batch: Batch, hooks: Sequence[HookSpec] = (), *, grad: bool = False) -> torch.Tensor:
    """Forward ``batch`` through the model with ``hooks`` attached; returns the model's logits [B, T, V] (fp32)."""
    b = batch.to(lm.device)
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with attached(lm.lock, hooks), ctx:
        out = lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                       use_cache=False)
    return out.logits.float()
