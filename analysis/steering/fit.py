"""Steering direction fitting: one vector per layer from positive and negative activations, and its held-out AUROC.

The methods (difference of means, PCA of paired differences, logistic regression) give a direction scaled to the
separation of the group means along it; a seeded train/test split (pairs kept together) measures separability.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from analysis.core.errors import InputError
from analysis.steering.contrast import Contrast

METHODS = ("mean_diff", "pca", "logistic")


# --------------------------------------------------------------------------------------------
# Fitting a direction
# --------------------------------------------------------------------------------------------
def unit_vector(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 and math.isfinite(n) else np.zeros_like(v)


def fit_direction(X_pos: np.ndarray, X_neg: np.ndarray, method: str,
                  pairs: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    """One steering vector [d] from positive [n_pos, d] and negative [n_neg, d] activations (positives project higher)."""
    X_pos = np.asarray(X_pos, dtype=np.float64)
    X_neg = np.asarray(X_neg, dtype=np.float64)
    diff = X_pos.mean(axis=0) - X_neg.mean(axis=0)
    if method == "mean_diff":
        return diff.astype(np.float32)
    if method == "pca":
        if not pairs:
            raise InputError("The PCA method needs pairs: rows of the two groups that share a `label` (pair id). "
                             "Use the difference of means or logistic regression for unpaired groups.")
        D = np.stack([X_pos[i] - X_neg[j] for i, j in pairs])
        _, _, vt = np.linalg.svd(D, full_matrices=False)
        u = vt[0]
        if float(D.mean(axis=0) @ u) < 0:
            u = -u
    elif method == "logistic":
        X = np.concatenate([X_pos, X_neg])
        y = np.r_[np.ones(len(X_pos)), np.zeros(len(X_neg))]
        scale = float(np.abs(X).max()) or 1.0  # keep the solver well conditioned; the direction is unchanged
        clf = LogisticRegression(C=1.0, max_iter=2000)
        clf.fit(X / scale, y)
        u = unit_vector(clf.coef_[0])
        if float(diff @ u) < 0:
            u = -u
    else:
        raise InputError(f"Unknown method '{method}'. Use one of: {', '.join(METHODS)}.")
    u = unit_vector(u)
    return (u * abs(float(diff @ u))).astype(np.float32)


def split_train_test(contrast: Contrast, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/test indices into pos and neg (pairs stay on one side): (pos_tr, pos_te, neg_tr, neg_te)."""
    rng = np.random.default_rng(seed)
    n_pos, n_neg = len(contrast.pos), len(contrast.neg)
    if contrast.pairs and len(contrast.pairs) >= 2:
        order = rng.permutation(len(contrast.pairs))
        n_te = max(1, int(round(test_fraction * len(order))))
        te = {contrast.pairs[k] for k in order[:n_te]}
        pos_te = np.array(sorted({i for i, _ in te}))
        neg_te = np.array(sorted({j for _, j in te}))
        paired_pos = {i for i, _ in contrast.pairs}
        paired_neg = {j for _, j in contrast.pairs}
        # unpaired rows split on their own
        extra_pos = [i for i in rng.permutation(n_pos) if i not in paired_pos]
        extra_neg = [j for j in rng.permutation(n_neg) if j not in paired_neg]
        pos_te = np.array(sorted(set(pos_te) | set(extra_pos[: int(round(test_fraction * len(extra_pos)))])), dtype=int)
        neg_te = np.array(sorted(set(neg_te) | set(extra_neg[: int(round(test_fraction * len(extra_neg)))])), dtype=int)
    else:
        pos_te = np.sort(rng.permutation(n_pos)[: max(1, int(round(test_fraction * n_pos)))])
        neg_te = np.sort(rng.permutation(n_neg)[: max(1, int(round(test_fraction * n_neg)))])
    pos_tr = np.setdiff1d(np.arange(n_pos), pos_te)
    neg_tr = np.setdiff1d(np.arange(n_neg), neg_te)
    return pos_tr, pos_te, neg_tr, neg_te


def held_out_auroc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    y = np.r_[np.ones(len(pos_scores)), np.zeros(len(neg_scores))]
    return float(roc_auc_score(y, np.r_[pos_scores, neg_scores]))
