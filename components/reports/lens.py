"""The logit lens method, declared once: its settings, its computation (``compute``), its report (``report``).

The page draws its widgets from ``LensSettings``, caches ``compute`` and shows ``report``; ``python -m logitscope
lens`` derives its flags from the same declaration and calls ``run``; metadata.json records ``as_metadata``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import analysis.lens as L
from analysis.core.errors import InputError, LogitscopeError
from analysis.core.progress import Progress
from analysis.core.tokens import parse_token_ref
from analysis.core.wording import plural
from analysis.lens import tuned as TL
from analysis.models.pair import ModelPair, stage
from analysis.prompts import PromptSet
from components.charts import lens as charts
from components.charts import tuned_lens as tuned_charts
from components.notes import collapse_notes
from components.reports import Input, Inputs, Memo, Report, direct
from components.settings import as_metadata, compute_key, setting

PAGE = "Logit lens"
BUNDLE = "logit_lens"
KEY = "lens"
INPUTS = (Input("--prompts", "facts", "the prompts (targets from the set's target column, or --target-text)"),)
NEEDS_B = False
SHARDS = ("lens",)  # each checkpoint's lens over the set (analysis.lens.sharded)
LAYER_CONVENTION = "0 = embeddings, L = last block output before final norm"
TARGET_LABELS = {
    L.TARGET_TEXT: "Target text (the set's targets, or the one typed below)",
    L.TARGET_FINAL_TOP1: "The model's own final top-1",
    L.TARGET_NEXT: "The actual next token",
    L.TARGET_NONE: "No target",
}
LENS_LABELS = {"logit": "logit", "tuned": "tuned"}


@dataclass(frozen=True)
class LensSettings:
    """Every setting of the logit lens (display-only ones never recompute)."""

    lens: str = setting("logit", "logit = the model's own final norm and unembedding at every layer; tuned = the same "
                        "after a trained affine translator per layer (python -m logitscope tuned-lens trains one)",
                        label="Lens", choices=LENS_LABELS, widget="radio")
    top_k: int = setting(10, "top-k tokens kept per layer", label="Top-k", lo=1, hi=50)
    target: str = setting(L.TARGET_TEXT, "what the target lines and ranks follow: text = the set's targets, else "
                          "the target text", label="Target", choices=TARGET_LABELS)
    target_text: str = setting("", "target for prompts without their own: its first token ('#123' = token id; keep "
                               "the leading space, ' Paris'). The page starts from the model's own example; the CLI "
                               "never invents one", label="Target token text")
    colour: str = setting(next(iter(charts.COLOR_METRICS)), "heatmap colour", label="Heatmap colour",
                          choices=charts.COLOR_METRICS, display=True)
    positions_shown: int = setting(24, "the heatmap shows the last n positions of long prompts",
                                   label="Positions shown (last n)", lo=1, hi=512, display=True)
    aggregate: str = setting("last", "set aggregates (mean KL, decision depth) over each prompt's last position or "
                             "all positions", label="Set aggregates over", widget="radio", display=True,
                             choices={"last": "each prompt's last position", "all": "all positions"})
    layer_step: int = setting(0, "heatmap rows: every k-th layer (0 = auto: every layer up to 40, else about 40 rows); "
                              "the last layer is always drawn", label="Heatmap layers (every k-th)", lo=0, hi=64,
                              display=True)
    kl_scale: str = setting("auto", "the mean-KL axis: auto = log when one layer's mean is 20x the median layer's (as at "
                            "layer 0 of real models)", label="Mean KL axis", display=True, widget="radio",
                            choices={"auto": "auto", "linear": "linear", "log": "log"})
    show_prompt: int = setting(1, "the prompt shown in the per-prompt views (1-based)", label="Prompt to show", lo=1,
                               display=True)
    position: int | None = setting(None, "position of the top-k table (default: the shown prompt's last)",
                                   label="Position for the top-k table", lo=0, display=True)


@dataclass(frozen=True)
class LensResults:
    """What ``compute`` returns: one trace per checkpoint ("A: name"), KL(A||B) on identical tokens or why not."""

    traces: Mapping[str, L.LensTrace]
    comparison: L.LensComparison | None = None
    compare_error: str | None = None
    tuned: Mapping[str, TL.Summary] | None = None  # lens "tuned": each checkpoint's translator ("A: name")


def resolve_targets(prompt_set: PromptSet, typed: str) -> tuple:
    """Per prompt target: the set's own, else the typed one; InputError when nothing usable is given."""
    typed_target = parse_token_ref(typed) if typed != "" else None
    per = tuple(r.target if r.target else typed_target for r in prompt_set.rows)
    if all(t is None for t in per):
        raise InputError("The target is empty. Type the target token's text (e.g. ' Paris', with its leading space; "
                         "or #id for a token id), or choose another target mode.")
    return per


