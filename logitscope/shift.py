"""`python -m logitscope shift`: the checkpoint shift page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from analysis.errors import InputError
from logitscope.common import add_common, finish, given_prompts, index_arg, load_models, main_prompts, progress, spec_of


def run(args: argparse.Namespace) -> int:
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
            spec_a2, spec_b2 = spec_of(args, args.pair2_base), spec_of(args, args.pair2_tuned)
            p2 = (load_model(spec_a2), load_model(spec_b2))
            sim = shift_similarity((a, b), p2, prompts, responses, reference=reference, n_tokens=args.n_tokens,
                                   top_n=args.top_n, columns=args.similarity_columns,
                                   progress=bar.stage(0.6, 1.0, "similarity"))
    pick = index_arg(args.show_prompt, len(res.prompts), "--show-prompt")
    report = R.shift_report(res, lk, name_a=a.name, name_b=b.name, pick=pick, n_cols=args.columns_shown)
    if comp.message:
        report.notes.insert(0, comp.message)
    if sim is not None:
        report.merge(R.similarity_report(sim, prompts, name_a=a.name, name_b=b.name, label_a2=spec_a2.label,
                                         label_b2=spec_b2.label, pick=pick, n_cols=args.columns_shown))
        settings = dict(settings, second_pair=[spec_a2.label, spec_b2.label], similarity_columns=args.similarity_columns)
    return finish(args, report, R.PAGE, models, settings, ps)


def add(sub: Any) -> None:
    from components.reports import shift as R

    d = R.DEFAULTS
    p = sub.add_parser("shift", help="checkpoint shift: what changed from A to B (needs --model-b)",
                       description="Teacher-forced log p_B − log p_A per step, per-layer lens KL, and optionally "
                                   "whether a second pair shifts alike; writes the Checkpoint shift page's bundle.")
    add_common(p, "persona_eval", b_required=True)
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
    p.set_defaults(func=run)
