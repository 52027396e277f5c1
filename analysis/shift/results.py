"""Checkpoint shift result types: one prompt's reduced shift, the per-token totals over a set, and the set's result.

Also the per-layer lens KL, the shift similarity between two checkpoint pairs and the compatibility of two
checkpoints; analysis.shift.logit_shift computes them (see its module docstring for the definitions).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

    def promoted(self, k: int = 20) -> TokenTotals:
        """The k tokens that gained the most probability (mass > 0), most promoted first."""
        keep = np.flatnonzero(self.mass > 0)[:k]
        return self._take(keep)

    def suppressed(self, k: int = 20) -> TokenTotals:
        """The k tokens that lost the most probability (mass < 0), most suppressed first."""
        keep = np.flatnonzero(self.mass < 0)[::-1][:k]
        return self._take(keep)

    def _take(self, idx: np.ndarray) -> TokenTotals:
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
