"""OOD figures: built from a study, best cell outlined where the table says, prompts escaped in the 2-D map hover."""
from __future__ import annotations

import numpy as np

from analysis.ood import (
    OODFeatures,
    OODSettings,
    auroc_table,
    best_from_table,
    logit_stats,
    project_2d,
    study_from_features,
)
from components.charts import ood as C


def _feats(prompts, X, rng, V=40):
    st = logit_stats(rng.normal(size=(len(prompts), V)))
    L = np.stack([X, X + 0.1, X + 0.2])
    return OODFeatures(tuple(prompts), (0, 1, 2), L, L, L, np.stack([st.top] * 3), np.stack([st.lse] * 3), st.top,
                       st.lse, rng.normal(size=len(prompts)), np.full(len(prompts), 2), np.zeros(X.shape[1]), V)


def best_from_table_value(study):
    table = auroc_table(study)
    return table.loc[best_from_table(table)]


def _study():
    rng = np.random.default_rng(0)
    id_f = _feats([f"id {i}" for i in range(30)], rng.normal(size=(30, 12)), rng)
    ood = {"<b>bold</b>": _feats([f"<script>x{i}</script>" for i in range(10)], rng.normal(2, 1, size=(10, 12)), rng),
           "far": _feats([f"far {i}" for i in range(10)], rng.normal(-3, 1, size=(10, 12)), rng)}
    return id_f, ood, study_from_features(id_f, ood, OODSettings())


def test_every_figure_builds_and_the_best_cell_is_outlined():
    id_f, ood, study = _study()
    fig = C.metrics_heatmap(study)
    score, col = study.best_score, ("final logits" if study.best_layer is None else f"layer {study.best_layer}")
    assert auroc_table(study).loc[score, col] == best_from_table_value(study)
    rect = fig.layout.shapes[0]
    assert list(fig.data[0].y)[round(rect.y0 + 0.5)] == score
    assert list(fig.data[0].x)[round(rect.x0 + 0.5)] == col
    figs = [fig, C.auroc_by_layer(study), C.score_histograms(study, "KNN·last", 1), C.roc_curves(study, "Energy"),
            C.compare_auroc_by_layer(study, study, "A", "B"),
            C.projection_map(project_2d(id_f, ood, 1, id_name="ids"))]
    for f in figs:
        assert f.layout.title.text and f.layout.height
    fig = C.metrics_heatmap(study, "fpr95_ood", "far")
    score, col = best_from_table(auroc_table(study, "far", "fpr95_ood"), "fpr95_ood")
    rect = fig.layout.shapes[0]
    assert list(fig.data[0].y)[round(rect.y0 + 0.5)] == score and list(fig.data[0].x)[round(rect.x0 + 0.5)] == col
    assert len(figs[1].data) == len(study.feature_scores) + len(study.logit_scores)
    assert len(figs[3].data) == len(study.ood_names) + 1


def test_prompts_and_set_names_are_escaped():
    id_f, ood, _ = _study()
    fig = C.projection_map(project_2d(id_f, ood, 2, id_name="ids"))
    hover = [c[0] for tr in fig.data for c in tr.customdata]
    names = [tr.name for tr in fig.data] + [tr.hovertemplate for tr in fig.data]
    assert any(h == "&lt;script&gt;x1&lt;/script&gt;" for h in hover)
    assert not any("<script>" in h for h in hover)
    assert "&lt;b&gt;bold&lt;/b&gt;" in names and not any("<b>bold" in n for n in names)