def _trace(lm, prompts: list[str], s: LensSettings, targets, token_ids, translator, progress: Progress = None):
    return L.lens_trace(lm, prompts, k=s.top_k, target_mode=s.target, targets=list(targets) if targets else None,
                        token_ids=token_ids, progress=progress, translator=translator)


def compute(models: ModelPair, inputs: Inputs, s: LensSettings, progress: Progress = None,
            memo: Memo = direct) -> LensResults:
    """The lens of every checkpoint on the set (--prompts), and KL(A||B) when both read the same tokens; each
    checkpoint's trace and the comparison are parts of their own (``memo``: a page caches them apart)."""
    prompt_set = inputs["--prompts"]
    prompts = list(prompt_set.prompts)
    targets = resolve_targets(prompt_set, s.target_text) if s.target == L.TARGET_TEXT else None
    token_ids, compare_error = None, None
    if models.compare:
        try:
            L.check_compatible(models.a, models.b)
            token_ids = L.encode_prompts(models.a, prompts)
        except LogitscopeError as err:
            compare_error = str(err)
    parts = len(models.items()) + (1 if models.compare and not compare_error else 0)
    translators = {which: TL.require(lm) for which, lm, _ in models.items()} if s.lens == "tuned" else {}
    key = compute_key(s)
    traces = {}
    for i, (which, lm, card) in enumerate(models.items()):
        ids = token_ids if which == "B" else None
        stamp = TL.cache_stamp(lm) if which in translators else None  # a retrained translator recomputes
        traces[f"{which}: {card.name}"] = memo(
            "lens.trace", (lm.spec, prompt_set.sha256, key, models.a.spec if ids is not None else None, stamp), _trace, lm, prompts, s, targets,
            ids, translators.get(which), progress=stage(progress, i / parts, (i + 1) / parts, which))
    comparison = None
    if models.compare and not compare_error:
        comparison = memo("lens.compare", (models.a.spec, models.b.spec, prompt_set.sha256), L.lens_compare,
                          models.a, models.b, prompts, progress=stage(progress, (parts - 1) / parts, 1.0, "A vs B"))
    tuned = {f"{w}: {card.name}": TL.summary(translators[w]) for w, _, card in models.items()} if translators else None
    return LensResults(traces, comparison, compare_error, tuned)


def settings_metadata(s: LensSettings, prompt_set: PromptSet, results: LensResults) -> dict:
    """metadata.json's settings: every declared setting, the position actually shown, the per-prompt targets used
    in text mode (the set's own, else the typed one: text, or #id for a token id; target_text is None when no prompt
    used it) and the layer convention."""
    meta = as_metadata(s)
    n = shown_prompt(s, results)
    meta["position"] = s.position if s.position is not None else default_position(results.traces, n)
    meta["targets_used"] = None
    if s.target == L.TARGET_TEXT:
        meta["targets_used"] = [f"#{t}" if isinstance(t, int) else t for t in resolve_targets(prompt_set, s.target_text)]
    if s.target != L.TARGET_TEXT or all(r.target for r in prompt_set.rows):
        meta["target_text"] = None  # typed but not used by any prompt: not part of what was computed
    meta["layer_convention"] = LAYER_CONVENTION
    meta["tuned_lens"] = {label.split(":")[0]: t.meta for label, t in results.tuned.items()} if results.tuned else None
    return meta


def shown_prompt(s: LensSettings, results: LensResults) -> int:
    """The 0-based prompt of the per-prompt views (InputError when show_prompt is past the set)."""
    count = len(next(iter(results.traces.values())).prompts)
    if not 1 <= s.show_prompt <= count:
        raise InputError(f"The prompt to show ({s.show_prompt}) is out of range: the set has {plural(count, 'prompt')} "
                         f"(1..{count}).")
    return s.show_prompt - 1


