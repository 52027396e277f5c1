"""Unigram token distribution of a reference prompt set (add-one smoothing) and KL of model predictions to it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.errors import InputError

DEFAULT_REFERENCE = "corpus_sample"


@dataclass(frozen=True)
class Unigram:
    """p_freq over the unembedding's V entries: log_p [V] (natural log), counts [V] (raw), n_tokens counted."""

    log_p: np.ndarray
    counts: np.ndarray
    n_tokens: int
    n_prompts: int

    @property
    def direction(self) -> np.ndarray:
        """The frequency direction in vocabulary space: f = log p_freq - mean(log p_freq) [V]."""
        return self.log_p - self.log_p.mean()


def unigram_distribution(tokenizer, prompts: Sequence[str], vocab_size: int) -> Unigram:
    """Token counts of ``prompts`` (no special tokens added) -> add-one smoothed p_freq over ``vocab_size`` ids."""
    prompts = [p for p in prompts if p and p.strip()]
    if not prompts:
        raise InputError("The reference set for token frequencies is empty: give at least one non-empty prompt.")
    counts = np.zeros(vocab_size, dtype=np.float64)
    n = 0
    for p in prompts:
        ids = np.asarray(tokenizer(p, add_special_tokens=False)["input_ids"], dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < vocab_size)]
        np.add.at(counts, ids, 1.0)
        n += int(ids.size)
    if n == 0:
        raise InputError("The reference set for token frequencies produced no tokens.")
    smoothed = counts + 1.0
    return Unigram(log_p=np.log(smoothed / smoothed.sum()), counts=counts, n_tokens=n, n_prompts=len(prompts))


def kl_to_unigram(logits: torch.Tensor, log_p_freq: torch.Tensor) -> torch.Tensor:
    """KL(p_model || p_freq) per position, in nats: logits [..., V], log_p_freq [V] -> [...]."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    return (lp.exp() * (lp - log_p_freq.to(lp.device))).sum(dim=-1)
