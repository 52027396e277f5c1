"""OOD separability: the methods.md section 6 identities, the metrics against scikit-learn, the held-out rule,
and the demo acceptance on the zoo."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analysis.errors import InputError
from analysis.ood import (ALL_OOD, ID_KEY, OODSettings, auroc_table, best_from_table, metrics_frame, project_2d,
                          run_study, study_from_features)
from analysis.ood_features import OODFeatures, extract_features
from analysis.ood_metrics import all_metrics, aupr_in, aupr_out, auroc, autc, fpr95_id, fpr95_ood
from analysis.ood_scores import (GEN, KNN, MSP, NECO, Energy, LogitGap, Mahalanobis, MaxLogit, ViM, logit_stats,
                                 vim_origin)
from analysis.tiny import ALL_TYPES, ToyTokenizer, tiny_model


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


# ----------------------------------------------------------------------------------------- features
PROMPTS = ["5 17 3", "9 9 9 9 9 4 22", "40 2", "7 8 6 5 4 3 2 11 12", "31 30"]


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_mean_loglik_equals_hf_loss_at_batch_one_and_ignores_padding(model_type):
    lm = tiny_model(model_type)
    right = extract_features(lm, PROMPTS, batch_size=5, padding_side="right")
    left = extract_features(lm, PROMPTS, batch_size=3, padding_side="left")
    for i, p in enumerate(PROMPTS):
        ids = torch.tensor([lm.tokenizer(p)["input_ids"]])
        with lm.lock, torch.inference_mode():
            loss = lm.model(input_ids=ids, labels=ids).loss.item()
        assert right.mean_loglik[i] == pytest.approx(-loss, abs=1e-4), (model_type, p)
    np.testing.assert_allclose(left.mean_loglik, right.mean_loglik, atol=1e-4)
    np.testing.assert_allclose(left.last, right.last, atol=1e-3)
    np.testing.assert_allclose(left.mean, right.mean, atol=1e-3)
    np.testing.assert_allclose(left.final_lse, right.final_lse, atol=1e-3)
    # the lens at the last layer is the model's own readout
    np.testing.assert_allclose(right.lens_top[-1], right.final_top[:, :right.lens_top.shape[-1]], atol=1e-3)
    np.testing.assert_allclose(right.lens_lse[-1], right.final_lse, atol=1e-3)
    assert right.last.shape == (lm.adapter.n_layers + 1, len(PROMPTS), lm.adapter.d_model)


def test_mean_pooling_leaves_bos_out():
    lm = tiny_model("llama")
    f = extract_features(lm, ["5 6 7"], layers=[0])
    with lm.lock, torch.inference_mode():
        emb = lm.model.get_input_embeddings()(torch.tensor([[1, 5, 6, 7]]))[0]
    np.testing.assert_allclose(f.mean[0, 0], emb[1:].mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(f.last[0, 0], emb[-1].numpy(), atol=1e-5)


def test_mean_pooling_keeps_a_bos_token_the_tokenizer_did_not_add():
    # SmolLM2's tokenizer never adds its bos_token <|im_start|>; a prompt that spells it out keeps it in the mean
    lm = tiny_model("llama")
    lm.tokenizer = ToyTokenizer(lm.adapter.vocab_size, add_bos=False)
    f = extract_features(lm, ["1 5 6 7", "5 6 7"], layers=[0])  # "1" is the bos_token_id, typed as text
    with lm.lock, torch.inference_mode():
        emb = lm.model.get_input_embeddings()(torch.tensor([[1, 5, 6, 7]]))[0]
    np.testing.assert_allclose(f.mean[0, 0], emb.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(f.mean[0, 1], emb[1:].mean(0).numpy(), atol=1e-5)  # nothing dropped from "5 6 7"


# ----------------------------------------------------------------------------------------- study
def _synthetic(prompts: list[str], X: np.ndarray, rng: np.random.Generator, V: int = 50) -> OODFeatures:
    n, d = X.shape
    z = rng.normal(size=(n, V))
    st = logit_stats(z)
    return OODFeatures(tuple(prompts), (0, 1), np.stack([X, X]), np.stack([X, X]), np.stack([X, X]),
                       np.stack([st.top, st.top]), np.stack([st.lse, st.lse]), st.top, st.lse,
                       rng.normal(size=n), np.full(n, 3), np.zeros(d), V)


def test_no_score_is_computed_on_its_own_fit_points():
    # ID and OOD come from the same distribution. Scoring the fitted points would give them KNN distance 0
    # (k = 1) and a small Mahalanobis distance (N < d), so AUROC would be ~1; held-out points give ~0.5.
    rng = np.random.default_rng(10)
    d = 40
    id_f = _synthetic([f"id {i}" for i in range(60)], rng.normal(size=(60, d)), rng)
    ood_f = _synthetic([f"ood {i}" for i in range(30)], rng.normal(size=(30, d)), rng)
    study = study_from_features(id_f, {"same": ood_f}, OODSettings(knn_k=1, poolings=("last",)))
    assert np.intersect1d(study.fit_index, study.heldout_index).size == 0
    fit_prompts = {study.id_prompts[i] for i in study.fit_index}
    assert not fit_prompts & set(study.prompts[ID_KEY])
    table = auroc_table(study)
    assert table.loc["KNN·last"].dropna().max() < 0.8
    assert table.loc["Mahalanobis·last"].dropna().max() < 0.8


def test_study_small_sets_give_clear_errors_and_documented_fallbacks():
    rng = np.random.default_rng(11)
    id_f = _synthetic([f"id {i}" for i in range(8)], rng.normal(size=(8, 6)), rng)
    one = _synthetic(["lonely"], rng.normal(size=(1, 6)), rng)
    with pytest.raises(InputError, match="'tiny' has 1 prompt"):
        study_from_features(id_f, {"tiny": one})
    few = _synthetic(["a", "b", "c"], rng.normal(size=(3, 6)), rng)
    with pytest.raises(InputError, match="at least 4 are needed"):
        study_from_features(few, {"ood": id_f})
    dup = _synthetic(["x", "x", "y", "y", "z"], rng.normal(size=(5, 6)), rng)
    with pytest.raises(InputError, match="3 distinct prompt"):
        study_from_features(dup, {"ood": id_f})
    ood = _synthetic([f"o {i}" for i in range(5)], rng.normal(size=(5, 6)), rng)
    study = study_from_features(id_f, {"ood": ood}, OODSettings(knn_k=10, vim_dim=5, neco_k=50))
    notes = " ".join(study.notes)
    assert "KNN's k was lowered from 10 to 3" in notes and "ViM's dim was lowered" in notes and "NECO" in notes


@pytest.fixture(scope="module")
def tiny_study():
    lm = tiny_model("gpt2")
    idp = [" ".join(str((i * 7 + j * 3) % 50 + 3) for j in range(5 + i % 4)) for i in range(30)]
    oodp = {"a": [" ".join(str(60 + (i * j) % 30) for j in range(6)) for i in range(10)],
            "b": ["9 9 9 " + str(i) for i in range(8)]}
    seen: list[float] = []
    study = run_study(lm, idp, oodp, id_name="ids", progress=lambda f, m: seen.append(f))
    return lm, study, seen


def test_study_reports_progress_and_best_layer_pick_agrees_with_the_table(tiny_study):
    _, study, seen = tiny_study
    assert seen and seen[-1] == pytest.approx(1.0) and all(0 <= f <= 1 for f in seen)
    table = auroc_table(study)
    score, col = best_from_table(table)
    assert score == study.best_score
    assert col == ("final logits" if study.best_layer is None else f"layer {study.best_layer}")
    assert table.loc[score, col] == pytest.approx(study.best_auroc)
    df = metrics_frame(study)
    for name, layer in study.best_layer_by_score.items():
        assert table.loc[name, f"layer {layer}"] == pytest.approx(table.loc[name].max())
    _check_tie_break(study, df)
    assert set(df.ood_set) == {"a", "b", ALL_OOD}
    assert len(study.scores["KNN·last"][ID_KEY][0]) == len(study.heldout_index)


def test_projection_is_deterministic_and_cached(tiny_study):
    lm = tiny_study[0]
    a = extract_features(lm, [f"{i} {i + 1} {i + 2}" for i in range(12)])
    b = extract_features(lm, [f"80 {i}" for i in range(6)])
    p1 = project_2d(a, {"b": b}, 1, method="pca", fit_on="id")
    p2 = project_2d(a, {"b": b}, 1, method="pca", fit_on="id")
    assert p1 is p2 and p1.coords.shape == (18, 2) and p1.set_names.count("b") == 6
    p3 = project_2d(a, {"b": b}, 1, method="pca", fit_on="all")
    assert p3 is not p1
    u1 = project_2d(a, {"b": b}, 2, method="umap", random_state=3)
    from analysis import ood as ood_mod
    ood_mod._PROJ_CACHE.clear()
    u2 = project_2d(a, {"b": b}, 2, method="umap", random_state=3)
    np.testing.assert_allclose(u1.coords, u2.coords, atol=1e-4)


# ----------------------------------------------------------------------------------------- the zoo
@pytest.mark.parametrize("name", ["gpt2-world-base", "llama-world-base"])
def test_zoo_scrambled_and_random_chars_separate_from_held_out_facts(name):
    from analysis.loading import ModelSpec, load_model, zoo_models
    from analysis.prompts import load_builtin
    if name not in zoo_models():
        pytest.skip(f"{name} is not in zoo/ yet")
    lm = load_model(ModelSpec(name, device="cpu"))
    ood = {k: load_builtin(k).prompts[:60] for k in ("ood_scrambled", "ood_random_chars")}
    study = run_study(lm, load_builtin("facts").prompts, ood, id_name="facts", batch_size=32)
    df = metrics_frame(study)
    for k in ood:
        best = df[df.ood_set == k].auroc.max()
        assert best >= 0.9, (name, k, best)
    table = auroc_table(study)
    col = "final logits" if study.best_layer is None else f"layer {study.best_layer}"
    assert table.loc[study.best_score, col] == pytest.approx(table.max().max()) == pytest.approx(study.best_auroc)
    _check_tie_break(study, df)
    print(name, study.best_score, col, table.round(3).to_string())


def _check_tie_break(study, df):
    """Among the cells with the table's best AUROC, the pick has the lowest (FPR@95 ID+, AUTC)."""
    target = ALL_OOD if len(study.ood_names) > 1 else study.ood_names[0]
    top = df[(df.ood_set == target) & np.isclose(df.auroc, df[df.ood_set == target].auroc.max(), atol=1e-12)]
    pick = top[(top.score == study.best_score)
               & ((top.layer.isna()) if study.best_layer is None else (top.layer == study.best_layer))]
    assert len(pick) == 1
    key = (float(pick.fpr95_id.iloc[0]), float(pick.autc.iloc[0]))
    assert all(key <= (f, a) for f, a in zip(top.fpr95_id, top.autc))


