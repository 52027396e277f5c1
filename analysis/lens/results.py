"""Logit lens result types and their aggregates: the LensTrace of a prompt set, the LensComparison of two checkpoints.

The aggregates reduce a trace over its prompts: mean KL(p_L || p_l) per layer, the decision depths and one
prompt's target probability and rank per layer, at each prompt's last position or at every real position.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.core.errors import InputError
from analysis.core.wording import plural


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class LensTrace:
    """The logit lens over a prompt set.

    Shapes: N prompts, T = the longest prompt in tokens, L = number of blocks (layers 0..L),
    K = top-k. Positions are left-aligned whatever the padding side: position t of prompt n is
    its t-th token (BOS included); ``mask[n, t]`` is False past the prompt's end, where float
    arrays hold NaN and int arrays -1 (ranks 0).
      input_ids [N, T] int64        mask [N, T] bool
      top_ids [N, L+1, T, K] int64  top_probs [N, L+1, T, K] float32 (descending)
      entropy [N, L+1, T] float32   H(p_l) in nats, in [0, log V]
      kl [N, L+1, T] float32        KL(p_L || p_l) in nats (>= 0; 0 at layer L)
      target_ids [N, T] int64       -1 where there is no target
      target_prob [N, L+1, T] float32 (NaN without target), target_rank [N, L+1, T] int64 in [1, V] (0 without)
      xent [N, L+1, T] float32      -log p_l(actual next token); NaN at each prompt's last position
      decision_depth [N, T] int64   first layer from which the final top-1 stays top-1 through L
    ``strings`` maps every token id that appears in the arrays to its text.
    """

    model_name: str
    prompts: tuple[str, ...]
    n_layers: int
    vocab_size: int
    k: int
    target_mode: str
    input_ids: np.ndarray
    mask: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    entropy: np.ndarray
    kl: np.ndarray
    target_ids: np.ndarray
    target_prob: np.ndarray
    target_rank: np.ndarray
    xent: np.ndarray
    decision_depth: np.ndarray
    strings: dict[int, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def lengths(self) -> np.ndarray:
        """Real tokens per prompt: [N]."""
        return self.mask.sum(axis=1)

    @property
    def last_index(self) -> np.ndarray:
        """Index of each prompt's last real token: [N]."""
        return self.lengths - 1

    def token(self, token_id: int) -> str:
        """The text of a token id that appears in this trace."""
        return self.strings.get(int(token_id), f"<{int(token_id)}>")

    def tokens(self, n: int) -> list[str]:
        """The input tokens of prompt ``n`` as text: [length]."""
        return [self.token(i) for i in self.input_ids[n, : int(self.lengths[n])]]


@dataclass(frozen=True, eq=False)
class LensComparison:
    """KL(A_l || B_l) between two checkpoints on identical token ids.

    kl [N, L+1, T] float32 in nats (NaN on padding, positions left-aligned as in LensTrace);
    mean_kl [L+1]: mean over all real positions; mean_kl_last [L+1]: mean over each prompt's
    last position. input_ids [N, T] int64 (-1 on padding), mask [N, T] bool.
    """

    model_a: str
    model_b: str
    prompts: tuple[str, ...]
    n_layers: int
    input_ids: np.ndarray
    mask: np.ndarray
    kl: np.ndarray
    mean_kl: np.ndarray
    mean_kl_last: np.ndarray
    strings: dict[int, str] = field(default_factory=dict)

    def tokens(self, n: int) -> list[str]:
        """The input tokens of prompt ``n`` as text."""
        length = int(self.mask[n].sum())
        return [self.strings.get(int(i), f"<{int(i)}>") for i in self.input_ids[n, :length]]


# --------------------------------------------------------------------------------------------- aggregates
def position_mask(mask: np.ndarray, positions: str) -> np.ndarray:
    """[N, T] bool of the positions an aggregate uses: 'last' (each prompt's last token) or 'all' real ones."""
    if positions == "all":
        return mask
    if positions != "last":
        raise InputError(f"positions must be 'last' or 'all', got {positions!r}.")
    out = np.zeros_like(mask)
    out[np.arange(mask.shape[0]), mask.sum(axis=1) - 1] = True
    return out


def mean_kl_per_layer(trace: LensTrace, positions: str = "last") -> np.ndarray:
    """Mean KL(p_L || p_l) per layer over the set: [L+1] nats (positions 'last' or 'all')."""
    sel = position_mask(trace.mask, positions)
    vals = np.where(sel[:, None, :], trace.kl, np.nan)
    return np.nanmean(vals, axis=(0, 2)).astype(np.float32)


def decision_depths(trace: LensTrace, positions: str = "last") -> np.ndarray:
    """Decision depth of every selected position (first layer from which the final top-1 stays top-1): [M] int."""
    sel = position_mask(trace.mask, positions)
    return trace.decision_depth[sel]


def target_trajectory(trace: LensTrace, n: int, position: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probability [L+1], rank [L+1]) of prompt n's target at ``position`` (default: its last token)."""
    if not 0 <= n < len(trace.prompts):
        raise InputError(f"Prompt {n + 1} does not exist; the set has {plural(len(trace.prompts), 'prompt')}.")
    t = int(trace.last_index[n]) if position is None else int(position)
    if not 0 <= t < int(trace.lengths[n]):
        raise InputError(f"Position {t} is outside prompt {n + 1} (positions 0..{int(trace.lengths[n]) - 1}).")
    return trace.target_prob[n, :, t], trace.target_rank[n, :, t]
