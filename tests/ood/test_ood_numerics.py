"""OOD numerical edge cases: rank-deficient fit features (scores invariant to the fit rows' order, dims capped by
the numerical rank, scores not defined reported as such), NaN logits rejected, masked (-inf) logits ignored."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.core.errors import InputError
from analysis.ood import (
    GEN,
    MSP,
    NECO,
    Energy,
    LogitGap,
    Mahalanobis,
    MaxLogit,
    OODFeatures,
    OODSettings,
    ViM,
    logit_stats,
    study_from_features,
)
from tests.ood_fixtures import synthetic as _synthetic


# ----------------------------------------------------------------------------------------- numerical edge cases
def _low_rank(rng: np.random.Generator, n: int, d: int = 64, scales=(5.0, 2.0, 0.7), offset: float = 1.5) -> np.ndarray:
    """n rows of numerical rank len(scales) in width d (distinct singular values: a well-defined principal space)."""
    basis = np.linalg.qr(rng.normal(size=(d, len(scales))))[0].T * np.asarray(scales)[:, None]
    return rng.normal(size=(n, len(scales))) @ basis + offset * basis[0] / np.linalg.norm(basis[0])


def _float32(f: OODFeatures) -> OODFeatures:
    """The features and logit summaries in float32, as extract_features stores them."""
    import dataclasses
    return dataclasses.replace(f, **{k: getattr(f, k).astype(np.float32) for k in
                                     ("last", "mean", "head_in", "lens_top", "lens_lse", "final_top", "final_lse")})


def _aligned_scores(study, name: str, set_name: str) -> np.ndarray:
    """Scores [n_l, n_set] of one set with the held-out ID rows put in prompt order (the split keeps them sorted)."""
    arr = study.scores[name][set_name]
    order = np.argsort(np.array(study.prompts[set_name]))
    return arr[:, order]


def test_rank_deficient_fit_features_give_scores_invariant_to_the_order_of_the_fit_rows():
    # 80 ID prompts -> 40 fit rows of rank 3 in d = 64 (as at layer 0 of a real model, where the last tokens repeat).
    # ViM's and NECO's subspaces must come from the rank-3 span, not from round-off directions: permuting the fit
    # rows (same fit set, other order) must not change a single score.
    from analysis.ood.study import _split, _take
    rng = np.random.default_rng(12)
    n_id, d = 80, 64
    X = _low_rank(rng, n_id, d)
    id_f = _float32(_synthetic([f"id {i:02d}" for i in range(n_id)], X, rng))  # float32 as extract_features stores
    off = _low_rank(rng, 30, d) + 0.3 * rng.normal(size=(30, d))
    ood = {"off": _float32(_synthetic([f"ood {i}" for i in range(30)], off, rng))}
    settings = OODSettings(poolings=("last",))
    base = study_from_features(id_f, ood, settings)
    assert base.settings["n_fit"] == 40
    fit, held = _split(n_id, settings.fit_fraction, settings.seed)
    for seed in (1, 2, 3):
        prng = np.random.default_rng(seed)
        pi = np.arange(n_id)
        pi[fit], pi[held] = fit[prng.permutation(fit.size)], held[prng.permutation(held.size)]
        other = study_from_features(_take(id_f, pi), ood, settings)
        fitted = sorted(base.id_prompts[i] for i in base.fit_index)
        assert sorted(other.id_prompts[i] for i in other.fit_index) == fitted  # same fit set, other order
        for name in ("ViM", "NECO", "Mahalanobis·last"):
            for s in base.sets:
                a, b = _aligned_scores(base, name, s), _aligned_scores(other, name, s)
                scale = np.nanmax(np.abs(a))
                np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9 * scale, err_msg=f"{name} on {s}, order {seed}")
    notes = " ".join(base.notes)
    assert "numerical rank 3" in notes and "ViM" in notes and "NECO" in notes
    assert base.settings["vim_dim_by_layer"] == [2, 2] and base.settings["neco_k_by_layer"] == [3, 3]


def test_scores_undefined_on_the_fit_features_are_reported_as_not_defined():
    # Every fit row identical: no covariance (Mahalanobis), rank 1 around the origin (ViM), rank 0 once standardised
    # (NECO). They must say "not defined" (NaN in the table, a note) and be skipped by the best pick, not score 0.
    from analysis.ood import ALL_OOD as _ALL
    from analysis.ood import NotDefinedError
    from analysis.ood import metrics_frame as _mf
    rng = np.random.default_rng(13)
    d = 16
    row = rng.normal(size=d)
    id_f = _synthetic([f"id {i}" for i in range(12)], np.tile(row, (12, 1)), rng)
    far = _synthetic([f"far {i}" for i in range(6)], row + 50 * rng.normal(size=(6, d)), rng)
    study = study_from_features(id_f, {"far": far}, OODSettings(poolings=("last",), knn_k=2))
    df = _mf(study)
    for name in ("Mahalanobis·last", "ViM", "NECO"):
        rows = df[df.score == name]
        assert rows.auroc.isna().all() and rows.autc.isna().all(), name
        assert rows.note.str.startswith("not defined").all(), name
        assert np.isnan(study.scores[name]["far"]).all()
        assert any(n.startswith(name) and "not defined" in n for n in study.notes), (name, study.notes)
    assert study.best_score not in ("Mahalanobis·last", "ViM", "NECO") and np.isfinite(study.best_auroc)
    assert set(study.best_layer_by_score) == {"KNN·last"}
    assert (df[df.score == "KNN·last"].note == "").all()
    assert _ALL not in set(df.ood_set)
    with pytest.raises(NotDefinedError, match="Mahalanobis"):
        Mahalanobis().fit(np.tile(row, (10, 1)))
    # rank 1 around the origin: no residual space for ViM (it needs dim >= 1 and a residual the fit rows reach)
    line = rng.normal(size=(10, 1)) * row
    with pytest.raises(NotDefinedError, match="ViM"):
        ViM(dim=1).fit(line, rng.normal(size=(10, 30)))
    assert NECO(5, times_maxlogit=False, cap_to_rank=True).fit(line).k_ == 1
    # two mirrored rows: Ledoit-Wolf applies no shrinkage and the covariance stays singular
    with pytest.raises(NotDefinedError, match="singular"):
        Mahalanobis().fit(np.r_[np.tile(row, (5, 1)), np.tile(-row, (5, 1))])


def test_not_defined_cells_are_blank_with_hover_text_in_the_heatmap():
    from components.charts import ood as C
    rng = np.random.default_rng(14)
    d = 16
    row = rng.normal(size=d)
    id_f = _synthetic([f"id {i}" for i in range(12)], np.tile(row, (12, 1)), rng)
    far = _synthetic([f"far {i}" for i in range(6)], row + 50 * rng.normal(size=(6, d)), rng)
    study = study_from_features(id_f, {"far": far}, OODSettings(poolings=("last",), knn_k=2))
    fig = C.metrics_heatmap(study)
    heat, grey = fig.data[0], [t for t in fig.data if t.name == "not defined"][0]
    y = list(heat.y)
    i, j = y.index("ViM"), y.index("Energy")
    assert np.isnan(heat.z[i][0]) and "not defined" in heat.customdata[i][0]
    assert grey.z[i][0] == 1 and grey.text[i][0] == "n/d" and "not defined" in grey.customdata[i][0]
    # a logit score at a layer is just not applicable: no grey cell, no "not defined"
    assert np.isnan(grey.z[j][0]) and "not defined" not in heat.customdata[j][0] and grey.text[j][0] == ""
    assert grey.z[y.index("KNN·last")][0] != 1 and not np.isnan(heat.z[y.index("KNN·last")][0])
    for f in (C.score_histograms(study, "ViM", 0), C.roc_curves(study, "ViM", 0), C.auroc_by_layer(study)):
        assert f.layout.title.text
    assert any("not defined" in (a.text or "") for a in C.roc_curves(study, "ViM", 0).layout.annotations)


def test_vim_and_neco_dims_are_capped_by_the_numerical_rank():
    rng = np.random.default_rng(15)
    X = _low_rank(rng, 40, 64)
    z = rng.normal(size=(40, 30))
    with pytest.raises(InputError, match="numerical rank 3"):
        ViM(dim=3).fit(X, z)
    sc = ViM(dim=32, cap_to_rank=True).fit(X, z)
    assert (sc.dim_, sc.rank_) == (2, 3) and np.isfinite(sc.alpha_) and sc.alpha_ < 1e6
    with pytest.raises(InputError, match="numerical rank 3"):
        NECO(4).fit(X)
    assert NECO(20, cap_to_rank=True).fit(X).k_ == 3
    # the identities still hold: ViM with an empty residual is Energy, NECO with k = rank keeps the whole ID span
    Y, zy = rng.normal(size=(9, 64)), rng.normal(size=(9, 30))
    np.testing.assert_allclose(ViM(dim=64).fit(X, z).score(Y, zy), Energy().score(zy))
    inside = _low_rank(np.random.default_rng(15), 9, 64)  # same basis (same seed), other coefficients
    r = NECO(3, times_maxlogit=False).fit(X).score(inside)
    np.testing.assert_allclose(r, 1.0, atol=1e-9)


LOGIT_SCORERS = [MSP(), MaxLogit(), Energy(), GEN(), LogitGap(10)]


@pytest.mark.parametrize("sc", LOGIT_SCORERS + ["ViM", "NECO"], ids=lambda s: s if isinstance(s, str) else s.name)
@pytest.mark.parametrize("dense", [True, False], ids=["dense", "stats"])
def test_nan_logits_are_rejected_naming_the_scorer_and_the_row(sc, dense):
    from analysis.core.errors import NumericalError
    rng = np.random.default_rng(16)
    z = rng.normal(size=(6, 40))
    bad = z.copy()
    bad[4, 7] = np.nan  # not the top logit: it would be silently skipped
    X = rng.normal(size=(6, 5))
    if sc == "ViM":
        sc, call = ViM(dim=2).fit(rng.normal(size=(20, 5)), rng.normal(size=(20, 40))), (lambda lg: sc.score(X, lg))
    elif sc == "NECO":
        sc, call = NECO(2).fit(rng.normal(size=(20, 5))), (lambda lg: sc.score(X, lg))
    else:
        call = sc.score
    call(z if dense else logit_stats(z))  # clean logits are fine
    with pytest.raises(NumericalError, match=rf"{sc.name}.*row 4"):
        call(bad if dense else logit_stats(bad))


@pytest.mark.parametrize("sc", LOGIT_SCORERS, ids=lambda s: s.name)
def test_masked_vocabulary_entries_are_ignored(sc):
    # -inf logits (masked tokens) must act as if the token were not in the vocabulary
    rng = np.random.default_rng(17)
    V = 60
    z = rng.normal(scale=2, size=(8, V))
    keep = [rng.permutation(V)[:m] for m in (60, 40, 12, 11, 6, 3, 2, 30)]  # rows 3-6 have fewer than N + 1 = 11
    masked = np.full_like(z, -np.inf)
    for i, k in enumerate(keep):
        masked[i, k] = z[i, k]
    got = sc.score(masked)
    want = np.array([sc.score(z[i:i + 1, k])[0] for i, k in enumerate(keep)])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    if sc.name != "GEN":  # GEN needs its top M = 100 kept; the others work from a top-20 summary too
        np.testing.assert_allclose(sc.score(logit_stats(masked, k=20)), want, rtol=1e-12)


def test_logit_scores_refuse_rows_without_enough_finite_logits():
    from analysis.core.errors import NumericalError
    z = np.zeros((3, 10))
    z[1] = -np.inf
    for sc in LOGIT_SCORERS:
        with pytest.raises(NumericalError, match=rf"{sc.name}.*row 1"):
            sc.score(z)
    one = np.full((2, 10), -np.inf)
    one[:, 0] = 1.0
    one[0, 1] = 0.0
    with pytest.raises(NumericalError, match=r"LogitGap.*row 1.*1 finite"):
        LogitGap(10).score(one)
    with pytest.raises(NumericalError, match=r"MaxLogit.*row 0"):
        MaxLogit().score(np.array([[np.inf, 0.0]]))
