"""The logit lens (docs/methods.md section 1): each layer's residual read out through the final norm and unembedding
(``lens_trace`` -> LensTrace), its aggregates, the two-checkpoint comparison (``lens_compare``) and the tuned lens
(the ``tuned`` module: per-layer affine translators trained, saved, loaded and checked).
"""
from analysis.lens import tuned
from analysis.lens.comparison import check_compatible, lens_compare
from analysis.lens.inputs import (
    TARGET_FINAL_TOP1,
    TARGET_NEXT,
    TARGET_NONE,
    TARGET_TEXT,
    capture_residuals,
    encode_prompts,
    resolve_target,
)
from analysis.lens.logit_lens import lens_trace
from analysis.lens.results import LensComparison, LensTrace, decision_depths, mean_kl_per_layer
from analysis.lens.stats import default_chunk_rows

__all__ = [
    "LensComparison",
    "LensTrace",
    "TARGET_FINAL_TOP1",
    "TARGET_NEXT",
    "TARGET_NONE",
    "TARGET_TEXT",
    "capture_residuals",
    "check_compatible",
    "decision_depths",
    "default_chunk_rows",
    "encode_prompts",
    "lens_compare",
    "lens_trace",
    "mean_kl_per_layer",
    "resolve_target",
    "tuned",
]
