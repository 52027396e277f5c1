"""Shared helpers for the OOD tests (tests/ood/test_ood_study.py, tests/ood/test_ood_numerics.py): synthetic features."""
from __future__ import annotations

import numpy as np

from analysis.ood import OODFeatures, logit_stats


def synthetic(prompts: list[str], X: np.ndarray, rng: np.random.Generator, V: int = 50) -> OODFeatures:
    """OODFeatures with X as every pooling at two layers and random logits (V classes): a study without a model."""
    n, d = X.shape
    z = rng.normal(size=(n, V))
    st = logit_stats(z)
    return OODFeatures(tuple(prompts), (0, 1), np.stack([X, X]), np.stack([X, X]), np.stack([X, X]),
                       np.stack([st.top, st.top]), np.stack([st.lse, st.lse]), st.top, st.lse,
                       rng.normal(size=n), np.full(n, 3), np.zeros(d), V)
