"""`python -m logitscope steer`: the steering and personas page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from analysis.errors import InputError
from logitscope.common import (
    add_common,
    finish,
    first_n,
    given_prompts,
    load_models,
    main_prompts,
    numbers,
    other_prompts,
    parts_of,
    progress,
)

STEER_PARTS = ("monitor", "flag", "generate", "sweep", "drift")


def run(args: argparse.Namespace) -> int:
    """Steering vectors built on A, then the page's Monitor, Flag, Steer (generations, sweep) and Drift parts."""
    from analysis.model_defaults import default_question
    from analysis.persona_drift import flag_data, persona_drift
    from analysis.steering import Steer, compare_generations, steering_sweep
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
            layers = (numbers(args.sweep_layers, "layer", int) if args.sweep_layers
                      else R.default_sweep_layers(sv, n_layers))
            alphas = numbers(args.sweep_alphas, "alpha") if args.sweep_alphas else R.DEFAULTS["alphas"]
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


def add(sub: Any) -> None:
    from analysis.steering import POSITION_RULES as STEER_RULES
    from analysis.steering_vectors import DEFAULT_LAYER_RULE, METHODS, POSITION_RULES
    from components.reports import steering as R

    d = R.DEFAULTS
    p = sub.add_parser("steer", help="steering vectors: build, monitor, flag data, steer, sweep, drift",
                       description="Build a steering vector per layer on A from a contrastive set (--prompts), then "
                                   "the Steering page's other parts (--parts); writes the Steering page's bundle.")
    add_common(p, "persona_pairs")
    s = p.add_argument_group("build (the page's defaults)")
    s.add_argument("--positive", default=None, help="positive group (default: the set's first group)")
    s.add_argument("--negative", default=None, help="negative group (default: the next group)")
    s.add_argument("--method", default=METHODS[0], choices=list(METHODS))
    s.add_argument("--rule", default=None, choices=list(POSITION_RULES), help="read position (default last)")
    s.add_argument("--seed", type=int, default=d["seed"], help="held-out split seed")
    s.add_argument("--hist-layer", type=int, default=None,
                   help="layer of the projection histogram (default: the default layer, see --layer)")
    s = p.add_argument_group("parts and their settings")
    s.add_argument("--parts", type=parts_of(STEER_PARTS), default=STEER_PARTS,
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
    p.set_defaults(func=run)
