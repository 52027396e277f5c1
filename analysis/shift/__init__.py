"""Checkpoint shift (docs/methods.md section 5, Wu et al. 2024): what changed between checkpoints A and B on the
same text (tokens promoted and suppressed, KL(B||A) per step, also across different tokenizers through the token
map), the per-layer lens KL and the similarity of two pairs' shifts.
"""
from analysis.shift.logit_shift import (
    compatibility,
    compute_shift,
    cosine,
    layer_kl,
    pearson,
    require_lens_compatible,
    shift_similarity,
)
from analysis.shift.results import LayerKL, PromptShift, ShiftResult, Similarity, TokenTotals
from analysis.shift.token_map import build_token_map, levenshtein, pm_mined_map, vocab_from_strings, vocab_of

__all__ = [
    "LayerKL",
    "PromptShift",
    "ShiftResult",
    "Similarity",
    "TokenTotals",
    "build_token_map",
    "compatibility",
    "compute_shift",
    "cosine",
    "layer_kl",
    "levenshtein",
    "pearson",
    "pm_mined_map",
    "require_lens_compatible",
    "shift_similarity",
    "vocab_from_strings",
    "vocab_of",
]
