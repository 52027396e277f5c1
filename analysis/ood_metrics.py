"""Separability metrics for OOD scores; every score is "higher = more in-distribution" (ID is the positive class).

- AUROC: ``sklearn.metrics.roc_auc_score`` with ID = 1 (= P(s_ID > s_OOD) + 0.5 P(tie)).
- AUPR-In / AUPR-Out: ``sklearn.metrics.average_precision_score`` (step-wise average precision, not the
  trapezoid that OpenOOD uses) with ID = positive on s, resp. OOD = positive on -s.
- FPR@95 in two conventions (they differ; both are reported):
  * "ID+" (ODIN, ViM, KNN papers): the threshold keeps 95% of ID; report the fraction of OOD accepted.
  * "OOD+" (OpenOOD v1.5): the threshold catches 95% of OOD; report the fraction of ID flagged.
  Both take the first point of sklearn's ``roc_curve`` (drop_intermediate=False) whose TPR >= 0.95.
- AUTC (Humblot-Renaux et al., "Beyond AUROC"): the scores are min-max scaled over all evaluated samples
  (ID and OOD together) to [0, 1] and turned into an outlier score o = 1 - s; then
  AUTC = 0.5 * (mean o_ID + 1 - mean o_OOD) = area under the FPR and FNR threshold curves averaged.
  Lower is better; 0 = perfect; 0.5 for identical distributions (and for all-equal scores, which scale
  to 0.5). Ties are handled exactly because the closed form needs no curve.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import auc, average_precision_score, roc_auc_score, roc_curve

from analysis.errors import InputError

FPR95_ID_LABEL = "FPR@95 ID+: OOD accepted when 95% of ID kept"
FPR95_OOD_LABEL = "FPR@95 OOD+ (OpenOOD): ID flagged when 95% of OOD caught"
AUPR_ESTIMATOR = "average_precision_score (scikit-learn)"
METRIC_LABELS = {
    "auroc": "AUROC (ID = positive)",
    "aupr_in": "AUPR-In (average precision, ID = positive)",
    "aupr_out": "AUPR-Out (average precision, OOD = positive)",
    "fpr95_id": FPR95_ID_LABEL,
    "fpr95_ood": FPR95_OOD_LABEL,
    "autc": "AUTC (min-max scaled, lower is better)",
}
HIGHER_IS_BETTER = {"auroc": True, "aupr_in": True, "aupr_out": True, "fpr95_id": False, "fpr95_ood": False,
                    "autc": False}


@dataclass(frozen=True)
class Metrics:
    """All metrics of one (ID, OOD) score pair."""

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr95_id: float
    fpr95_ood: float
    autc: float

    def as_dict(self) -> dict[str, float]:
        """The metrics as a plain dict."""
        return asdict(self)


def _pair(s_id: np.ndarray, s_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated scores [n_id + n_ood] and labels (ID = 1), validated."""
    a = np.asarray(s_id, dtype=np.float64).ravel()
    b = np.asarray(s_ood, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise InputError("Metrics need at least one ID score and one OOD score.")
    s = np.concatenate([a, b])
    if not np.all(np.isfinite(s)):
        raise InputError("Some OOD scores are NaN or infinite; the metrics cannot be computed.")
    y = np.concatenate([np.ones(a.size, dtype=int), np.zeros(b.size, dtype=int)])
    return s, y


def auroc(s_id: np.ndarray, s_ood: np.ndarray) -> float:
    """AUROC with ID as the positive class (0.5 = no separation, 1 = ID always scores higher)."""
    s, y = _pair(s_id, s_ood)
    return float(roc_auc_score(y, s))


def aupr_in(s_id: np.ndarray, s_ood: np.ndarray) -> float:
    """Average precision with ID positive, ranked by s."""
    s, y = _pair(s_id, s_ood)
    return float(average_precision_score(y, s))


def aupr_out(s_id: np.ndarray, s_ood: np.ndarray) -> float:
    """Average precision with OOD positive, ranked by -s."""
    s, y = _pair(s_id, s_ood)
    return float(average_precision_score(1 - y, -s))


def _fpr_at_tpr(y_pos: np.ndarray, score: np.ndarray, tpr_level: float) -> float:
    fpr, tpr, _ = roc_curve(y_pos, score, drop_intermediate=False)
    return float(fpr[int(np.argmax(tpr >= tpr_level - 1e-12))])


def fpr95_id(s_id: np.ndarray, s_ood: np.ndarray, level: float = 0.95) -> float:
    """ID+ convention: fraction of OOD accepted (s >= t) at the threshold that keeps 95% of ID."""
    s, y = _pair(s_id, s_ood)
    return _fpr_at_tpr(y, s, level)


def fpr95_ood(s_id: np.ndarray, s_ood: np.ndarray, level: float = 0.95) -> float:
    """OOD+ convention (OpenOOD): fraction of ID flagged (s <= t) at the threshold that catches 95% of OOD."""
    s, y = _pair(s_id, s_ood)
    return _fpr_at_tpr(1 - y, -s, level)


def autc(s_id: np.ndarray, s_ood: np.ndarray) -> float:
    """AUTC of min-max scaled scores (lower is better; 0.5 for identical distributions); see the module doc."""
    s, y = _pair(s_id, s_ood)
    lo, hi = float(s.min()), float(s.max())
    scaled = np.full_like(s, 0.5) if hi <= lo else (s - lo) / (hi - lo)
    outlier = 1.0 - scaled
    return float(0.5 * (outlier[y == 1].mean() + 1.0 - outlier[y == 0].mean()))


def roc_points(s_id: np.ndarray, s_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve with ID positive: (fpr [k], tpr [k])."""
    s, y = _pair(s_id, s_ood)
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def all_metrics(s_id: np.ndarray, s_ood: np.ndarray) -> Metrics:
    """Every metric for one score on held-out ID scores [n_id] and OOD scores [n_ood].

    The same values as the single-metric functions, from fewer scikit-learn calls (its input checks dominate
    at these sizes): the pair is validated once, and one ROC curve with ID positive gives both the AUROC
    (``auc`` of it, which is what ``roc_auc_score`` computes for a binary problem) and FPR@95 ID+.
    """
    s, y = _pair(s_id, s_ood)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    fpr_ood, tpr_ood, _ = roc_curve(1 - y, -s, drop_intermediate=False)
    lo, hi = float(s.min()), float(s.max())
    outlier = 1.0 - (np.full_like(s, 0.5) if hi <= lo else (s - lo) / (hi - lo))
    return Metrics(
        auroc=float(auc(fpr, tpr)),
        aupr_in=float(average_precision_score(y, s)),
        aupr_out=float(average_precision_score(1 - y, -s)),
        fpr95_id=float(fpr[int(np.argmax(tpr >= 0.95 - 1e-12))]),
        fpr95_ood=float(fpr_ood[int(np.argmax(tpr_ood >= 0.95 - 1e-12))]),
        autc=float(0.5 * (outlier[y == 1].mean() + 1.0 - outlier[y == 0].mean())),
    )
