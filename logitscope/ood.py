"""`python -m logitscope ood`: the OOD separability page's computation and bundle, headless."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from analysis.errors import InputError
from logitscope.common import (
    add_common,
    chat,
    finish,
    given_prompts,
    layer_opt,
    load_models,
    load_prompts,
    main_prompts,
    progress,
)


def run(args: argparse.Namespace) -> int:
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


def add(sub: Any) -> None:
    from analysis.ood_metrics import METRIC_LABELS
    from components.reports import ood as R

    d = R.DEFAULTS
    p = sub.add_parser("ood", help="OOD separability: which layers and scores tell ID from OOD prompts",
                       description="Fit OOD scores on part of the ID set (--prompts) and evaluate them on the held-out "
                                   "rest and the OOD sets; writes the OOD separability page's bundle.")
    add_common(p, "facts")
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
    s.add_argument("--layer", type=layer_opt, default=d["layer"], help="layer of histograms, ROC and map, or best")
    s.add_argument("--projection", default=d["method"], choices=["pca", "umap"])
    s.add_argument("--fit-on", default=d["fit_on"], choices=["id", "all"])
    s.add_argument("--map-pooling", default=d["map_pool"], choices=["last", "mean"])
    s.add_argument("--random-state", type=int, default=d["random_state"])
    p.set_defaults(func=run)
