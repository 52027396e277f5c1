"""The steering and personas method, declared once: its settings, its computation part by part, its report.

The page draws its widgets from ``SteerSettings``, caches each part's function (``build``, ``monitor_model``,
``flag_part``, ``generate_part``, ``sweep_part``, ``drift_part``), each keyed on the settings it reads
(``part_key``), and exports ``report``; ``python -m logitscope steer`` derives its flags from the same declaration
and calls ``run`` (``compute``: the same functions in the page's tab order). Settings whose default is None come from
the model, the vectors or the contrast set (``resolve``); metadata.json records them as they ran.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import analysis.steering as S
from analysis.core.errors import InputError
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.models.defaults import default_question
from analysis.models.pair import ModelPair, stage
from analysis.prompts import PromptSet
from components.charts import cards as card_charts
from components.charts import steering as charts
from components.charts.pairs import share_scales
from components.reports import Input, Inputs, Memo, Report, direct
from components.settings import as_metadata, compute_key, setting

PAGE = "steering"
BUNDLE = "steering"
KEY = "steer"
INPUTS = (Input("--prompts", "persona_pairs", "the contrastive set the vectors are built on (two groups, or pairs)"),
          Input("--monitor-prompts", "persona_eval", "prompts projected on the vector", part="monitor"),
          Input("--flag-prompts", "persona_pairs", "rows with responses to flag", part="flag"),
          Input("--targets", "persona_eval", "target prompts of the sweep", part="sweep"),
          Input("--controls", "facts", "control prompts of the sweep", part="sweep"),
          Input("--drift-prompts", "persona_eval", "prompts of the drift", part="drift"))
NEEDS_B = False
SHARDS = ("build", "monitor")  # the pooled residuals of the contrast set and of the monitored prompts
PARTS = ("monitor", "flag", "generate", "sweep", "drift")  # what runs after the build, in the page's tab order
DEFAULT_LAYER = "none: the vectors' default layer"
DRIFT_SKIPPED = "Drift skipped: it compares two checkpoints; load checkpoint B (on the command line: --model-b)."


@dataclass(frozen=True)
class SteerSettings:
    """Every setting of steering and personas, part by part (display-only ones never recompute)."""

    # build (checkpoint A, the contrast set)
    positive: str | None = setting(None, "positive group of the contrast set (none: its first group)",
                                   label="Positive group")
    negative: str | None = setting(None, "negative group of the contrast set (none: its next group)",
                                   label="Negative group")
    method: str = setting(S.METHODS[0], "how the vector is fitted per layer", label="Method",
                          choices={m: S.METHOD_LABELS.get(m, m) for m in S.METHODS})
    rule: str = setting(S.READ_RULES[0], "read position of the activations (mean over response tokens needs a "
                        "`response` on every row)", label="Read position",
                        choices={r: S.READ_RULE_LABELS.get(r, r) for r in S.READ_RULES})
    seed: int = setting(0, "seed of the held-out split", label="Seed (held-out split)")
    hist_layer: int | None = setting(None, f"layer of the contrast projection histogram ({DEFAULT_LAYER})",
                                     label="Layer for the projection histogram", lo=0, display=True)
    parts: tuple[str, ...] = setting(PARTS, f"parts run after the build, comma separated, from {','.join(PARTS)} "
                                     "(drift needs checkpoint B)", label="Parts", choices=PARTS)
    # monitor
    monitor_layer: int | None = setting(None, f"layer of the monitoring histograms ({DEFAULT_LAYER})", label="Layer",
                                        lo=0, display=True)
    # flag data
    flag_layer: int | None = setting(None, f"layer for flagging ({DEFAULT_LAYER})", label="Layer", lo=0)
    flag_rows: int = setting(16, "flag the first n rows", label="Rows (first n)", lo=1)
    flag_tokens: int = setting(16, "length of the model's own response, in tokens",
                               label="Own response length (tokens)", lo=1, hi=128)
    # steer: generations
    layer: int | None = setting(None, f"steering layer ({DEFAULT_LAYER}: {S.DEFAULT_LAYER_RULE})", label="Layer", lo=0)
    alpha: float = setting(4.0, "steering coefficient: alpha·v_l is added to h_l", label="alpha")
    positions: str = setting(S.STEER_RULES[0], "positions steered", label="Positions",
                             choices={r: S.STEER_RULE_LABELS.get(r, r) for r in S.STEER_RULES})
    preserve_norm: bool = setting(False, "rescale each steered h to its original norm", label="Preserve norm")
    gen_prompt: str | None = setting(None, "prompt of the generations (none: from the model: the demo question on the "
                                     "demo models, else a question rendered with the tokenizer's chat template)",
                                     label="Prompt", widget="textarea")
    new_tokens: int = setting(20, "tokens generated", label="New tokens", lo=1, hi=256)
    temperature: float = setting(0.0, "sampling temperature (0 = greedy)", label="Temperature (0 = greedy)", lo=0.0)
    gen_seed: int = setting(0, "sampling seed of the generations", label="Seed")
    # steer: sweep and global logit shift
    sweep_layers: tuple[int, ...] | None = setting(None, "layers swept, comma separated (none: the middle, the default "
                                                   "and the last layer)", label="Layers", lo=0)
    sweep_alphas: tuple[float, ...] = setting((-4.0, -2.0, 0.0, 2.0, 4.0, 8.0), "alphas swept, comma separated",
                                              label="Alphas")
    token_a: str | None = setting(None, "trait token of the sweep's logit difference z(a) − z(b), one token with its "
                                  "leading space where the tokenizer has one (none: the most common first response "
                                  "token of the contrast set's positive side; "
                                  f"{S.DEMO_TRAIT_TOKENS[0]!r} on demo models when the set has no responses)",
                                  label="Token a (trait)")
    token_b: str | None = setting(None, "the other token (none: the negative side's most common first response token; "
                                  f"{S.DEMO_TRAIT_TOKENS[1]!r} on demo models)", label="Token b")
    sweep_prompts: int = setting(12, "first n prompts of the target and of the control set",
                                 label="Prompts per set (first n)", lo=1)
    # drift
    drift_seed: int = setting(0, "seed of the random baseline directions", label="Random baseline seed")


# The settings each part reads (its cache key, with the prompt sets and the vectors): display settings never count.
PART_FIELDS = {
    "build": ("positive", "negative", "method", "rule", "seed"),
    "monitor": (),
    "flag": ("flag_layer", "flag_rows", "flag_tokens"),
    "generate": ("layer", "alpha", "positions", "preserve_norm", "gen_prompt", "new_tokens", "temperature", "gen_seed"),
    "sweep": ("sweep_layers", "sweep_alphas", "token_a", "token_b", "sweep_prompts", "positions", "preserve_norm"),
    "drift": ("drift_seed",),
}

# Settings whose page default comes from the model or the data rather than the declaration (tests/test_declarations).
_LAYER = "the vectors' default layer (analysis.steering.vectors.DEFAULT_LAYER_RULE)"
PAGE_DEFAULT_EXEMPT = {
    "positive": "the contrast set's first group", "negative": "the contrast set's next group",
    "hist_layer": _LAYER, "monitor_layer": _LAYER, "flag_layer": _LAYER, "layer": _LAYER,
    "sweep_layers": "the middle, default and last layer of the vectors",
    "gen_prompt": "the model's question (analysis.models.defaults.default_question)",
    "token_a": "the contrast set's first response tokens, else the demo model's (default_trait_tokens)",
    "token_b": "the contrast set's first response tokens, else the demo model's (default_trait_tokens)",
}


def part_key(s: SteerSettings, part: str) -> tuple:
    """((name, value), ...) of the settings ``part`` reads: its cache key besides its prompt sets and the vectors."""
    return tuple(kv for kv in compute_key(s) if kv[0] in PART_FIELDS[part])


@dataclass(frozen=True)
class SteerResults:
    """What ran: the settings as they ran (``resolve``), the vectors and each part's result (None / empty: not run),
    the contrast set (None: vectors loaded from a file with no set at hand), the sets of the parts that ran and
    notes (a part skipped)."""

    settings: SteerSettings
    vectors: S.SteeringVectors
    monitoring: Mapping[str, S.Monitoring] = field(default_factory=dict)
    flagged: S.Flagged | None = None
    generations: S.GenerationComparison | None = None
    sweep: S.Sweep | None = None
    drift: S.Drift | None = None
    contrast: PromptSet | None = None
    sets: Inputs = field(default_factory=dict)  # {flag: set} of the parts that ran (--monitor-prompts, ...)
    notes: tuple[str, ...] = ()
    card: S.VectorCard | None = None  # the vector card of every layer (top tokens of W_U N_f(v_l))
    generations_b: S.GenerationComparison | None = None  # A's vector applied to checkpoint B (compare mode)
    sweep_b: S.Sweep | None = None

    @property
    def used(self) -> tuple[PromptSet, ...]:
        """The prompt sets metadata's "prompt_sets" lists: contrast, monitor, targets, controls, drift."""
        return tuple(p for p in (self.contrast, *(self.sets.get(f) for f in ("--monitor-prompts", "--targets",
                                                                             "--controls", "--drift-prompts")))
                     if p is not None)


