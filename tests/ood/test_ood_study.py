"""OOD study: features from tiny models (mean log-likelihood = the HF loss, pooling), the held-out rule, small-set
errors and fallbacks, the best-layer pick and its tie-break, the 2-D map, BLOOD, and the demo acceptance on the zoo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.core.errors import InputError
from analysis.models.tiny import ALL_TYPES, ToyTokenizer, tiny_model
from analysis.ood import (
    ALL_OOD,
    ID_KEY,
    OODSettings,
    auroc_table,
    best_from_table,
    extract_features,
    metrics_frame,
    project_2d,
    run_study,
    study_from_features,
)
from tests.ood_fixtures import synthetic as _synthetic

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
    from analysis.ood import clear_map_cache
    clear_map_cache()
    u2 = project_2d(a, {"b": b}, 2, method="umap", random_state=3)
    np.testing.assert_allclose(u1.coords, u2.coords, atol=1e-4)


# ----------------------------------------------------------------------------------------- the zoo
@pytest.mark.parametrize("name", ["gpt2-world-base", "llama-world-base"])
def test_zoo_scrambled_and_random_chars_separate_from_held_out_facts(name):
    from analysis.core.loading import ModelSpec, load_model
    from analysis.core.paths import zoo_models
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
    assert all(key <= (f, a) for f, a in zip(top.fpr95_id, top.autc, strict=True))


# ----------------------------------------------------------------------------------------- BLOOD (optional)
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_blood_exact_norm_equals_the_autograd_jacobian_and_the_estimate_is_close(model_type):
    from analysis.core.batching import encode
    from analysis.core.forward import run
    from analysis.core.hooks import residual_hook
    from analysis.ood import blood_norms
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
            return
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
