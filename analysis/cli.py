"""Command line: `python -m analysis <lens|flow|steer|neurons|shift|ood> --model ... --prompts ... --out DIR`.

Each command computes its analysis with the same engine calls and default settings as its page, turns the results
into figures and tables with the page's report function (components.reports) and writes DIR/ exactly like the page's
bundle zip (figures/<name>.<fmt>, data/<name>.csv|.json, metadata.json), by building that zip and extracting it.
Project errors print their message to stderr and exit with status 2. Never imports streamlit.
"""
from __future__ import annotations

import argparse
import io
import sys
import zipfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from analysis.errors import InputError, LogitscopeError, PromptSetError

ProgressFn = Callable[[float, str], None]
OWNED = ("figures", "data", "metadata.json")  # what a run writes into --out (and may replace with --force)


# ------------------------------------------------------------------------------------------ shared plumbing
@dataclass
class Models:
    """The loaded checkpoints: A and optional B, each with its card (the same objects a page's ModelPair holds)."""

    a: Any
    card_a: Any
    b: Any = None
    card_b: Any = None

    @property
    def compare(self) -> bool:
        """True when checkpoint B is loaded."""
        return self.b is not None

    def items(self) -> list[tuple[str, Any, Any]]:
        """[("A", lm, card), ("B", lm, card)] as ModelPair.items()."""
        return [("A", self.a, self.card_a)] + ([("B", self.b, self.card_b)] if self.b is not None else [])

    def cards(self) -> dict[str, Any]:
        """{"A": card, "B": card} for report_metadata."""
        return {which: card for which, _, card in self.items()}


class Progress:
    """A stderr progress bar (tqdm) driven by engine progress callbacks; stage() maps a part of the run onto it."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=label, file=sys.stderr, disable=quiet, leave=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}")

    def stage(self, lo: float, hi: float, label: str = "") -> ProgressFn:
        """A progress callback whose fractions 0..1 fill the bar from lo to hi."""
        def report(fraction: float, message: str = "") -> None:
            f = lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)
            self.bar.n = max(self.bar.n, int(round(f * 1000)))
            text = f"{label}: {message}" if label and message else (label or message)
            self.bar.set_postfix_str(text[:60], refresh=False)
            self.bar.refresh()
        return report

    def close(self) -> None:
        """Fill and close the bar."""
        self.bar.n = 1000
        self.bar.refresh()
        self.bar.close()


@contextmanager
def progress(label: str, quiet: bool) -> Iterator[Progress]:
    """A Progress bar closed at the end of the block."""
    bar = Progress(label, quiet)
    try:
        yield bar
    finally:
        bar.close()


def load_prompts(text: str) -> Any:
    """A built-in set by name, else a .txt/.csv/.jsonl file path; PromptSetError if it is neither."""
    from analysis.prompts import builtin_sets, load_builtin, parse_prompt_file

    if text in builtin_sets():
        return load_builtin(text)
    path = Path(text)
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as err:
            raise PromptSetError(f"The prompt file '{text}' could not be read ({err.strerror}).") from None
        return parse_prompt_file(path.name, data)
    raise PromptSetError(f"'{text}' is neither a built-in prompt set ({', '.join(builtin_sets()) or 'none'}) "
                         "nor a prompt file (.txt, .csv, .jsonl).")


def first_n(ps: Any, n: int | None) -> Any:
    """The first n rows of a prompt set as a set of its own (all of them when n is None)."""
    from analysis.prompts import PromptSet

    if n is None or len(ps) <= n:
        return ps
    if n < 1:
        raise InputError(f"The number of prompts must be at least 1 (got {n}).")
    return PromptSet.from_rows(f"{ps.name} (first {n})", ps.rows[:n], ps.notes)


def given_prompts(args: argparse.Namespace) -> Any:
    """--prompts, read before the models load (a bad file fails fast); None when the default comes from model A."""
    return load_prompts(args.prompts) if args.prompts else None


def main_prompts(args: argparse.Namespace, models: Models, ps: Any) -> Any:
    """The command's main prompt set, chat-rendered: --prompts, else model A's default (the demo set on demo models,
    its real-model counterpart on any other: analysis.model_defaults.default_set)."""
    if ps is None:
        from analysis.model_defaults import default_set

        ps = load_prompts(default_set(models.a, args.demo_prompts))
    return chat(args, models, ps)


def other_prompts(args: argparse.Namespace, models: Models, given: str | None, demo_name: str) -> Any:
    """A command's further prompt set (--monitor-prompts, --controls, ...), chat-rendered: the given name or file,
    else model A's default for the demo set `demo_name`."""
    from analysis.model_defaults import default_set

    return chat(args, models, load_prompts(given or default_set(models.a, demo_name)))


def chat(args: argparse.Namespace, models: Models, ps: Any) -> Any:
    """ps with A's chat template applied: to rows given as messages always, to plain prompts with --chat-template."""
    from analysis.prompts import apply_chat_template

    return apply_chat_template(ps, models.a.tokenizer, wrap_plain=args.chat_template)


def _spec(args: argparse.Namespace, source: str) -> Any:
    from analysis.loading import named_spec

    return named_spec(source, revision=None, dtype=args.dtype, device=args.device,
                      allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code)


def load_models(args: argparse.Namespace, need_b: bool = False) -> Models:
    """Load --model (and --model-b) with their cards, as the sidebar picker does."""
    from analysis.loading import load_model
    from analysis.model_card import model_card

    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if args.allow_pickle:
        print("warning: pickle weights allowed: loading them can execute code.", file=sys.stderr)
    if args.trust_remote_code:
        print("warning: remote code trusted: the checkpoint's Python code will run.", file=sys.stderr)
    if need_b and not args.model_b:
        raise InputError(f"'{args.command}' compares two checkpoints: give the second one with --model-b "
                         "(e.g. --model gpt2-world-base --model-b gpt2-world-tuned).")
    lm_a = load_model(_spec(args, args.model))
    models = Models(lm_a, model_card(lm_a))
    if args.model_b:
        lm_b = load_model(_spec(args, args.model_b))
        models.b, models.card_b = lm_b, model_card(lm_b)
    return models


