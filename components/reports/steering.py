"""Steering and personas report: vectors, monitoring, flagged data, generations, sweep and drift -> bundle files.

The page builds its bundle part by part (each tab adds its part when it has run); steering_report composes the same
parts for the command line, in the page's tab order.
"""
from __future__ import annotations

from collections.abc import Mapping

from analysis.persona_drift import Drift, Flagged
from analysis.steering import GenerationComparison, Sweep
from analysis.steering_vectors import Monitoring, SteeringVectors
from components.charts import steering as charts
from components.reports import Report

PAGE = "steering"
BUNDLE = "steering"
# gen_prompt, token_a and token_b come from the model and the contrast set (None here): the generation prompt is
# analysis.model_defaults.default_question(lm), the tokens analysis.steering_vectors.default_trait_tokens.
# Every layer default is SteeringVectors.default_layer() (its rule: steering_vectors.DEFAULT_LAYER_RULE).
DEFAULTS = {"seed": 0, "alpha": 4.0, "gen_prompt": None, "new_tokens": 20,
            "temperature": 0.0, "gen_seed": 0, "alphas": (-4.0, -2.0, 0.0, 2.0, 4.0, 8.0), "token_a": None,
            "token_b": None, "sweep_prompts": 12, "drift_seed": 0, "flag_rows": 16, "flag_tokens": 16}


def default_sweep_layers(sv: SteeringVectors, n_layers: int) -> tuple[int, ...]:
    """The page's default sweep layers: middle, default and last (each at least 1), sorted."""
    return tuple(sorted({max(1, n_layers // 2), max(1, sv.default_layer()), n_layers}))


def vector_settings(sv: SteeringVectors) -> dict:
    """The vectors' provenance as recorded in the metadata's settings, with the default layer and why."""
    choice = sv.default_layer_choice()
    return dict(vector_method=sv.method, vector_rule=sv.position_rule, vector_set=sv.prompt_set_name,
                vector_set_sha256=sv.prompt_set_sha256, positive=sv.positive, negative=sv.negative,
                default_layer=choice.layer, default_layer_why=choice.caption)


def prompt_sets_setting(used_sets) -> list[dict]:
    """settings["prompt_sets"]: name, hash and size of every prompt set the run used."""
    return [{"name": p.name, "sha256": p.sha256, "n": len(p)} for p in used_sets if p is not None]


def build_report(sv: SteeringVectors, hist_layer: int | None = None) -> Report:
    """Held-out separability per layer (when there is a test split) and the contrast projection at hist_layer."""
    rep = Report()
    if sv.n_test:
        rep.add("separability", charts.separability_figure(sv), charts.separability_table(sv))
    if sv.projections.size:
        rep.add("contrast_projection", charts.build_projection_figure(sv, sv.default_layer() if hist_layer is None
                                                                      else hist_layer))
    return rep


def monitoring_report(mon: Monitoring, layer: int, which: str) -> Report:
    """Projections of one checkpoint's prompts on the vector at layer."""
    rep = Report()
    rep.add(f"monitoring_{which}", charts.monitoring_figure(mon, layer), charts.monitoring_table(mon))
    return rep


def flag_report(flagged: Flagged) -> Report:
    """Rows ranked by how far their responses push checkpoint A toward the trait."""
    rep = Report()
    rep.add("data_flagging", charts.flagged_figure(flagged), charts.flagged_table(flagged))
    return rep


def generations_report(cmp: GenerationComparison) -> Report:
    """Unsteered vs steered generation."""
    rep = Report()
    rep.add("generations", charts.generations_figure(cmp), charts.generations_table(cmp))
    return rep


def sweep_report(sw: Sweep) -> Report:
    """Logit difference and KL per layer and alpha, targets vs controls."""
    rep = Report()
    rep.add("steering_sweep", charts.sweep_figure(sw), charts.sweep_table(sw))
    rep.add("targets_vs_controls", charts.targets_vs_controls_figure(sw))
    return rep


def drift_report(drift: Drift) -> Report:
    """B − A along the vector per layer against a random direction."""
    rep = Report()
    rep.add("persona_drift", charts.drift_figure(drift), charts.drift_table(drift))
    return rep


def steering_report(sv: SteeringVectors, *, hist_layer: int | None = None,
                    monitoring: Mapping[str, Monitoring] | None = None, monitor_layer: int | None = None,
                    flagged: Flagged | None = None, generations: GenerationComparison | None = None,
                    sweep: Sweep | None = None, drift: Drift | None = None) -> Report:
    """Every part that was run, in the page's order (Build, Monitor, Flag, Generations, Sweep, Drift)."""
    rep = build_report(sv, hist_layer)
    for which, mon in (monitoring or {}).items():
        rep.merge(monitoring_report(mon, sv.default_layer() if monitor_layer is None else monitor_layer, which))
    if flagged is not None:
        rep.merge(flag_report(flagged))
    if generations is not None:
        rep.merge(generations_report(generations))
    if sweep is not None:
        rep.merge(sweep_report(sweep))
    if drift is not None:
        rep.merge(drift_report(drift))
    return rep
