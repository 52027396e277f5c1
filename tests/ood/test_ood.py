"""OOD separability, the metrics and the scores: the methods.md section 6 identities and the metrics against
scikit-learn. The study (features, the held-out rule, the zoo demo) is in tests/ood/test_ood_study.py, the numerical edge
cases (rank, NaN and masked logits) in tests/ood/test_ood_numerics.py."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analysis.core.errors import InputError
from analysis.ood import (
    GEN,
    KNN,
    MSP,
    NECO,
    Energy,
    LogitGap,
    Mahalanobis,
    MaxLogit,
    ViM,
    all_metrics,
    aupr_in,
    aupr_out,
    auroc,
    autc,
    fpr95_id,
    fpr95_ood,
    logit_stats,
    vim_origin,
)


# ----------------------------------------------------------------------------------------- metrics
def test_identical_id_and_ood_scores_give_auroc_and_autc_one_half():
    s = np.random.default_rng(0).normal(size=200)
    assert auroc(s, s) == pytest.approx(0.5)
    assert autc(s, s) == pytest.approx(0.5)
    c = np.ones(10)
    assert auroc(c, c) == pytest.approx(0.5) and autc(c, c) == pytest.approx(0.5)


def test_auroc_of_negated_score_is_one_minus_auroc():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.7, 1, 150), rng.normal(0, 1, 90)
    assert auroc(-a, -b) == pytest.approx(1 - auroc(a, b))
    assert 0.6 < auroc(a, b) < 0.9


def test_metrics_agree_with_scikit_learn_and_the_pairwise_definition():
    rng = np.random.default_rng(2)
    a, b = np.round(rng.normal(1, 1, 120), 1), np.round(rng.normal(0, 1, 80), 1)  # rounded: ties happen
    y = np.r_[np.ones(a.size), np.zeros(b.size)]
    s = np.r_[a, b]
    diff = a[:, None] - b[None, :]
    assert auroc(a, b) == pytest.approx(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))
    assert auroc(a, b) == pytest.approx(roc_auc_score(y, s))
    assert aupr_in(a, b) == pytest.approx(average_precision_score(y, s))
    assert aupr_out(a, b) == pytest.approx(average_precision_score(1 - y, -s))
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert fpr95_id(a, b) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
    fpr, tpr, _ = roc_curve(1 - y, -s, drop_intermediate=False)
    assert fpr95_ood(a, b) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
    # AUTC = mean of the areas under FPR(t) and FNR(t) over thresholds of the min-max scaled outlier score
    o = 1 - (s - s.min()) / (s.max() - s.min())
    t = np.linspace(0, 1, 200_001)
    o_id, o_ood = np.sort(o[y == 1]), np.sort(o[y == 0])
    fpr_t = 1 - np.searchsorted(o_id, t, side="right") / o_id.size  # ID with outlier score > t
    fnr_t = np.searchsorted(o_ood, t, side="right") / o_ood.size  # OOD with outlier score <= t
    assert autc(a, b) == pytest.approx(0.5 * (np.trapezoid(fpr_t, t) + np.trapezoid(fnr_t, t)), abs=1e-4)


def test_perfect_separation_metrics():
    m = all_metrics(np.array([2.0, 3.0, 4.0]), np.array([-1.0, 0.0, 1.0]))
    assert (m.auroc, m.aupr_in, m.aupr_out, m.fpr95_id, m.fpr95_ood) == (1.0, 1.0, 1.0, 0.0, 0.0)
    assert m.autc < 0.25


def test_fpr95_both_conventions_on_a_hand_computable_example():
    s_id = np.arange(1.0, 21.0)  # 1..20
    s_ood = np.r_[np.arange(-17.0, 1.0), 3.5, 10.5]  # 20 OOD scores
    # ID+: keeping 95% of ID (19 of 20) puts the threshold at 2; OOD with s >= 2: {3.5, 10.5} -> 2/20
    assert fpr95_id(s_id, s_ood) == pytest.approx(0.10)
    # OOD+: catching 95% of OOD (19 of 20, the lowest) puts the threshold at 3.5; ID with s <= 3.5: {1,2,3} -> 3/20
    assert fpr95_ood(s_id, s_ood) == pytest.approx(0.15)


def test_metrics_refuse_nan_and_empty():
    with pytest.raises(InputError):
        auroc(np.array([1.0, np.nan]), np.array([0.0]))
    with pytest.raises(InputError):
        auroc(np.array([]), np.array([0.0]))


def test_all_metrics_equals_each_metric_computed_alone_with_and_without_ties():
    """all_metrics derives every metric from one sort (the OOD-positive curve as its complement): it must give
    what each function gives through scikit-learn's own roc_auc_score / average_precision_score / roc_curve."""
    import analysis.ood as M

    rng = np.random.default_rng(3)
    for trial in range(150):
        a, b = rng.normal(1, 1, int(rng.integers(1, 40))), rng.normal(0, 1, int(rng.integers(1, 90)))
        if trial % 3 == 0:
            a, b = np.round(a, 1), np.round(b, 1)
        if trial % 5 == 0:  # heavy ties across the two sets
            a, b = rng.integers(0, 3, a.size).astype(float), rng.integers(0, 3, b.size).astype(float)
        if trial % 11 == 0:  # perfectly separated, either way round
            a, b = (a + 100, b) if trial % 2 else (a - 100, b)
        if trial % 7 == 0:
            a, b = np.zeros_like(a), np.zeros_like(b)
        got = M.all_metrics(a, b).as_dict()
        alone = {"auroc": M.auroc(a, b), "aupr_in": M.aupr_in(a, b), "aupr_out": M.aupr_out(a, b),
                 "fpr95_id": M.fpr95_id(a, b), "fpr95_ood": M.fpr95_ood(a, b), "autc": M.autc(a, b)}
        for k, v in alone.items():
            assert got[k] == pytest.approx(v, abs=1e-12), (trial, k)


