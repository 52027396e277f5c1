"""`python -m logitscope neurons`: the confidence neurons page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from typing import Any

from analysis.errors import InputError
from logitscope.common import (
    add_common,
    chat,
    finish,
    given_prompts,
    load_models,
    load_prompts,
    main_prompts,
    parts_of,
    progress,
)

NEURON_PARTS = ("ablate", "induction")


def run(args: argparse.Namespace) -> int:
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


def add(sub: Any) -> None:
    from analysis.unigram import DEFAULT_REFERENCE
    from components.reports import neurons as R

    d = R.DEFAULTS
    p = sub.add_parser("neurons", help="confidence neurons: entropy/frequency scans, ablation, induction study",
                       description="Scan the last block for entropy neurons and every block for token-frequency "
                                   "neurons, ablate neurons (total vs direct effect) and run the induction study; "
                                   "writes the Confidence neurons page's bundle. --prompts is the reference set "
                                   "(token frequencies and mean activations).")
    add_common(p, DEFAULT_REFERENCE)
    s = p.add_argument_group("scan (the page's defaults)")
    s.add_argument("--max-reference", type=int, default=d["max_ref"], help="use at most this many reference prompts")
    s.add_argument("--no-processing", action="store_true", help="no paper processing (fold/centre W_U and w_out)")
    s.add_argument("--k", type=int, default=None, help="null-space size (default 1%% of d_model)")
    s.add_argument("--parts", type=parts_of(NEURON_PARTS, none=True), default=NEURON_PARTS,
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
    p.set_defaults(func=run)
