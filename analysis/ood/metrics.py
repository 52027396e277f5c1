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
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analysis.core.errors import InputError

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


def _threshold_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tps, fps): positives (y = 1) and negatives scoring >= each distinct score, thresholds decreasing.

    What scikit-learn's ``confusion_matrix_at_thresholds`` returns (the counts behind ``roc_curve`` and
    ``precision_recall_curve``), by the same stable descending sort, without its per-call input checks: they
    cost ~0.6 ms a call, and a study makes hundreds (tests compare every metric with scikit-learn's own).
    """
    order = np.argsort(s, kind="mergesort")[::-1]
    s_sorted, y_sorted = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]  # the last index of each distinct score
    tps = np.cumsum(y_sorted)[last_of_run]
    return tps, 1 + last_of_run - tps


def _counts_metrics(tps: np.ndarray, fps: np.ndarray) -> tuple[float, float, float]:
    """(AUROC, average precision, FPR at TPR >= 0.95) from cumulative counts at decreasing thresholds.

    tps[k] / fps[k]: positives / negatives scoring >= the k-th distinct score (``_threshold_counts``). The ROC with its (0, 0) start is what ``roc_curve(drop_intermediate=False)`` draws; the average
    precision is ``average_precision_score``'s step sum, sum_k (R_k - R_{k-1}) P_k.
    """
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    precision = tps / (tps + fps)  # every threshold is a score, so tps + fps >= 1
    ap = float(np.sum(np.diff(tpr) * precision))
    return float(np.trapezoid(tpr, fpr)), ap, float(fpr[int(np.argmax(tpr >= 0.95 - 1e-12))])  # = sklearn auc()


def all_metrics(s_id: np.ndarray, s_ood: np.ndarray) -> Metrics:
    """Every metric for one score on held-out ID scores [n_id] and OOD scores [n_ood].

    The same values as the single-metric functions, which call scikit-learn (tests compare them), from one sort
    instead of six scikit-learn calls (their input checks dominate at these sizes: a study has hundreds of metric
    rows): the pair is validated once, the counts with ID positive on s give the AUROC, AUPR-In and FPR@95 ID+,
    and their complement (OOD positive on -s) AUPR-Out and FPR@95 OOD+.
    """
    s, y = _pair(s_id, s_ood)
    tps, fps = _threshold_counts(y, s)  # ID positive, thresholds on s decreasing
    roc_auc, ap_in, fpr_id = _counts_metrics(tps, fps)
    # OOD positive on -s: its thresholds are the same distinct scores, increasing. At the j-th from the bottom,
    # the OOD (ID) count with s <= t is all of them minus those with s > t, i.e. minus fps (tps) one threshold up.
    above_ood, above_id = np.r_[0, fps[:-1]][::-1], np.r_[0, tps[:-1]][::-1]
    _, ap_out, fpr_ood = _counts_metrics(fps[-1] - above_ood, tps[-1] - above_id)
    lo, hi = float(s.min()), float(s.max())
    outlier = 1.0 - (np.full_like(s, 0.5) if hi <= lo else (s - lo) / (hi - lo))
    return Metrics(auroc=roc_auc, aupr_in=ap_in, aupr_out=ap_out, fpr95_id=fpr_id, fpr95_ood=fpr_ood,
                   autc=float(0.5 * (outlier[y == 1].mean() + 1.0 - outlier[y == 0].mean())))