# ----------------------------------------------------------------------------------------- BLOOD (optional)
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_blood_exact_norm_equals_the_autograd_jacobian_and_the_estimate_is_close(model_type):
    from analysis.forward import run
    from analysis.hooks import residual_hook
    from analysis.batching import encode
    from analysis.ood_features import blood_norms
    lm = tiny_model(model_type)
    prompts = ["5 17 3 8", "9 9 4"]
    exact = blood_norms(lm, prompts, exact=True, batch_size=2)
    est = blood_norms(lm, prompts, n_draws=100, batch_size=2, seed=1)
    assert exact.shape == (2, lm.adapter.n_layers) and np.all(exact > 0)
    np.testing.assert_allclose(est, exact, rtol=0.35)  # 100 draws: relative sd <= sqrt(2/100)
    batch = encode(lm.tokenizer, prompts[:1])
    T = batch.input_ids.shape[1]
    for l in range(lm.adapter.n_layers):
        base: dict = {}

        def keep(h, store=base, key="h"):
            store[key] = h
            return None
        run(lm, batch, [residual_hook(lm.adapter, l, keep)])

        def f(x, l=l):
            got: dict = {}

            def put(h):
                h2 = h.clone()
                h2[0, T - 1] = x
                return h2
            run(lm, batch, [residual_hook(lm.adapter, l, put),
                            residual_hook(lm.adapter, l + 1, lambda h: keep(h[0, T - 1], got, "y"))],
                grad=True)
            return got["y"]
        J = torch.autograd.functional.jacobian(f, base["h"][0, T - 1].clone())
        assert exact[0, l] == pytest.approx(float((J ** 2).sum()), rel=1e-4), (model_type, l)


def test_blood_joins_the_study_as_a_global_score(tiny_study):
    lm = tiny_study[0]
    idp = [f"{i} {i + 3} {i + 5}" for i in range(10)]
    study = run_study(lm, idp, {"o": ["70 71 72 73", "80 81", "90 91 92"]}, blood_draws=3)
    assert "BLOOD" in study.logit_scores and "BLOOD" in set(metrics_frame(study).score)
    assert np.all(study.scores["BLOOD"][ID_KEY] <= 0)


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
    from analysis.ood import _split, _take
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
    from analysis.ood import ALL_OOD as _ALL, metrics_frame as _mf
    from analysis.ood_scores import NotDefinedError
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
    from analysis.errors import NumericalError
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
    from analysis.errors import NumericalError
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


def test_all_metrics_equals_each_metric_computed_alone_with_and_without_ties():
    """all_metrics derives every metric from one sort (the OOD-positive curve as its complement): it must give
    what each function gives through scikit-learn's own roc_auc_score / average_precision_score / roc_curve."""
    from analysis import ood_metrics as M

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

    from analysis.ood_metrics import _threshold_counts

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
