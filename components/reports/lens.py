"""Logit lens report: traces (and the A-vs-B comparison) -> the page's bundle figures and tables."""
from __future__ import annotations

from collections.abc import Mapping

from analysis import lens as L
from analysis.errors import InputError
from analysis.prompts import PromptSet
from components.charts import lens as charts
from components.reports import Report

PAGE = "Logit lens"
BUNDLE = "logit_lens"
DEFAULTS = {"k": 10, "max_pos": 24, "target_mode": L.TARGET_TEXT, "metric": next(iter(charts.COLOR_METRICS)),
            "positions": "last"}
LAYER_CONVENTION = "0 = embeddings, L = last block output before final norm"


def parse_target(text: str) -> str | int:
    """The typed target: '#123' is a token id, anything else is text (leading spaces kept)."""
    stripped = text.strip()
    if stripped.startswith("#") and stripped[1:].isdigit():
        return int(stripped[1:])
    return text


def resolve_targets(prompt_set: PromptSet, typed: str) -> tuple:
    """Per prompt target: the set's own, else the typed one; InputError when nothing usable is given."""
    typed_target = parse_target(typed) if typed != "" else None
    per = tuple(r.target if r.target else typed_target for r in prompt_set.rows)
    if all(t is None for t in per):
        raise InputError("The target is empty. Type the target token's text (e.g. ' Paris', with its leading space; "
                         "or #id for a token id), or choose another target mode.")
    return per


def lens_settings(k: int, target_mode: str, target_text: str | None, metric: str, max_pos: int, positions: str,
                  n: int, t_sel: int, prompt_set: PromptSet | None = None) -> dict:
    """The settings recorded in the bundle's metadata (n is the 0-based prompt shown). In text mode they record the
    per-prompt targets actually used (the set's own, else the typed one: text, or #id for a token id), and the
    typed target only when some prompt used it."""
    used, typed = None, None
    if target_mode == L.TARGET_TEXT and prompt_set is not None:
        used = [f"#{t}" if isinstance(t, int) else t for t in resolve_targets(prompt_set, target_text or "")]
        typed = target_text if any(not r.target for r in prompt_set.rows) else None
    return {"top_k": k, "target_mode": target_mode, "target_text": typed, "targets_used": used,
            "colour": metric, "positions_shown": max_pos, "aggregate_positions": positions, "prompt_shown": n + 1,
            "position_table": t_sel, "layer_convention": LAYER_CONVENTION}


def default_position(traces: Mapping[str, L.LensTrace], n: int = 0) -> int:
    """The page's default position for the top-k table: the shown prompt's last position."""
    first = next(iter(traces.values()))
    return max(int(first.lengths[n]) - 1, 0)


def lens_report(traces: Mapping[str, L.LensTrace], comparison: L.LensComparison | None = None, *,
                target_mode: str = DEFAULTS["target_mode"], metric: str = DEFAULTS["metric"],
                max_pos: int = DEFAULTS["max_pos"], positions: str = DEFAULTS["positions"], n: int = 0,
                t_sel: int | None = None) -> Report:
    """Bundle figures/tables for traces keyed "A: name" (and "B: name"): heatmap, target, position table per
    checkpoint, mean KL and decision depth over the set, and the A-vs-B KL views when comparison is given."""
    if t_sel is None:
        t_sel = default_position(traces, n)
    n_prompts = len(next(iter(traces.values())).prompts)
    rep = Report()
    for label, tr in traces.items():
        which = label.split(":")[0]
        rep.add(f"heatmap_{which}", charts.lens_heatmap(tr, n, metric, max_pos), charts.heatmap_frame(tr, n, max_pos))
        chosen, at_pos = ([n] if n_prompts == 1 else list(range(n_prompts))), None
        if target_mode == L.TARGET_NEXT:  # the next token exists up to the second-to-last position
            chosen, at_pos = [n], min(t_sel, int(tr.lengths[n]) - 2)
        if target_mode != L.TARGET_NONE and (at_pos is None or at_pos >= 0):
            rep.add(f"target_{which}", charts.target_lines(tr, chosen, at_pos), charts.target_frame(tr, chosen, at_pos))
        rep.add(f"position_{which}", table=charts.position_table(tr, n, min(t_sel, int(tr.lengths[n]) - 1)))
        rep.notes.extend(f"{which}: {note}" for note in tr.notes)
    rep.add("mean_kl", charts.mean_kl_figure(traces, positions), charts.mean_kl_frame(traces, positions))
    rep.add("decision_depth", charts.decision_depth_histogram(traces, positions),
            charts.decision_depth_frame(traces, positions))
    if comparison is not None:
        rep.add("kl_a_b_heatmap", charts.compare_heatmap(comparison, n, max_pos))
        rep.add("kl_a_b_mean", charts.compare_mean_figure(comparison), charts.compare_frame(comparison))
    return rep