def test_threshold_counts_are_scikit_learns_confusion_counts():
    """all_metrics counts positives/negatives per distinct threshold itself (scikit-learn's per-call checks cost more
    than the sort): the counts must be exactly those of sklearn.metrics.confusion_matrix_at_thresholds."""
    from sklearn.metrics import confusion_matrix_at_thresholds

    from analysis.ood.metrics import _threshold_counts

    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(2, 60))
        s = np.round(rng.normal(size=n), int(rng.integers(0, 3)))  # 0 decimals: many ties
        y = (rng.random(n) < 0.5).astype(int)
        if y.sum() in (0, n):
            continue
        _, fps, _, tps, _ = confusion_matrix_at_thresholds(y, s)
        got_tps, got_fps = _threshold_counts(y, s)
        np.testing.assert_array_equal(got_tps, tps)
        np.testing.assert_array_equal(got_fps, fps)
        checked += 1
    assert checked > 200


# ----------------------------------------------------------------------------------------- scores
def test_mahalanobis_separates_blobs_three_sigma_apart_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(3)
    d, n_fit = 64, 32
    sig = np.exp(rng.uniform(np.log(0.1), np.log(10), d))
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))

    def blob(n, shift):
        return ((rng.normal(size=(n, d)) + shift) * sig) @ Q.T  # shift in units of each axis' sigma

    for shrinkage in ("ledoit-wolf", "oas"):
        sc = Mahalanobis(shrinkage).fit(blob(n_fit, 0.0))
        assert auroc(sc.score(blob(100, 0.0)), sc.score(blob(100, 3.0))) > 0.99


def test_knn_is_scale_invariant():
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(40, 16)), rng.normal(size=(25, 16))
    base = KNN(3).fit(X).score(Y)
    scaled = KNN(3).fit(7.5 * X).score(0.01 * Y * rng.uniform(0.5, 3, size=(25, 1)))
    np.testing.assert_allclose(scaled, base, atol=1e-10)
    assert np.all(base <= 0)


