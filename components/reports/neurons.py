"""Confidence neurons report: entropy/frequency scans, ablations and the induction study -> bundle files.

The page adds each tab's part when it has run; neurons_report composes the same parts for the command line.
"""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from analysis import induction as ind
from analysis import neuron_ablation as abl
from analysis import neuron_scan as ns
from components.charts import neurons as charts
from components.reports import Report

PAGE = "confidence_neurons"
BUNDLE = "confidence_neurons"
DEFAULTS = {"max_ref": 128, "processing": True, "k": None, "mode": "mean", "max_eval": 16, "n_random": 10, "seed": 0,
            "min_pos": 0, "as_set": True, "ind_source": "prompts", "ind_n": 16, "ind_len": 30, "ind_sets": 3,
            "ind_seed": 0, "ind_auto": 3}


def default_neurons(scan_a: ns.EntropyScan) -> str:
    """The page's default neurons to ablate: the top 3 of checkpoint A's scan by rho."""
    return ", ".join(scan_a.labels(scan_a.ranked[:3]))


def scan_report(scans: Mapping[str, ns.EntropyScan], freqs: Mapping[str, ns.FrequencyScan] | None = None,
                picks: Mapping[str, int] | None = None) -> Report:
    """Norm-vs-rho and norm-vs-logit-variance scatters, the spectrum of one neuron (default: the scan's top one) and
    the frequency scan (when given) per checkpoint."""
    rep = Report()
    for which, scan in scans.items():
        for y in ("rho", "logit_var"):
            rep.add(f"norm_vs_{y}_{which}", charts.scan_scatter(scan, y))
        rep.tables[f"scan_{which}"] = charts.scan_frame(scan)
        rep.add(f"spectrum_{which}", charts.spectrum_figure(scan, (picks or {}).get(which, int(scan.top[0]))))
        fs = (freqs or {}).get(which)
        if fs is not None:
            rep.add(f"frequency_{which}", charts.frequency_figure(fs), charts.frequency_frame(fs))
    return rep


def compare_report(scan_a: ns.EntropyScan, scan_b: ns.EntropyScan, name_a: str, name_b: str) -> Report:
    """rho of A vs B per neuron when the shapes match; the comparison's message is the report's note."""
    rep = Report()
    fig, msg = charts.compare_scans(scan_a, scan_b, name_a, name_b)
    rep.notes.append(msg)
    if fig is not None:
        rep.add("rho_A_vs_B", fig, charts.compare_frame(scan_a, scan_b))
    return rep


def ablation_report(results: Mapping[str, abl.AblationResult], scans: Mapping[str, ns.EntropyScan] | None = None
                    ) -> Report:
    """Total vs direct effect boxes, the mediation scatter (rho from the scan when given), the per-unit summary and
    the per-token effects per checkpoint."""
    rep = Report()
    for which, res in results.items():
        summ = charts.ablation_summary_frame(res)
        rep.add(f"te_de_boxes_{which}", charts.ablation_boxes(res))
        rep.tables[f"ablation_summary_{which}"] = summ
        sc = (scans or {}).get(which)
        rho = {lab: float(sc.rho[i]) for i, lab in enumerate(sc.labels())} if sc is not None else None
        rep.add(f"mediation_{which}", charts.mediation_scatter(res, rho))
        rep.tables[f"ablation_tokens_{which}"] = charts.ablation_token_frame(res)
    return rep


def induction_report(results: Mapping[str, ind.InductionResult]) -> Report:
    """Clean vs ablated entropy and loss per position, and the study's summary, per checkpoint."""
    rep = Report()
    for which, res in results.items():
        rep.add(f"induction_{which}", charts.induction_figure(res), charts.induction_frame(res))
        rep.tables[f"induction_summary_{which}"] = pd.DataFrame([res.summary])
    return rep


def neurons_report(scans: Mapping[str, ns.EntropyScan], freqs: Mapping[str, ns.FrequencyScan] | None = None, *,
                   picks: Mapping[str, int] | None = None, names: Mapping[str, str] | None = None,
                   ablations: Mapping[str, abl.AblationResult] | None = None,
                   inductions: Mapping[str, ind.InductionResult] | None = None) -> Report:
    """Every part that was run, in the page's tab order (Scan, Ablate, Induction)."""
    rep = scan_report(scans, freqs, picks)
    if "A" in scans and "B" in scans:
        names = names or {"A": "A", "B": "B"}
        rep.merge(compare_report(scans["A"], scans["B"], names["A"], names["B"]))
    if ablations:
        rep.merge(ablation_report(ablations, scans))
    if inductions:
        rep.merge(induction_report(inductions))
    return rep