def prepare_out(out: str, force: bool) -> Path:
    """The output folder, created; refuses to mix with an earlier run's files unless force (then replaces them)."""
    import shutil

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out} exists and is not a folder.")
    if path.is_dir():
        present = [name for name in OWNED if (path / name).exists()]
        if present and not force:
            raise InputError(f"--out {out} already holds {', '.join(present)} from an earlier run; "
                             "pass --force to replace them, or choose another folder.")
        for name in present:
            target = path / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_bundle(out: Path, figures: dict, tables: dict, metadata: dict, formats: Sequence[str]) -> list[str]:
    """Build the page's bundle zip (components.exporting.build_bundle) and extract it into out; returns its files."""
    from components.exporting import build_bundle

    data = build_bundle(figures, tables, metadata, formats)
    root = out.resolve()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        for name in names:
            dest = (root / name).resolve()
            if root not in dest.parents:  # bundle names are safe_filename'd; belt and braces
                raise InputError(f"Refusing to write {name!r} outside {out}.")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(name))
    return names


def finish(args: argparse.Namespace, report: Any, page: str, models: Models, settings: dict, prompt_set: Any) -> int:
    """Write report + metadata (same keys as the page's) into --out and say where."""
    from components.reports import report_metadata

    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    meta = report_metadata(page, models.cards(), settings, prompt_set, report.notes)
    out = prepare_out(args.out, args.force)
    names = write_bundle(out, report.figures, report.tables, meta, args.formats)
    if not args.quiet:
        print(f"wrote {len(names)} files ({len(report.figures)} figures, {len(report.tables)} tables) to {out}",
              file=sys.stderr)
    print(out)
    return 0


def _formats(text: str) -> tuple[str, ...]:
    from components.exporting import FIGURE_FORMATS

    fmts = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()))
    bad = [f for f in fmts if f not in FIGURE_FORMATS]
    if bad or not fmts:
        raise argparse.ArgumentTypeError(f"choose figure formats from {', '.join(FIGURE_FORMATS)} "
                                         f"(comma separated), got {text!r}")
    return fmts


