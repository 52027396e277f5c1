"""OOD separability report: per-checkpoint studies and 2-D maps -> the page's bundle figures and tables."""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from analysis import ood as O
from analysis.ood_metrics import METRIC_LABELS
from components.charts import ood as charts
from components.reports import Report

PAGE = "OOD separability"
BUNDLE = "ood_separability"
DEFAULT_OOD = ("ood_scrambled", "ood_random_chars", "ood_arithmetic")
DEFAULTS = {"seed": 0, "fit_fraction": 0.5, "knn_k": 5, "shrinkage": "ledoit-wolf", "vim_dim": 0, "neco_k": 0,
            "gap_n": 10, "batch_size": 32, "poolings": ("last", "mean"), "blood_draws": 20, "metric": next(iter(METRIC_LABELS)),
            "layer": "best", "method": "pca", "fit_on": "id", "map_pool": "last", "random_state": 0}
LAYER_CONVENTION = "0 = embeddings, L = last block output before final norm"


def metric_sets(study: O.OODStudy) -> list[str]:
    """The OOD sets the metrics can be shown for: "all OOD" first when there are several."""
    return ([O.ALL_OOD] if len(study.ood_names) > 1 else []) + list(study.ood_names)


def scores(study: O.OODStudy) -> list[str]:
    """Every score of the study (feature scores, then logit scores)."""
    return list(study.feature_scores + study.logit_scores)


def view_for(study: O.OODStudy, ood_view: str) -> str | None:
    """ood_view if this study has it, else None (the study's default)."""
    return ood_view if ood_view in (O.ALL_OOD, *study.ood_names) else None


def score_layer(study: O.OODStudy, score: str, layer_opt: str | int) -> int | None:
    """The layer of the histograms and ROC: None for logit scores, the score's best layer for "best"."""
    if score in study.logit_scores:
        return None
    if layer_opt == "best":
        return study.best_layer_by_score.get(score, study.layers[-1])
    return min(int(layer_opt), study.layers[-1])


def map_layer(study: O.OODStudy, score: str, layer_opt: str | int) -> int:
    """The layer of the 2-D map: the histogram layer, or the study's best (else last) layer for logit scores."""
    layer = score_layer(study, score, layer_opt)
    if layer is None:
        return study.best_layer if study.best_layer is not None else study.layers[-1]
    return layer


def scores_frame(study: O.OODStudy) -> pd.DataFrame:
    """Every score of every scored prompt (long format: set, prompt, score, layer, value)."""
    rows = []
    for score, per_set in study.scores.items():
        is_logit = score in study.logit_scores
        for s, arr in per_set.items():
            for li in range(arr.shape[0]):
                layer = None if is_logit else study.layers[li]
                rows.append(pd.DataFrame({"set": s, "prompt": study.prompts[s], "score": score, "layer": layer,
                                          "value": arr[li]}))
    df = pd.concat(rows, ignore_index=True)
    df["layer"] = df["layer"].astype("Int64")
    return df


def projection_frame(proj: O.Projection2D) -> pd.DataFrame:
    """The 2-D map's points: set, prompt, x, y."""
    return pd.DataFrame({"set": proj.set_names, "prompt": proj.prompts, "x": proj.coords[:, 0], "y": proj.coords[:, 1]})


def ood_settings(study: O.OODStudy, *, id_name: str, id_group: str | None, ood_sets: Mapping, batch_size: int,
                 blood_draws: int, ood_view: str, metric: str, score: str, layer_opt: str | int, method: str,
                 fit_on: str, map_pool: str, random_state: int) -> dict:
    """The settings recorded in the bundle's metadata (ood_sets: {name: PromptSet})."""
    return {**study.settings, "id_set": id_name, "id_group": id_group,
            "ood_sets": {n: {"sha256": ps.sha256, "n_prompts": len(ps)} for n, ps in ood_sets.items()},
            "batch_size": batch_size, "blood_draws": blood_draws, "view_ood_set": ood_view, "metric": metric,
            "score": score, "layer": layer_opt, "projection": {"method": method, "fit_on": fit_on, "pooling": map_pool,
                                                               "random_state": random_state},
            "aupr_estimator": "sklearn average_precision_score", "layer_convention": LAYER_CONVENTION}


def ood_report(studies: Mapping[str, O.OODStudy], projections: Mapping[str, O.Projection2D], *,
               ood_view: str | None = None, metric: str = DEFAULTS["metric"], score: str | None = None,
               layer_opt: str | int = DEFAULTS["layer"]) -> Report:
    """Bundle figures/tables for studies keyed "A: name" (and "B: name") with their 2-D maps: metrics heatmap and
    tables, metric by layer, score histograms and ROC, the map, and A vs B by layer when both are given."""
    first = next(iter(studies.values()))
    ood_view = ood_view or metric_sets(first)[0]
    score = score or first.best_score
    rep = Report()
    for label, study in studies.items():
        which = label.split(":")[0]
        view = view_for(study, ood_view)
        data = O.auroc_table(study, view, metric).reset_index()
        rep.add(f"metrics_{which}", charts.metrics_heatmap(study, metric, view), data)
        rep.tables[f"metrics_all_{which}"] = O.metrics_frame(study)
        rep.add(f"by_layer_{which}", charts.auroc_by_layer(study, view, metric))
        layer = score_layer(study, score, layer_opt)
        rep.add(f"histograms_{which}", charts.score_histograms(study, score, layer), scores_frame(study))
        rep.tables[f"scores_{which}"] = rep.tables.pop(f"histograms_{which}")
        rep.add(f"roc_{which}", charts.roc_curves(study, score, layer))
        proj = projections[label]
        rep.add(f"map_{which}", charts.projection_map(proj), projection_frame(proj))
        rep.notes.extend(f"{which}: {note}" for note in study.notes)
    if len(studies) == 2:
        (la, sa), (lb, sb) = studies.items()
        ta = O.auroc_table(sa, ood_view, metric).reset_index().assign(checkpoint="A")
        tb = O.auroc_table(sb, view_for(sb, ood_view), metric).reset_index()
        rep.add("a_vs_b", charts.compare_auroc_by_layer(sa, sb, la, lb, ood_view, metric),
                pd.concat([ta, tb.assign(checkpoint="B")], ignore_index=True))
    return rep