def report(results: LensResults, s: LensSettings) -> Report:
    """The page's figures and tables for these results and display settings (no engine call)."""
    n = shown_prompt(s, results)
    rep = lens_report(results.traces, results.comparison, target_mode=s.target, metric=s.colour,
                      max_pos=s.positions_shown, positions=s.aggregate, n=n, t_sel=s.position, kl_scale=s.kl_scale,
                      layer_step=s.layer_step)
    if results.compare_error:
        rep.notes.append(f"KL(A‖B) is not computed: {results.compare_error}")
    for label, t in (results.tuned or {}).items():  # the translator's held-out curve, logit vs tuned
        if t.held_out is not None:
            which = label.split(":")[0]
            rep.add(f"tuned_vs_logit_{which}", tuned_charts.held_out_figure(t.held_out, label),
                    tuned_charts.held_out_frame(t.held_out))
    if results.tuned and results.comparison is not None:
        rep.notes.append("KL(A‖B) compares the two models' logit lenses (no translator).")
    rep.notes = collapse_notes(rep.notes)
    return rep


def run(models: ModelPair, inputs: Inputs, s: LensSettings, progress: Progress = None, memo: Memo = direct
        ) -> tuple[Report, dict]:
    """compute + report, as the CLI runs it: (report, metadata settings)."""
    results = compute(models, inputs, s, progress, memo)
    return report(results, s), settings_metadata(s, inputs["--prompts"], results)


def default_position(traces: Mapping[str, L.LensTrace], n: int = 0) -> int:
    """The page's default position for the top-k table: the shown prompt's last position."""
    first = next(iter(traces.values()))
    return max(int(first.lengths[n]) - 1, 0)


def lens_report(traces: Mapping[str, L.LensTrace], comparison: L.LensComparison | None = None, *,
                target_mode: str = LensSettings.target, metric: str = LensSettings.colour,
                max_pos: int = LensSettings.positions_shown, positions: str = LensSettings.aggregate, n: int = 0,
                t_sel: int | None = None, kl_scale: str = LensSettings.kl_scale,
                layer_step: int = LensSettings.layer_step) -> Report:
    """Bundle figures/tables for traces keyed "A: name" (and "B: name"): heatmap, target, position table per
    checkpoint, mean KL and decision depth over the set, and the A-vs-B KL views when comparison is given."""
    if t_sel is None:
        t_sel = default_position(traces, n)
    n_prompts = len(next(iter(traces.values())).prompts)
    rep = Report()
    for label, tr in traces.items():
        which = label.split(":")[0]
        rep.add(f"heatmap_{which}", charts.lens_heatmap(tr, n, metric, max_pos, layer_step=layer_step),
                charts.heatmap_frame(tr, n, max_pos))
        chosen, at_pos = ([n] if n_prompts == 1 else list(range(n_prompts))), None
        if target_mode == L.TARGET_NEXT:  # the next token exists up to the second-to-last position
            chosen, at_pos = [n], min(t_sel, int(tr.lengths[n]) - 2)
        if target_mode != L.TARGET_NONE and (at_pos is None or at_pos >= 0):
            rep.add(f"target_{which}", charts.target_lines(tr, chosen, at_pos), charts.target_frame(tr, chosen, at_pos))
        rep.add(f"position_{which}", table=charts.position_table(tr, n, min(t_sel, int(tr.lengths[n]) - 1)))
        rep.notes.extend(f"{which}: {note}" for note in tr.notes)
    rep.add("mean_kl", charts.mean_kl_figure(traces, positions, log=charts.kl_axis_log(traces, positions, kl_scale)),
            charts.mean_kl_frame(traces, positions))
    rep.add("decision_depth", charts.decision_depth_histogram(traces, positions),
            charts.decision_depth_frame(traces, positions))
    if comparison is not None:
        rep.add("kl_a_b_heatmap", charts.compare_heatmap(comparison, n, max_pos, layer_step=layer_step))
        rep.add("kl_a_b_mean", charts.compare_mean_figure(comparison), charts.compare_frame(comparison))
    return rep


# Settings whose page default comes from the model or the data rather than the declaration (tests/test_declarations).
PAGE_DEFAULT_EXEMPT = {"target_text": "the model's own example target", "show_prompt": "a choice for sets of 2+ prompts",
                       "position": "a slider per prompt, default its last position"}