def inputs_used(results: SteerResults) -> dict[str, PromptSet] | None:
    """{CLI flag: set} of the contrast set and the sets of the parts that ran (report_metadata keeps their prompts,
    `python -m logitscope rerun` passes them back)."""
    named = {"--prompts": results.contrast, **results.sets}
    return {flag: ps for flag, ps in named.items() if ps is not None} or None


# ------------------------------------------------------------------------------------------ defaults from the data
def default_sweep_layers(sv: S.SteeringVectors, n_layers: int) -> tuple[int, ...]:
    """The default sweep layers: middle, default and last (each at least 1), sorted."""
    return tuple(sorted({max(1, n_layers // 2), max(1, sv.default_layer()), n_layers}))


def trait_tokens(lm: LoadedModel, sv: S.SteeringVectors, contrast: PromptSet | None) -> S.TraitTokens:
    """Default tokens a and b: from the contrast set when it is the one the vectors were built on, else the model's."""
    same = contrast is not None and contrast.sha256 == sv.prompt_set_sha256
    return S.default_trait_tokens(lm, contrast if same else None, sv.positive, sv.negative)


def resolve(s: SteerSettings, lm: LoadedModel, sv: S.SteeringVectors, contrast: PromptSet | None = None
            ) -> SteerSettings:
    """The settings as they run: the build settings of the vectors in use (built or loaded from a file; the groups
    by name when the contrast set they were built on has groups, None for pairs by label) and every setting left
    at None filled from the vectors (layers), the model (prompt) or the contrast set (tokens)."""
    kw: dict = dict(method=sv.method, rule=sv.position_rule, seed=int(sv.seed))
    if contrast is not None and contrast.sha256 == sv.prompt_set_sha256:
        grouped = bool(contrast.groups())
        kw.update(positive=sv.positive if grouped else None, negative=sv.negative if grouped else None)
    for name in ("hist_layer", "monitor_layer", "flag_layer", "layer"):
        if getattr(s, name) is None:
            kw[name] = sv.default_layer()
    if s.sweep_layers is None:
        kw["sweep_layers"] = default_sweep_layers(sv, lm.adapter.n_layers)
    if s.gen_prompt is None:
        kw["gen_prompt"] = default_question(lm)
    if s.token_a is None or s.token_b is None:
        tokens = trait_tokens(lm, sv, contrast)
        kw["token_a"] = tokens.token_a if s.token_a is None else s.token_a
        kw["token_b"] = tokens.token_b if s.token_b is None else s.token_b
    return replace(s, **kw)


def first_rows(ps: PromptSet, n: int) -> PromptSet:
    """The first n rows of a prompt set as a set of its own (the set itself when it has no more)."""
    if len(ps) <= n:
        return ps
    return PromptSet.from_rows(f"{ps.name} (first {n})", ps.rows[:n], ps.notes)


# ------------------------------------------------------------------------------------------ the parts
# Each part runs through ``memo`` (the page's cache, or a direct call), keyed on the models, its prompt sets, the
# vectors' fingerprint and the settings it reads (part_key). Parts after the build take the settings resolved.
def _need(ps: PromptSet | None, part: str) -> PromptSet:
    if ps is None:
        raise InputError(f"The {part} part needs its prompt set.")
    return ps


def build_part(models: ModelPair, inputs: Inputs, s: SteerSettings, progress: Progress = None,
               memo: Memo = direct) -> S.SteeringVectors:
    """Steering vectors per layer on checkpoint A from the contrast set (--prompts)."""
    lm, ps = models.a, inputs["--prompts"]
    return memo("steer.build", (lm.spec, ps.sha256, part_key(s, "build")), S.extract_vectors, lm, ps,
                positive=s.positive, negative=s.negative, method=s.method, position_rule=s.rule, seed=s.seed,
                progress=progress)


def monitor_part(models: ModelPair, inputs: Inputs, sv: S.SteeringVectors, progress: Progress = None,
                 memo: Memo = direct) -> dict[str, S.Monitoring]:
    """{"A": Monitoring, "B": ...}: every loaded checkpoint's --monitor-prompts projected on the vectors."""
    ps = _need(inputs.get("--monitor-prompts"), "monitor")
    items = models.items()
    return {which: memo("steer.monitor", (lm.spec, ps.sha256, sv.fingerprint), S.monitor, lm, ps, sv,
                        progress=stage(progress, i / len(items), (i + 1) / len(items), f"monitor {which}"))
            for i, (which, lm, _card) in enumerate(items)}


def flag_part(models: ModelPair, inputs: Inputs, sv: S.SteeringVectors, s: SteerSettings,
              progress: Progress = None, memo: Memo = direct) -> S.Flagged:
    """The first flag_rows rows of --flag-prompts ranked by how far their responses push checkpoint A toward the
    trait."""
    lm, ps = models.a, _need(inputs.get("--flag-prompts"), "flag")
    return memo("steer.flag", (lm.spec, ps.sha256, sv.fingerprint, part_key(s, "flag")), S.flag_data, lm,
                first_rows(ps, s.flag_rows), sv, s.flag_layer, max_new_tokens=s.flag_tokens, progress=progress)


def _generate(lm: LoadedModel, sv: S.SteeringVectors, s: SteerSettings) -> S.GenerationComparison:
    lm.check_layer(s.layer)
    steer = S.Steer(s.layer, sv.vector(s.layer), float(s.alpha), s.positions, s.preserve_norm)
    return S.compare_generations(lm, s.gen_prompt, steer, max_new_tokens=s.new_tokens, temperature=s.temperature,
                                 seed=s.gen_seed)


def generate_part(models: ModelPair, sv: S.SteeringVectors, s: SteerSettings, memo: Memo = direct
                  ) -> tuple[S.GenerationComparison, S.GenerationComparison | None]:
    """Unsteered vs steered generation of gen_prompt on checkpoint A (and, with B, A's vector on B)."""
    out = [memo("steer.generate", (lm.spec, sv.fingerprint, part_key(s, "generate")), _generate, lm, sv, s)
           for _which, lm, _card in models.items()]
    return out[0], (out[1] if len(out) > 1 else None)


def _sweep(lm: LoadedModel, targets: PromptSet, controls: PromptSet, sv: S.SteeringVectors, s: SteerSettings,
           progress: Progress = None) -> S.Sweep:
    for layer in s.sweep_layers:
        lm.check_layer(layer)
    if not s.token_a or not s.token_b:
        raise InputError("The sweep needs tokens a and b of the logit difference and there is no default for these "
                         "vectors: give them (token a: the trait's first reply word, token b: the opposite one; "
                         "--token-a and --token-b on the command line).")
    n = s.sweep_prompts
    return S.steering_sweep(lm, {layer: sv.vector(layer) for layer in s.sweep_layers}, s.sweep_alphas,
                            tuple(targets.prompts[:n]), tuple(controls.prompts[:n]), s.token_a, s.token_b,
                            rule=s.positions, preserve_norm=s.preserve_norm, progress=progress)


def sweep_part(models: ModelPair, inputs: Inputs, sv: S.SteeringVectors, s: SteerSettings, progress: Progress = None,
               memo: Memo = direct) -> tuple[S.Sweep, S.Sweep | None]:
    """Logit difference z(a) − z(b) and KL per layer and alpha on the first sweep_prompts of --targets vs
    --controls, on A (and, with B, A's vector on B)."""
    tps, cps = _need(inputs.get("--targets"), "sweep"), _need(inputs.get("--controls"), "sweep")
    items = models.items()
    out = [memo("steer.sweep", (lm.spec, tps.sha256, cps.sha256, sv.fingerprint, part_key(s, "sweep")), _sweep, lm,
                tps, cps, sv, s, progress=stage(progress, i / len(items), (i + 1) / len(items), f"sweep {which}"))
           for i, (which, lm, _card) in enumerate(items)]
    return out[0], (out[1] if len(out) > 1 else None)


def drift_part(models: ModelPair, inputs: Inputs, sv: S.SteeringVectors, s: SteerSettings,
               progress: Progress = None, memo: Memo = direct) -> S.Drift:
    """B − A along the vectors per layer on --drift-prompts, against random directions."""
    ps = _need(inputs.get("--drift-prompts"), "drift")
    return memo("steer.drift", (models.specs(), ps.sha256, sv.fingerprint, part_key(s, "drift")), S.persona_drift,
                models.a, models.b, ps, sv, seed=s.drift_seed, progress=progress)


def card_part(models: ModelPair, sv: S.SteeringVectors, memo: Memo = direct) -> S.VectorCard:
    """The vector card of every layer on checkpoint A."""
    return memo("steer.card", (models.a.spec, sv.fingerprint), S.vector_card, models.a, sv)


def notes_of(models: ModelPair, s: SteerSettings) -> tuple[str, ...]:
    """Why a part asked for did not run."""
    return (DRIFT_SKIPPED,) if "drift" in s.parts and not models.compare else ()


PART_INPUTS = {"monitor": ("--monitor-prompts",), "flag": ("--flag-prompts",), "sweep": ("--targets", "--controls"),
               "drift": ("--drift-prompts",)}


def compute(models: ModelPair, inputs: Inputs, s: SteerSettings, progress: Progress = None,
            memo: Memo = direct) -> SteerResults:
    """Build the vectors on A from the contrast set (--prompts), then every part of s.parts on its prompt set."""
    contrast = inputs["--prompts"]
    sv = build_part(models, inputs, s, stage(progress, 0.0, 0.3, "build"), memo)
    s = resolve(s, models.a, sv, contrast)
    parts = set(s.parts) - ({"drift"} if not models.compare else set())
    ran = {flag: inputs.get(flag) for part in parts for flag in PART_INPUTS.get(part, ())}
    monitoring, flagged, drift = {}, None, None
    generations = generations_b = sweep = sweep_b = None
    if "monitor" in parts:
        monitoring = monitor_part(models, inputs, sv, stage(progress, 0.3, 0.4), memo)
    if "flag" in parts:
        flagged = flag_part(models, inputs, sv, s, stage(progress, 0.4, 0.55, "flag"), memo)
    if "generate" in parts:
        generations, generations_b = generate_part(models, sv, s, memo)
        if progress is not None:
            progress(0.6, "generated")
    if "sweep" in parts:
        sweep, sweep_b = sweep_part(models, inputs, sv, s, stage(progress, 0.6, 0.85), memo)
    if "drift" in parts:
        drift = drift_part(models, inputs, sv, s, stage(progress, 0.85, 1.0, "drift"), memo)
    return SteerResults(s, sv, monitoring, flagged, generations, sweep, drift, contrast, ran, notes_of(models, s),
                        card_part(models, sv, memo), generations_b, sweep_b)


# ------------------------------------------------------------------------------------------ the report
def _layer_of(sv: S.SteeringVectors, layer: int | None) -> int:
    """A display layer the vectors have (InputError naming the layers they cover); None: the default layer."""
    if layer is None:
        return sv.default_layer()
    sv.vector(layer)
    return layer


def build_report(sv: S.SteeringVectors, hist_layer: int | None = None) -> Report:
    """Held-out separability per layer (when there is a test split) and the contrast projection at hist_layer."""
    rep = Report()
    if sv.n_test:
        rep.add("separability", charts.separability_figure(sv), charts.separability_table(sv))
    if sv.projections.size:
        rep.add("contrast_projection", charts.build_projection_figure(sv, _layer_of(sv, hist_layer)))
    return rep


def vector_card_report(card: S.VectorCard, sv: S.SteeringVectors, layer: int | None = None, k: int = 10) -> Report:
    """The vector card at ``layer`` (None: the default layer): top +/- tokens of W_U N_f(v), groups along v."""
    layer = _layer_of(sv, layer)
    rep = Report()
    rep.add("vector_tokens", card_charts.vector_tokens_figure(card, layer, k), card_charts.vector_tokens_frame(card,
                                                                                                          layer, k))
    if sv.projections.size:
        rep.add("vector_groups", card_charts.projection_strip(sv, layer), card_charts.projection_frame(sv, layer))
    return rep


def monitoring_report(mon: S.Monitoring, layer: int, which: str) -> Report:
    """Projections of one checkpoint's prompts on the vector at layer."""
    rep = Report()
    rep.add(f"monitoring_{which}", charts.monitoring_figure(mon, layer), charts.monitoring_table(mon))
    return rep


def flag_report(flagged: S.Flagged) -> Report:
    """Rows ranked by how far their responses push checkpoint A toward the trait."""
    rep = Report()
    rep.add("data_flagging", charts.flagged_figure(flagged), charts.flagged_table(flagged))
    return rep


def generations_report(cmp: S.GenerationComparison, cmp_b: S.GenerationComparison | None = None,
                       names: tuple[str, str] = ("", "")) -> Report:
    """Unsteered vs steered generation ("generations"; with B, A's vector applied to B: "generations_B", its tiles
    shaded on the same scale as A's)."""
    rep = Report()
    scale = charts.shift_scale(cmp, cmp_b)
    rep.add("generations", charts.generations_figure(cmp, scale=scale, model=names[0]), charts.generations_table(cmp))
    if cmp_b is not None:
        rep.add("generations_B", charts.generations_figure(cmp_b, scale=scale, model=names[1]),
                charts.generations_table(cmp_b))
    return rep


def sweep_report(sw: S.Sweep, sw_b: S.Sweep | None = None, names: tuple[str, str] = ("", "")) -> Report:
    """Logit difference and KL per layer and alpha, targets vs controls (with B: the same for A's vector applied to
    B, "steering_sweep_B" and "targets_vs_controls_B", on A's axis ranges)."""
    rep = Report()
    rep.add("steering_sweep", charts.sweep_figure(sw, model=names[0]), charts.sweep_table(sw))
    rep.add("targets_vs_controls", charts.targets_vs_controls_figure(sw, model=names[0]))
    if sw_b is not None:
        rep.add("steering_sweep_B", charts.sweep_figure(sw_b, model=names[1]), charts.sweep_table(sw_b))
        rep.add("targets_vs_controls_B", charts.targets_vs_controls_figure(sw_b, model=names[1]))
        for view in ("steering_sweep", "targets_vs_controls"):
            share_scales([rep.figures[view], rep.figures[f"{view}_B"]])
    return rep


def drift_report(drift: S.Drift) -> Report:
    """B − A along the vector per layer against a random direction."""
    rep = Report()
    rep.add("persona_drift", charts.drift_figure(drift), charts.drift_table(drift))
    return rep


def report(results: SteerResults, s: SteerSettings) -> Report:
    """Every part that ran, in the page's order (Build, Monitor, Flag, Generations, Sweep, Drift), for the display
    settings of s (resolved; no engine call)."""
    sv = results.vectors
    rep = build_report(sv, s.hist_layer)
    if results.card is not None:
        rep.merge(vector_card_report(results.card, sv, s.hist_layer))
    for which, mon in results.monitoring.items():
        rep.merge(monitoring_report(mon, _layer_of(sv, s.monitor_layer), which))
    if results.flagged is not None:
        rep.merge(flag_report(results.flagged))
    names = model_names(results)
    if results.generations is not None:
        rep.merge(generations_report(results.generations, results.generations_b, names))
    if results.sweep is not None:
        rep.merge(sweep_report(results.sweep, results.sweep_b, names))
    if results.drift is not None:
        rep.merge(drift_report(results.drift))
    rep.notes.extend(results.notes)
    return rep


def model_names(results: SteerResults) -> tuple[str, str]:
    """("A: name", "B: name") for figure titles when B's parts ran (the vectors' model is A), else ("", "")."""
    if results.generations_b is None and results.sweep_b is None:
        return "", ""
    return "A", "B"


def vector_settings(sv: S.SteeringVectors) -> dict:
    """The vectors' provenance as recorded in the metadata's settings (the sides as the vectors name them: groups,
    or "first/second of pair"), with the default layer and why."""
    choice = sv.default_layer_choice()
    return dict(vector_method=sv.method, vector_rule=sv.position_rule, vector_set=sv.prompt_set_name,
                vector_set_sha256=sv.prompt_set_sha256, vector_positive=sv.positive, vector_negative=sv.negative,
                default_layer=choice.layer, default_layer_why=choice.caption)


def prompt_sets_setting(used_sets) -> list[dict]:
    """settings["prompt_sets"]: name, hash and size of every prompt set the run used."""
    return [{"name": p.name, "sha256": p.sha256, "n": len(p)} for p in used_sets if p is not None]


def settings_metadata(s: SteerSettings, results: SteerResults, model_name: str) -> dict:
    """metadata.json's settings: every declared setting as it ran (s resolved), checkpoint A's name, the vectors'
    provenance and default layer (vector_settings) and the prompt sets used."""
    meta = as_metadata(s)
    meta.update(model_a=model_name, **vector_settings(results.vectors))
    meta["prompt_sets"] = prompt_sets_setting(results.used)
    return meta


def run(models: ModelPair, inputs: Inputs, s: SteerSettings, progress: Progress = None, memo: Memo = direct
        ) -> tuple[Report, dict]:
    """compute + report, as the CLI runs it: (report, metadata settings)."""
    results = compute(models, inputs, s, progress, memo)
    return report(results, results.settings), settings_metadata(results.settings, results, models.a.name)