def _common(p: argparse.ArgumentParser, default_prompts: str, b_required: bool = False) -> None:
    from analysis.loading import DEFAULT_MODEL

    g = p.add_argument_group("models and data")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint A: zoo name, real model name "
                   f"(smollm2-135m-instruct, or smollm2-grumpy-lora for its LoRA fine-tune), local folder, .gguf "
                   f"file or hub id (default {DEFAULT_MODEL})")
    g.add_argument("--model-b", default=None, help="checkpoint B, compared with A" +
                   (" (required)" if b_required else " (optional)"))
    from analysis.model_defaults import REAL_EQUIVALENTS

    real = REAL_EQUIVALENTS.get(default_prompts, default_prompts)
    g.add_argument("--prompts", default=None, help=f"built-in prompt set name or a .txt/.csv/.jsonl file (default "
                   f"from model A: {default_prompts} on the demo models" + (f", {real} on any other" if real !=
                   default_prompts else "") + "); prompts run exactly as given (.txt: one per line, no line breaks)")
    p.set_defaults(demo_prompts=default_prompts)
    g.add_argument("--chat-template", action="store_true", help="wrap each plain prompt as one user turn with A's chat "
                   "template (.jsonl rows given as \"messages\" always use it)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="default auto")
    g.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights: they can run code")
    g.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with the checkpoint")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="folder for figures/, data/ and metadata.json (the bundle's layout)")
    o.add_argument("--formats", type=_formats, default=("png", "svg", "html"),
                   help="figure formats, comma separated, from png,svg,pdf,html (default png,svg,html as the "
                        "page's bundle; png/svg/pdf need Chromium, else HTML is written and metadata says why)")
    o.add_argument("--force", action="store_true", help="replace figures/, data/ and metadata.json already in --out")
    o.add_argument("--quiet", action="store_true", help="no progress bar")


# ------------------------------------------------------------------------------------------ lens
def run_lens(args: argparse.Namespace) -> int:
    """Logit lens of A (and B, and KL(A||B) on identical tokens) as the Logit lens page computes it."""
    from analysis import lens as L
    from components.reports import lens as R

    ps = given_prompts(args)
    with progress("lens", args.quiet) as bar:
        models = load_models(args)
        ps = first_n(main_prompts(args, models, ps), args.max_prompts)
        bar.stage(0, 0.05)(1.0, "models loaded")
        prompts = list(ps.prompts)
        targets = R.resolve_targets(ps, args.target_text) if args.target == L.TARGET_TEXT else None
        token_ids, compare_error = None, None
        if models.compare:
            try:
                L.check_compatible(models.a, models.b)
                token_ids = L.encode_prompts(models.a, prompts)
            except LogitscopeError as err:
                compare_error = str(err)
        parts = len(models.items()) + (1 if models.compare and not compare_error else 0)
        traces = {}
        for i, (which, lm, card) in enumerate(models.items()):
            traces[f"{which}: {card.name}"] = L.lens_trace(
                lm, prompts, k=args.top_k, target_mode=args.target, targets=list(targets) if targets else None,
                token_ids=token_ids if which == "B" else None,
                progress=bar.stage(0.05 + 0.95 * i / parts, 0.05 + 0.95 * (i + 1) / parts, which))
        comparison = None
        if models.compare and not compare_error:
            comparison = L.lens_compare(models.a, models.b, prompts, progress=bar.stage(0.05 + 0.95 * (parts - 1) / parts,
                                                                                        1.0, "A vs B"))
    n = _index(args.show_prompt, len(prompts), "--show-prompt")
    report = R.lens_report(traces, comparison, target_mode=args.target, metric=args.colour, max_pos=args.positions_shown,
                           positions=args.aggregate, n=n, t_sel=args.position)
    if compare_error:
        report.notes.append(f"KL(A‖B) is not computed: {compare_error}")
    t_sel = args.position if args.position is not None else R.default_position(traces, n)
    settings = R.lens_settings(args.top_k, args.target, args.target_text, args.colour, args.positions_shown,
                               args.aggregate, n, t_sel, ps)
    return finish(args, report, R.PAGE, models, settings, ps)


def _index(one_based: int, count: int, flag: str) -> int:
    if not 1 <= one_based <= count:
        raise InputError(f"{flag} {one_based} is out of range: the set has {count} prompt(s) (1..{count}).")
    return one_based - 1


def _add_lens(sub: Any) -> None:
    from analysis import lens as L
    from components.charts.lens import COLOR_METRICS
    from components.reports import lens as R

    p = sub.add_parser("lens", help="logit lens: what each layer would predict",
                       description="Logit lens on A (and B side by side, with KL(A‖B) on identical tokens); writes "
                                   "the Logit lens page's bundle.")
    _common(p, "facts")
    s = p.add_argument_group("settings (the page's defaults)")
    s.add_argument("--max-prompts", type=int, default=None, help="use only the first N prompts of the set")
    s.add_argument("--top-k", type=int, default=R.DEFAULTS["k"], help="top-k tokens kept per layer (default 10)")
    s.add_argument("--target", default=R.DEFAULTS["target_mode"], choices=list(L.TARGET_MODES),
                   help="target mode (default text: the set's targets, else --target-text)")
    s.add_argument("--target-text", default="",
                   help="target for prompts without their own ('#123' = token id). No default: the CLI never invents "
                        "a target; with --target text every prompt needs its set's target or this one")
    s.add_argument("--colour", default=R.DEFAULTS["metric"], choices=list(COLOR_METRICS), help="heatmap colour")
    s.add_argument("--positions-shown", type=int, default=R.DEFAULTS["max_pos"], help="heatmap: last n positions")
    s.add_argument("--aggregate", default=R.DEFAULTS["positions"], choices=["last", "all"],
                   help="set aggregates over each prompt's last position or all positions")
    s.add_argument("--show-prompt", type=int, default=1, help="prompt shown in the per-prompt views (1-based)")
    s.add_argument("--position", type=int, default=None, help="position of the top-k table (default: the last)")
    p.set_defaults(func=run_lens)


# ------------------------------------------------------------------------------------------ flow
def run_flow(args: argparse.Namespace) -> int:
    """Logit flow of the first N prompts on A (and B) as the Logit flow page computes it."""
    from analysis.flow import logit_flow_set
    from components.reports import flow as R

    ps = given_prompts(args)
    if not 1 <= args.max_prompts <= R.MAX_PROMPTS:
        raise InputError(f"--max-prompts must be between 1 and {R.MAX_PROMPTS} (got {args.max_prompts}).")
    with progress("flow", args.quiet) as bar:
        models = load_models(args)
        ps = main_prompts(args, models, ps)
        rows = ps.rows[: args.max_prompts]
        targets = [args.target if args.target else r.target for r in rows]
        competitors = [args.competitor if args.competitor else r.competitor for r in rows]
        prompts = [r.prompt for r in rows]
        items = models.items()
        results = {which: logit_flow_set(lm, prompts, targets, competitors,
                                         progress=bar.stage(i / len(items), (i + 1) / len(items), which))
                   for i, (which, lm, _card) in enumerate(items)}
    idx = _index(args.show_prompt, len(prompts), "--show-prompt")
    view = args.view or R.default_view(results)
    if view not in R.views(results):
        raise InputError(f"--view {view} needs a competitor for every prompt: give --competitor or a set with a "
                         "'competitor' column (two_hop has one).")
    report = R.flow_report(results, {w: card.name for w, _, card in items}, view=view, frac=args.threshold,
                           top_k=args.edges, idx=idx)
    settings = R.flow_settings(view, len(prompts), args.target, args.competitor, args.threshold, args.edges, idx)
    return finish(args, report, R.PAGE, models, settings, ps)


def _add_flow(sub: Any) -> None:
    from components.reports import flow as R

    p = sub.add_parser("flow", help="logit flow: which layers, heads and positions build the prediction",
                       description="Logit flow at the last position of each prompt on A (and B, with B − A views); "
                                   "writes the Logit flow page's bundle.")
    _common(p, "two_hop")
    s = p.add_argument_group("settings (the page's defaults)")
    s.add_argument("--max-prompts", type=int, default=R.DEFAULTS["n_prompts"],
                   help=f"analyse the first N prompts (default {R.DEFAULTS['n_prompts']}, at most {R.MAX_PROMPTS})")
    s.add_argument("--target", default="", help="target token text ('#123' = id); default: the set's target, else "
                                                "the model's top-1")
    s.add_argument("--competitor", default="", help="competing token; default: the set's competitor, if any")
    s.add_argument("--view", default=None, choices=list(R.VIEW_LABELS),
                   help="read out toward (default: difference when there is a competitor, else target)")
    s.add_argument("--threshold", type=float, default=R.DEFAULTS["threshold_pct"],
                   help="flow threshold, %% of the strongest edge (default 10)")
    s.add_argument("--edges", type=int, default=R.DEFAULTS["top_k"], help="flow edges at most (default 20)")
    s.add_argument("--show-prompt", type=int, default=1, help="prompt shown in detail (1-based)")
    p.set_defaults(func=run_flow)


# ------------------------------------------------------------------------------------------ steer
STEER_PARTS = ("monitor", "flag", "generate", "sweep", "drift")


def _numbers(text: str, what: str, kind: type = float) -> tuple:
    import re

    items = [t for t in re.split(r"[,\s;]+", text.strip()) if t]
    if not items:
        raise InputError(f"Give at least one {what}, separated by commas (e.g. 2, 4).")
    try:
        return tuple(kind(t) for t in items)
    except ValueError:
        raise InputError(f"'{text}' is not a list of {what}s; write them separated by commas (e.g. 2, 4).") from None


def run_steer(args: argparse.Namespace) -> int:
    """Steering vectors built on A, then the page's Monitor, Flag, Steer (generations, sweep) and Drift parts."""
    from analysis.persona_drift import flag_data, persona_drift
    from analysis.steering import Steer, compare_generations, steering_sweep
    from analysis.model_defaults import default_question
    from analysis.steering_vectors import default_trait_tokens, extract_vectors, monitor
    from components.reports import steering as R

    parts = set(args.parts)
    ps = given_prompts(args)
    rule = args.rule or "last"
    with progress("steer", args.quiet) as bar:
        models = load_models(args)
        ps = main_prompts(args, models, ps)
        used = [ps]
        groups = ps.groups()
        positive = args.positive or (groups[0] if groups else None)
        negative = args.negative or next((g for g in groups if g != positive), None)
        lm = models.a
        n_layers = lm.adapter.n_layers
        sv = extract_vectors(lm, ps, positive=positive, negative=negative, method=args.method, position_rule=rule,
                             seed=args.seed, progress=bar.stage(0.05, 0.3, "build"))
        settings: dict = {"model_a": lm.name, **R.vector_settings(sv)}
        hist_layer = sv.default_layer() if args.hist_layer is None else args.hist_layer
        monitoring, flagged, generations, sweep, drift = {}, None, None, None, None
        if "monitor" in parts:
            mps = other_prompts(args, models, args.monitor_prompts, "persona_eval")
            used.append(mps)
            for which, lm_x, _card in models.items():
                monitoring[which] = monitor(lm_x, mps, sv, progress=bar.stage(0.3, 0.4, f"monitor {which}"))
        if "flag" in parts:
            fps = first_n(other_prompts(args, models, args.flag_prompts, "persona_pairs"), args.flag_rows)
            layer = sv.default_layer() if args.flag_layer is None else args.flag_layer
            lm.check_layer(layer)
            flagged = flag_data(lm, fps, sv, layer, max_new_tokens=args.flag_tokens, progress=bar.stage(0.4, 0.55, "flag"))
        s_layer = sv.default_layer() if args.layer is None else args.layer
        settings.update(steer_layer=int(s_layer), alpha=float(args.alpha), positions=args.positions,
                        preserve_norm=args.preserve_norm)
        if "generate" in parts:
            lm.check_layer(s_layer)
            steer = Steer(s_layer, sv.vector(s_layer), float(args.alpha), args.positions, args.preserve_norm)
            gen_prompt = default_question(lm) if args.gen_prompt is None else args.gen_prompt
            settings.update(gen_prompt=gen_prompt)
            generations = compare_generations(lm, gen_prompt, steer, max_new_tokens=args.new_tokens,
                                              temperature=args.temperature, seed=args.gen_seed)
            bar.stage(0.55, 0.6)(1.0, "generated")
        if "sweep" in parts:
            tps = other_prompts(args, models, args.targets, "persona_eval")
            cps = other_prompts(args, models, args.controls, "facts")
            used.extend([tps, cps])
            layers = (_numbers(args.sweep_layers, "layer", int) if args.sweep_layers
                      else R.default_sweep_layers(sv, n_layers))
            alphas = _numbers(args.sweep_alphas, "alpha") if args.sweep_alphas else R.DEFAULTS["alphas"]
            for layer in layers:
                lm.check_layer(layer)
            tokens = default_trait_tokens(lm, ps, positive, negative)
            token_a = tokens.token_a if args.token_a is None else args.token_a
            token_b = tokens.token_b if args.token_b is None else args.token_b
            if not token_a or not token_b:
                raise InputError(f"{tokens.note} Give them with --token-a and --token-b.")
            sweep = steering_sweep(lm, {layer: sv.vector(layer) for layer in layers}, alphas,
                                   tuple(tps.prompts[: args.sweep_prompts]), tuple(cps.prompts[: args.sweep_prompts]),
                                   token_a, token_b, rule=args.positions, preserve_norm=args.preserve_norm,
                                   progress=bar.stage(0.6, 0.85, "sweep"))
            settings.update(sweep_layers=list(layers), sweep_alphas=list(alphas), token_a=token_a,
                            token_b=token_b)
        if "drift" in parts and models.compare:
            dps = other_prompts(args, models, args.drift_prompts, "persona_eval")
            used.append(dps)
            drift = persona_drift(lm, models.b, dps, sv, seed=args.drift_seed, progress=bar.stage(0.85, 1.0, "drift"))
    report = R.steering_report(sv, hist_layer=hist_layer, monitoring=monitoring, flagged=flagged,
                               generations=generations, sweep=sweep, drift=drift)
    if "drift" in parts and not models.compare:
        report.notes.append("Drift skipped: it compares two checkpoints; give --model-b.")
    settings["prompt_sets"] = R.prompt_sets_setting(used)
    return finish(args, report, R.PAGE, models, settings, used[0])


def _parts_of(allowed: tuple[str, ...], *, none: bool = False) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma list of names from ``allowed`` (and 'none' for no part, if ``none``)."""
    def parse(text: str) -> tuple[str, ...]:
        if none and text.strip() == "none":
            return ()
        parts = tuple(p.strip() for p in text.split(",") if p.strip())
        bad = [p for p in parts if p not in allowed]
        if bad:
            extra = " (or 'none')" if none else ""
            raise argparse.ArgumentTypeError(f"choose parts from {', '.join(allowed)}{extra}, got {', '.join(bad)}")
        return parts
    return parse


def _add_steer(sub: Any) -> None:
    from analysis.steering import POSITION_RULES as STEER_RULES
    from analysis.steering_vectors import DEFAULT_LAYER_RULE, METHODS, POSITION_RULES
    from components.reports import steering as R

    d = R.DEFAULTS
    p = sub.add_parser("steer", help="steering vectors: build, monitor, flag data, steer, sweep, drift",
                       description="Build a steering vector per layer on A from a contrastive set (--prompts), then "
                                   "the Steering page's other parts (--parts); writes the Steering page's bundle.")
    _common(p, "persona_pairs")
    s = p.add_argument_group("build (the page's defaults)")
    s.add_argument("--positive", default=None, help="positive group (default: the set's first group)")
    s.add_argument("--negative", default=None, help="negative group (default: the next group)")
    s.add_argument("--method", default=METHODS[0], choices=list(METHODS))
    s.add_argument("--rule", default=None, choices=list(POSITION_RULES), help="read position (default last)")
    s.add_argument("--seed", type=int, default=d["seed"], help="held-out split seed")
    s.add_argument("--hist-layer", type=int, default=None,
                   help="layer of the projection histogram (default: the default layer, see --layer)")
    s = p.add_argument_group("parts and their settings")
    s.add_argument("--parts", type=_parts_of(STEER_PARTS), default=STEER_PARTS,
                   help=f"comma separated, from {','.join(STEER_PARTS)} (default all; drift needs --model-b)")
    s.add_argument("--monitor-prompts", default=None, help="prompts projected on the vector (default from model A: "
                   "persona_eval on demo models, chat_persona_eval on chat models)")
    s.add_argument("--flag-prompts", default=None, help="rows with responses to flag (default from model A: "
                   "persona_pairs on demo models, chat_persona_pairs on chat models)")
    s.add_argument("--flag-rows", type=int, default=d["flag_rows"], help="flag the first n rows")
    s.add_argument("--flag-layer", type=int, default=None, help="layer for flagging (default: the default layer)")
    s.add_argument("--flag-tokens", type=int, default=d["flag_tokens"], help="own response length in tokens")
    s.add_argument("--layer", type=int, default=None,
                   help=f"steering layer; also the default of --hist-layer, --flag-layer and the monitor's layer "
                        f"(default: {DEFAULT_LAYER_RULE})")
    s.add_argument("--alpha", type=float, default=d["alpha"], help="steering coefficient (default 4)")
    s.add_argument("--positions", default=STEER_RULES[0], choices=list(STEER_RULES), help="positions steered")
    s.add_argument("--preserve-norm", action="store_true", help="rescale each steered h to its original norm")
    s.add_argument("--gen-prompt", default=d["gen_prompt"],
                   help="prompt for the generations (default: from the model: the demo question on the demo models, "
                        "else a question rendered with the tokenizer's chat template)")
    s.add_argument("--new-tokens", type=int, default=d["new_tokens"])
    s.add_argument("--temperature", type=float, default=d["temperature"], help="0 = greedy")
    s.add_argument("--gen-seed", type=int, default=d["gen_seed"])
    s.add_argument("--sweep-layers", default=None, help="comma separated (default: middle, default and last layer)")
    s.add_argument("--sweep-alphas", default=None, help="comma separated (default -4,-2,0,2,4,8)")
    s.add_argument("--token-a", default=d["token_a"],
                   help="trait token of the sweep's logit difference (default: the most common first response token "
                        "of the positive side of --prompts; ' Ugh' on demo models when the set has no responses)")
    s.add_argument("--token-b", default=d["token_b"],
                   help="the other token (default: the negative side's most common first response token; ' Sure' on "
                        "demo models)")
    s.add_argument("--targets", default=None, help="target prompts of the sweep (default as --monitor-prompts)")
    s.add_argument("--controls", default=None, help="control prompts of the sweep (default from model A: facts on "
                   "demo models, en_facts on others)")
    s.add_argument("--sweep-prompts", type=int, default=d["sweep_prompts"], help="first n prompts of each set")
    s.add_argument("--drift-prompts", default=None, help="prompts of the drift (default as --monitor-prompts)")
    s.add_argument("--drift-seed", type=int, default=d["drift_seed"], help="random baseline seed")
    p.set_defaults(func=run_steer)


# ------------------------------------------------------------------------------------------ neurons
NEURON_PARTS = ("ablate", "induction")


def run_neurons(args: argparse.Namespace) -> int:
    """Entropy and frequency scans, ablation and the induction study as the Confidence neurons page runs them."""
    from analysis import induction as ind
    from analysis import neuron_ablation as abl
    from analysis import neuron_scan as ns
    from analysis.unigram import unigram_distribution
    from components.reports import neurons as R

    parts = set(args.parts)
    ref_set = given_prompts(args)
    settings: dict = {"reference": {}}
    k = args.k
    settings["scan"] = {"processing": not args.no_processing, "k": k or "1% of d_model"}
    with progress("neurons", args.quiet) as bar:
        models = load_models(args)
        ref_set = main_prompts(args, models, ref_set)
        reference = tuple(p for p in ref_set.prompts if p.strip())[: args.max_reference]
        settings["reference"] = {"name": ref_set.name, "sha256": ref_set.sha256, "n_used": len(reference)}
        items = models.items()
        scans, freqs, unigrams = {}, {}, {}
        for which, lm, _card in items:
            scans[which] = ns.scan_entropy(lm.adapter, k=k, processing=not args.no_processing, extra=())
            if reference:
                unigrams[which] = unigram_distribution(lm.tokenizer, list(reference), lm.adapter.vocab_size)
                freqs[which] = ns.scan_frequency(lm.adapter, unigrams[which], processing=not args.no_processing)
        bar.stage(0, 0.1)(1.0, "scanned")
        ablations, inductions = {}, {}
        if "ablate" in parts:
            ids_text = args.neurons if args.neurons is not None else R.default_neurons(scans["A"])
            eval_set = chat(args, models, load_prompts(args.eval_prompts))
            settings["ablate"] = {"neurons": ns.canonical_neuron_text(ids_text), "mode": args.mode,
                                  "max_prompts": args.max_prompts, "n_random": args.n_random, "seed": args.seed,
                                  "skip_first": args.skip_first,
                                  "as_set": not args.no_set, "eval_set": eval_set.name}
            if args.mode != "zero" and not reference:
                raise InputError("The reference set is empty: mean and clipped-mean ablation need reference prompts "
                                 "(--prompts).")
            prompts = list(eval_set.prompts[: args.max_prompts])
            for i, (which, lm, _card) in enumerate(items):
                lo, hi = 0.1 + 0.5 * i / len(items), 0.1 + 0.5 * (i + 1) / len(items)
                units = abl.build_units(lm, list(ns.parse_neuron_ids(ids_text, lm.adapter)), mode=args.mode,
                                        reference=list(reference), as_set=not args.no_set, n_random=args.n_random,
                                        seed=args.seed, progress=bar.stage(lo, lo + 0.2 * (hi - lo), f"{which} units"))
                uni = unigrams.get(which) or unigram_distribution(lm.tokenizer, list(reference), lm.adapter.vocab_size)
                ablations[which] = abl.ablate(lm, prompts, units, mode=args.mode, log_p_freq=uni.log_p,
                                              min_position=args.skip_first,
                                              progress=bar.stage(lo + 0.2 * (hi - lo), hi, f"{which} ablate"))
        if "induction" in parts:
            ind_set = chat(args, models, load_prompts(args.induction_prompts)) \
                if args.induction_source == "prompts" else None
            settings["induction"] = {"source": args.induction_source,
                                     "neurons": ns.canonical_neuron_text(args.induction_neurons) or "auto (3)",
                                     "sequences": args.sequences, "length": args.length,
                                     "random_sets": args.random_sets, "seed": args.induction_seed}
            for i, (which, lm, _card) in enumerate(items):
                if args.induction_source == "random":
                    seq = ind.random_sequences(lm.tokenizer, lm.adapter.vocab_size, n=args.sequences,
                                               length=args.length, seed=args.induction_seed)
                else:
                    seq = ind.prompt_sequences(lm.tokenizer, ind_set, max_rows=args.sequences)
                ids = ns.parse_neuron_ids(args.induction_neurons, lm.adapter) if args.induction_neurons.strip() else ()
                chosen = list(ids) or list(ind.select_neurons(lm, seq, n=R.DEFAULTS["ind_auto"]))
                inductions[which] = ind.induction_study(
                    lm, seq, chosen, n_random_sets=args.random_sets, seed=args.induction_seed,
                    progress=bar.stage(0.6 + 0.4 * i / len(items), 0.6 + 0.4 * (i + 1) / len(items), f"{which} induction"))
    report = R.neurons_report(scans, freqs, names={w: card.name for w, _, card in items}, ablations=ablations,
                              inductions=inductions)
    return finish(args, report, R.PAGE, models, settings, ref_set)


def _add_neurons(sub: Any) -> None:
    from analysis.unigram import DEFAULT_REFERENCE
    from components.reports import neurons as R

    d = R.DEFAULTS
    p = sub.add_parser("neurons", help="confidence neurons: entropy/frequency scans, ablation, induction study",
                       description="Scan the last block for entropy neurons and every block for token-frequency "
                                   "neurons, ablate neurons (total vs direct effect) and run the induction study; "
                                   "writes the Confidence neurons page's bundle. --prompts is the reference set "
                                   "(token frequencies and mean activations).")
    _common(p, DEFAULT_REFERENCE)
    s = p.add_argument_group("scan (the page's defaults)")
    s.add_argument("--max-reference", type=int, default=d["max_ref"], help="use at most this many reference prompts")
    s.add_argument("--no-processing", action="store_true", help="no paper processing (fold/centre W_U and w_out)")
    s.add_argument("--k", type=int, default=None, help="null-space size (default 1%% of d_model)")
    s.add_argument("--parts", type=_parts_of(NEURON_PARTS, none=True), default=NEURON_PARTS,
                   help="comma separated from ablate,induction, or none (default both)")
    s = p.add_argument_group("ablate")
    s.add_argument("--neurons", default=None, help="L{block}.N{index}, comma separated (0-based block, e.g. L3.N130; "
                   "the old 3.130 form works too; default: top 3 of A's scan by rho)")
    s.add_argument("--eval-prompts", default=DEFAULT_REFERENCE, help="prompts the ablation is evaluated on")
    s.add_argument("--mode", default=d["mode"], choices=["mean", "zero", "clipped"])
    s.add_argument("--max-prompts", type=int, default=d["max_eval"])
    s.add_argument("--n-random", type=int, default=d["n_random"], help="random baseline neurons")
    s.add_argument("--seed", type=int, default=d["seed"])
    s.add_argument("--skip-first", type=int, default=d["min_pos"], help="skip the first positions")
    s.add_argument("--no-set", action="store_true", help="do not also ablate the neurons together")
    s = p.add_argument_group("induction")
    s.add_argument("--induction-source", default=d["ind_source"], choices=["prompts", "random"])
    s.add_argument("--induction-prompts", default="induction", help="set of 'R R' texts")
    s.add_argument("--induction-neurons", default="", help="L{block}.N{index} list (default: auto, 3)")
    s.add_argument("--sequences", type=int, default=d["ind_n"])
    s.add_argument("--length", type=int, default=d["ind_len"], help="random R length")
    s.add_argument("--random-sets", type=int, default=d["ind_sets"])
    s.add_argument("--induction-seed", type=int, default=d["ind_seed"])
    p.set_defaults(func=run_neurons)


# ------------------------------------------------------------------------------------------ shift
def run_shift(args: argparse.Namespace) -> int:
    """Checkpoint shift A -> B (and the second pair's similarity) as the Checkpoint shift page computes it."""
    from analysis.loading import load_model
    from analysis.shift import compatibility, compute_shift, layer_kl, shift_similarity
    from components.reports import shift as R

    ps = given_prompts(args)
    pair2 = bool(args.pair2_base or args.pair2_tuned)
    if pair2 and not (args.pair2_base and args.pair2_tuned):
        raise InputError("The second pair needs both --pair2-base and --pair2-tuned.")
    with progress("shift", args.quiet) as bar:
        models = load_models(args, need_b=True)
        ps = main_prompts(args, models, ps)
        has_resp = all(r.response for r in ps.rows)
        reference = args.reference or R.default_reference(has_resp)
        if reference == "response" and not has_resp:
            raise InputError("Some prompts in this set have no response: use --reference greedy (B's greedy output), "
                             "or a set with a 'response' column.")
        max_prompts = args.max_prompts if args.max_prompts is not None else min(len(ps), R.DEFAULTS["max_prompts"])
        if not 1 <= max_prompts <= len(ps):
            raise InputError(f"--max-prompts must be between 1 and {len(ps)} (the set's size), got {max_prompts}.")
        rows = ps.rows[:max_prompts]
        responses = [r.response for r in rows] if reference == "response" else [None for _ in rows]
        settings = R.shift_settings(reference, args.n_tokens, args.top_n, max_prompts, args.columns_shown)
        prompts = [r.prompt for r in rows]
        a, b = models.a, models.b
        comp = compatibility(a, b)
        res = compute_shift(a, b, prompts, responses, reference=reference, n_tokens=args.n_tokens, top_n=args.top_n,
                            progress=bar.stage(0.05, 0.5 if pair2 else 0.8, "shift"))
        lk = None
        if comp.lens_kl:
            lk = layer_kl(a, b, prompts, responses, reference=reference, n_tokens=args.n_tokens,
                          progress=bar.stage(0.5 if pair2 else 0.8, 0.6 if pair2 else 1.0, "layer KL"))
        sim = None
        if pair2:
            spec_a2, spec_b2 = _spec(args, args.pair2_base), _spec(args, args.pair2_tuned)
            p2 = (load_model(spec_a2), load_model(spec_b2))
            sim = shift_similarity((a, b), p2, prompts, responses, reference=reference, n_tokens=args.n_tokens,
                                   top_n=args.top_n, columns=args.similarity_columns,
                                   progress=bar.stage(0.6, 1.0, "similarity"))
    pick = _index(args.show_prompt, len(res.prompts), "--show-prompt")
    report = R.shift_report(res, lk, name_a=a.name, name_b=b.name, pick=pick, n_cols=args.columns_shown)
    if comp.message:
        report.notes.insert(0, comp.message)
    if sim is not None:
        report.merge(R.similarity_report(sim, prompts, name_a=a.name, name_b=b.name, label_a2=spec_a2.label,
                                         label_b2=spec_b2.label, pick=pick, n_cols=args.columns_shown))
        settings = dict(settings, second_pair=[spec_a2.label, spec_b2.label], similarity_columns=args.similarity_columns)
    return finish(args, report, R.PAGE, models, settings, ps)


def _add_shift(sub: Any) -> None:
    from components.reports import shift as R

    d = R.DEFAULTS
    p = sub.add_parser("shift", help="checkpoint shift: what changed from A to B (needs --model-b)",
                       description="Teacher-forced log p_B − log p_A per step, per-layer lens KL, and optionally "
                                   "whether a second pair shifts alike; writes the Checkpoint shift page's bundle.")
    _common(p, "persona_eval", b_required=True)
    s = p.add_argument_group("settings (the page's defaults)")
    s.add_argument("--reference", default=None, choices=["response", "greedy"],
                   help="continuation both are forced on (default: the set's responses if every row has one)")
    s.add_argument("--n-tokens", type=int, default=d["n_tokens"], help="greedy tokens N (default 12)")
    s.add_argument("--top-n", type=int, default=d["top_n"], help="top-N tokens per step (default 100)")
    s.add_argument("--max-prompts", type=int, default=None, help="first N prompts (default min(set size, 20))")
    s.add_argument("--columns-shown", type=int, default=d["n_cols"], help="heatmap columns (default 30)")
    s.add_argument("--show-prompt", type=int, default=1, help="prompt of the heatmaps (1-based)")
    s = p.add_argument_group("second pair (optional)")
    s.add_argument("--pair2-base", default=None, help=f"e.g. {d['pair2'][0]}")
    s.add_argument("--pair2-tuned", default=None, help=f"e.g. {d['pair2'][1]}")
    s.add_argument("--similarity-columns", default=d["columns"], choices=["top", "all"],
                   help="tokens compared: union of both pairs' top-N, or all mapped tokens")
    p.set_defaults(func=run_shift)


# ------------------------------------------------------------------------------------------ ood
def run_ood(args: argparse.Namespace) -> int:
    """OOD separability study on A (and B) as the OOD separability page computes it."""
    from analysis import ood as O
    from analysis.ood_features import extract_features
    from analysis.prompts import check_context
    from components.reports import ood as R

    id_set = given_prompts(args)
    ood_sets = {}
    if args.id_group is None:
        for n in (n.strip() for n in args.ood_prompts.split(",") if n.strip()):
            ood_sets[n if not Path(n).is_file() else Path(n).name] = load_prompts(n)
    settings = O.OODSettings(seed=args.seed, fit_fraction=args.fit_fraction, poolings=tuple(args.poolings),
                             knn_k=args.knn_k, shrinkage=args.shrinkage, vim_dim=args.vim_dim or None,
                             neco_k=args.neco_k or None, logitgap_n=args.gap_n)
    blood_draws = args.blood_draws if args.blood else 0
    with progress("ood", args.quiet) as bar:
        models = load_models(args)
        id_set, ood_sets = main_prompts(args, models, id_set), {n: chat(args, models, ps) for n, ps in ood_sets.items()}
        if args.id_group is not None:
            groups = id_set.groups()
            if args.id_group not in groups:
                raise InputError(f"--id-group '{args.id_group}' is not a group of {id_set.name} "
                                 f"(groups: {', '.join(groups) or 'none'}).")
            ood_sets = {g: id_set.by_group(g) for g in groups if g != args.id_group}
            id_set = id_set.by_group(args.id_group)
        O.check_sets(len(set(id_set.prompts)), {n: len(ps) for n, ps in ood_sets.items()})
        items = models.items()
        for _, lm, _card in items:
            for ps in [id_set, *ood_sets.values()]:
                check_context(ps, lm.tokenizer, lm.context_length)
        id_name = id_set.name
        all_sets = [(id_name, list(id_set.prompts))] + [(n, list(ps.prompts)) for n, ps in ood_sets.items()]
        total = len(items) * sum(len(p) for _, p in all_sets)
        done = 0
        studies, projections = {}, {}
        for which, lm, card in items:
            feats = {}
            for name, prompts in all_sets:
                lo, hi = 0.95 * done / total, 0.95 * (done + len(prompts)) / total
                feats[name] = extract_features(lm, prompts, batch_size=args.batch_size, blood_draws=blood_draws,
                                               progress=bar.stage(lo, hi, f"{which}, {name}"))
                done += len(prompts)
            id_f = feats.pop(id_name) if id_name not in ood_sets else feats[id_name]
            ood_f = {n: feats[n] for n in ood_sets}
            label = f"{which}: {card.name}"
            studies[label] = O.study_from_features(id_f, ood_f, settings, id_name=id_name)
            first = next(iter(studies.values()))
            score = args.score or first.best_score
            projections[label] = O.project_2d(id_f, ood_f, R.map_layer(studies[label], score, args.layer),
                                              pooling=args.map_pooling, method=args.projection, fit_on=args.fit_on,
                                              random_state=args.random_state, id_name=id_name)
    first = next(iter(studies.values()))
    ood_view = args.view or R.metric_sets(first)[0]
    if ood_view not in R.metric_sets(first):
        raise InputError(f"--view '{ood_view}' is not one of the OOD sets ({', '.join(R.metric_sets(first))}).")
    score = args.score or first.best_score
    if score not in R.scores(first):
        raise InputError(f"--score '{score}' is not one of the study's scores ({', '.join(R.scores(first))}).")
    report = R.ood_report(studies, projections, ood_view=ood_view, metric=args.metric, score=score,
                          layer_opt=args.layer)
    meta_settings = R.ood_settings(first, id_name=id_name, id_group=args.id_group, ood_sets=ood_sets,
                                   batch_size=args.batch_size, blood_draws=blood_draws, ood_view=ood_view,
                                   metric=args.metric, score=score, layer_opt=args.layer, method=args.projection,
                                   fit_on=args.fit_on, map_pool=args.map_pooling, random_state=args.random_state)
    return finish(args, report, R.PAGE, models, meta_settings, id_set)


def _layer_opt(text: str) -> str | int:
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a layer number or 'best', got {text!r}") from None


def _add_ood(sub: Any) -> None:
    from analysis.ood_metrics import METRIC_LABELS
    from components.reports import ood as R

    d = R.DEFAULTS
    p = sub.add_parser("ood", help="OOD separability: which layers and scores tell ID from OOD prompts",
                       description="Fit OOD scores on part of the ID set (--prompts) and evaluate them on the held-out "
                                   "rest and the OOD sets; writes the OOD separability page's bundle.")
    _common(p, "facts")
    s = p.add_argument_group("sets")
    s.add_argument("--ood-prompts", default=",".join(R.DEFAULT_OOD),
                   help="OOD sets, comma separated built-in names or files (default: the page's three)")
    s.add_argument("--id-group", default=None, help="split --prompts by its group column: this group is ID, the "
                                                     "others OOD (then --ood-prompts is ignored)")
    s = p.add_argument_group("scores (the page's defaults)")
    s.add_argument("--seed", type=int, default=d["seed"], help="split seed")
    s.add_argument("--fit-fraction", type=float, default=d["fit_fraction"], help="ID fraction used to fit")
    s.add_argument("--knn-k", type=int, default=d["knn_k"])
    s.add_argument("--shrinkage", default=d["shrinkage"], choices=["ledoit-wolf", "oas"])
    s.add_argument("--vim-dim", type=int, default=d["vim_dim"], help="0 = auto")
    s.add_argument("--neco-k", type=int, default=d["neco_k"], help="0 = auto")
    s.add_argument("--gap-n", type=int, default=d["gap_n"], help="LogitGap N")
    s.add_argument("--batch-size", type=int, default=d["batch_size"])
    s.add_argument("--poolings", type=lambda t: tuple(x for x in t.split(",") if x) or ("last",),
                   default=d["poolings"], help="comma separated from last,mean (default both)")
    s.add_argument("--blood", action="store_true", help="also BLOOD (gradients; slower)")
    s.add_argument("--blood-draws", type=int, default=d["blood_draws"])
    s = p.add_argument_group("views")
    s.add_argument("--view", default=None, help="OOD set for the metrics (default: 'all OOD' with several sets)")
    s.add_argument("--metric", default=d["metric"], choices=list(METRIC_LABELS))
    s.add_argument("--score", default=None, help="score of the histograms and ROC (default: the best one)")
    s.add_argument("--layer", type=_layer_opt, default=d["layer"], help="layer of histograms, ROC and map, or best")
    s.add_argument("--projection", default=d["method"], choices=["pca", "umap"])
    s.add_argument("--fit-on", default=d["fit_on"], choices=["id", "all"])
    s.add_argument("--map-pooling", default=d["map_pool"], choices=["last", "mean"])
    s.add_argument("--random-state", type=int, default=d["random_state"])
    p.set_defaults(func=run_ood)


# ------------------------------------------------------------------------------------------ entry point
COMMANDS: dict[str, Callable[[Any], None]] = {"lens": _add_lens, "flow": _add_flow, "steer": _add_steer, "neurons": _add_neurons, "shift": _add_shift, "ood": _add_ood}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per analysis page."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Logitscope headless runs: each command writes the same figures, data and metadata.json as "
                    "its page's bundle into --out.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; project errors print their message to stderr and return 2 (no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LogitscopeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
