"""One CLI command per registered method (components.methods), built from its declaration: the common flags, a flag
per prompt-set input (``INPUTS``) and per setting, then ``run(models, inputs, settings, progress)`` and the bundle.

A command module (logitscope/commands/<command>.py) gives its help and, where its method needs them, hooks: ``arguments``
(flags beyond the declaration), ``settings_of`` (settings from the flags), ``prepare`` (the inputs after they are
read, e.g. a set split by its group column) and ``run_kwargs`` (keyword arguments of ``run``, e.g. a second pair).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from analysis.models.defaults import default_set
from analysis.models.pair import ModelPair
from components.methods import METHODS, Method
from components.reports import Input
from components.settings import add_arguments, from_args
from logitscope.common import add_common, finish, first_n, load_models, load_prompts, progress

Hook = Callable[..., Any]


def needed(m: Method, inp: Input, s: Any) -> bool:
    """Whether the run reads an input: always, or when its part runs (the declaration's ``input_needed`` decides
    where it has one)."""
    rule = getattr(m.module, "input_needed", None)
    if rule is not None:
        return bool(rule(inp, s))
    return inp.part is None or inp.part in getattr(s, "parts", ())


def given_sets(m: Method, args: argparse.Namespace, s: Any) -> dict[str, Any]:
    """{flag: set or tuple of sets} of the inputs given on the command line and needed (read before the models load:
    a bad file fails fast); the others come from model A later."""
    out: dict[str, Any] = {}
    for inp in m.module.INPUTS:
        text = getattr(args, inp.dest, None)
        if text and needed(m, inp, s):
            out[inp.flag] = (tuple(load_prompts(t.strip()) for t in text.split(",") if t.strip()) if inp.many
                             else load_prompts(text))
    return out


def resolve_inputs(m: Method, models: ModelPair, s: Any, given: dict[str, Any], wrap_plain: bool = False
                   ) -> dict[str, Any]:
    """Every needed input: the given set(s), else the declaration's default for model A (default_set maps a demo
    set to its real-model counterpart; an input of several sets keeps its built-in names), rendered with A's chat
    template (rows given as messages always, plain prompts when ``wrap_plain``)."""
    from analysis.prompts import apply_chat_template

    def render(ps: Any) -> Any:
        return apply_chat_template(ps, models.a.tokenizer, wrap_plain=wrap_plain)

    out: dict[str, Any] = {}
    for inp in m.module.INPUTS:
        if not needed(m, inp, s):
            continue
        value = given.get(inp.flag)
        if value is None:
            names = inp.demo_set if isinstance(inp.demo_set, tuple) else (inp.demo_set,)
            value = tuple(load_prompts(n) for n in names) if inp.many else load_prompts(default_set(models.a, names[0]))
        out[inp.flag] = tuple(render(ps) for ps in value) if inp.many else render(value)
    return out


def method_command(name: str, *, help: str, description: str, max_prompts_flag: bool = False,
                   arguments: Hook | None = None, settings_of: Hook | None = None, prepare: Hook | None = None,
                   run_kwargs: Hook | None = None) -> tuple[Callable[[argparse.Namespace], int], Callable[[Any], None]]:
    """(run, add) of the command of METHODS[name]."""
    m = METHODS[name]

    def run(args: argparse.Namespace) -> int:
        s = settings_of(args) if settings_of else from_args(m.settings, args)
        given = given_sets(m, args, s)
        with progress(m.command, args.quiet) as bar:
            models = load_models(args, need_b=m.needs_b)
            inputs = resolve_inputs(m, models, s, given, args.chat_template)
            if max_prompts_flag:
                inputs["--prompts"] = first_n(inputs["--prompts"], args.max_prompts)
            if prepare is not None:
                inputs = prepare(args, models, inputs)
            extra = run_kwargs(args, models, inputs, s) if run_kwargs is not None else {}
            bar.stage(0, 0.05)(1.0, "models loaded")
            report, settings = m.module.run(models, inputs, s, bar.stage(0.05, 1.0), **extra)
        return finish(args, report, m.module.PAGE, models, settings, inputs["--prompts"], inputs)

    def add(sub: Any) -> None:
        p = sub.add_parser(m.command, help=help, description=description)
        main = m.module.INPUTS[0]
        add_common(p, main.demo_set if isinstance(main.demo_set, str) else main.demo_set[0], b_required=m.needs_b)
        others = m.module.INPUTS[1:]
        if others:
            g = p.add_argument_group("prompt sets")
            for inp in others:
                default = ",".join(inp.demo_set) if isinstance(inp.demo_set, tuple) else inp.demo_set
                g.add_argument(inp.flag, default=None, help=f"{inp.help} (default from model A: {default} on the demo "
                                                            "models" + ("" if inp.many else ", its counterpart on "
                                                                        "others") + ")")
        g = p.add_argument_group("settings (the page's defaults)")
        if max_prompts_flag:
            g.add_argument("--max-prompts", type=int, default=None, help="use only the first N prompts of the set")
        if arguments is not None:
            arguments(p, g)
        else:
            add_arguments(g, m.settings)
        p.set_defaults(func=run)

    return run, add