def test_knn_needs_k_below_fit_size():
    with pytest.raises(InputError, match="smaller than the number of ID prompts"):
        KNN(5).fit(np.ones((5, 3)))


def test_energy_bounds_maxlogit():
    rng = np.random.default_rng(5)
    V = 300
    z = rng.normal(scale=rng.uniform(0.1, 30, size=(50, 1)), size=(50, V))
    z[0] = 0.0  # uniform logits: the upper bound is tight
    e, m = Energy().score(z), MaxLogit().score(z)
    assert np.all(e >= m - 1e-12)
    assert np.all(e - m <= np.log(V) + 1e-9)
    assert e[0] - m[0] == pytest.approx(np.log(V))


def test_logit_scores_from_topk_summary_equal_dense_computation():
    rng = np.random.default_rng(6)
    z = rng.normal(scale=3, size=(20, 500))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(MSP().score(z), p.max(1))
    ps = -np.sort(-p, axis=1)[:, :100]
    np.testing.assert_allclose(GEN().score(z), -np.sum(ps ** 0.1 * (1 - ps) ** 0.1, axis=1))
    zs = -np.sort(-z, axis=1)
    np.testing.assert_allclose(LogitGap(10).score(z), zs[:, 0] - zs[:, 1:11].mean(1))
    np.testing.assert_allclose(LogitGap(1).score(z), zs[:, 0] - zs[:, 1])
    small = rng.normal(size=(4, 7))  # V < M: GEN uses all classes
    ps = -np.sort(-np.exp(small) / np.exp(small).sum(1, keepdims=True), axis=1)
    np.testing.assert_allclose(GEN().score(logit_stats(small)), -np.sum(ps ** 0.1 * (1 - ps) ** 0.1, axis=1))


def test_vim_with_an_empty_residual_equals_energy():
    rng = np.random.default_rng(7)
    d, V = 8, 30
    X, Y = rng.normal(size=(40, d)), rng.normal(size=(15, d))
    zx, zy = rng.normal(size=(40, V)), rng.normal(size=(15, V))
    sc = ViM(dim=d).fit(X, zx)
    np.testing.assert_allclose(sc.score(Y, zy), Energy().score(zy))


def test_vim_residual_penalises_points_off_the_id_subspace():
    rng = np.random.default_rng(8)
    d, V, n = 16, 40, 60
    basis = rng.normal(size=(4, d))
    X = rng.normal(size=(n, 4)) @ basis  # ID lives in a 4-dim subspace
    W = rng.normal(size=(V, d))
    b = rng.normal(size=V)
    u = vim_origin(W, b)
    np.testing.assert_allclose(W @ u, -b, atol=1e-8) if np.linalg.matrix_rank(W) == V else None
    with pytest.raises(InputError, match="numerical rank 4"):  # dim = rank: the fit rows' residual is round-off
        ViM(dim=4, origin=u).fit(X + u, (X + u) @ W.T + b)
    sc = ViM(dim=3, origin=u).fit(X + u, (X + u) @ W.T + b)
    inside = rng.normal(size=(30, 4)) @ basis + u
    outside = inside + 3 * rng.normal(size=(30, d))
    assert sc.alpha_ > 0
    assert auroc(sc.score(inside, inside @ W.T + b), sc.score(outside, outside @ W.T + b)) > 0.9
    with pytest.raises(InputError):
        ViM(dim=60).fit(rng.normal(size=(20, 100)), rng.normal(size=(20, V)))


def test_neco_ratio_is_between_zero_and_one_and_k_is_checked():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(30, 10))
    r = NECO(3, times_maxlogit=False).fit(X).score(rng.normal(size=(12, 10)))
    assert np.all((r >= 0) & (r <= 1 + 1e-9))
    full = NECO(10, times_maxlogit=False).fit(X).score(rng.normal(size=(12, 10)))
    np.testing.assert_allclose(full, 1.0, atol=1e-9)
    with pytest.raises(InputError):
        NECO(11).fit(X)

