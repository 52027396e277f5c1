"""One Python function per registered method, built from its declaration (components/methods.py): its keyword
arguments are the declaration's settings with their defaults, bounds, choices and help (the page's widgets and the
CLI's flags), its prompt sets the declaration's inputs. Each runs the declaration's ``run``, as the CLI does."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from analysis.core.errors import InputError
from analysis.core.loading import LoadedModel
from components.methods import METHODS, Method
from components.reports import Input
from components.reports import ood as ood_report
from components.reports import shift as shift_report
from components.settings import Field, fields_of, from_metadata
from logitscope.api.models import evaluation, pair_of
from logitscope.api.prompts import prompt_set
from logitscope.api.result import Result
from logitscope.command import needed, resolve_inputs
from logitscope.common import Progress

NAMES = {"--prompts": "prompts", "--ood-prompts": "ood"}  # an input's keyword: its flag's dest unless named here
EXTRAS: dict[str, dict[str, str]] = {  # keywords of a method beyond its settings and inputs (the CLI's own flags)
    "shift": {"pair2": "a second (base, tuned) pair of loaded models: does it shift alike? (default none)"},
    "ood": {"id_group": "split prompts by its group column: this group is ID, each other group an OOD set"},
}
COMMON = {"chat_template": "wrap each plain prompt as one user turn with A's chat template (default False)",
          "progress": "a progress bar (tqdm.auto: in notebooks and terminals); False for none (default True)"}


def keyword_of(inp: Input) -> str:
    """The API keyword of a prompt-set input: prompts for --prompts, ood for --ood-prompts, else the flag's dest."""
    return NAMES.get(inp.flag, inp.dest)


def settings_of(m: Method, given: Mapping[str, Any]) -> Any:
    """The method's settings from keyword arguments: InputError naming an unknown setting or a bad value."""
    names = [f.name for f in fields_of(m.settings)]
    unknown = [k for k in given if k not in names]
    if unknown:
        raise InputError(f"{m.command}() has no setting {', '.join(repr(k) for k in unknown)}; its settings are "
                         f"{', '.join(names)}.")
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    return from_metadata(m.settings, values)


def _sets(inp: Input, value: Any) -> Any:
    if not inp.many:
        return prompt_set(value, keyword_of(inp))
    if isinstance(value, Mapping):
        return tuple(replace(prompt_set(v, str(k)), name=str(k)) for k, v in value.items())
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or hasattr(value, "columns"):
        value = [value]
    return tuple(prompt_set(v, f"{keyword_of(inp)} {i}") for i, v in enumerate(value, start=1))


def _hooks(m: Method, models: Any, inputs: dict[str, Any], s: Any, extras: dict[str, Any]
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs, run's keyword arguments) for the methods whose command has flags of its own (shift, ood)."""
    if m.command == "ood":
        group = extras.get("id_group")
        return ood_report.split_inputs(inputs, group), {"id_group": group}
    if m.command == "shift" and extras.get("pair2") is not None:
        pair2 = tuple(extras["pair2"])
        if len(pair2) != 2 or not all(isinstance(lm, LoadedModel) for lm in pair2):
            raise InputError("pair2 must be a (base, tuned) pair of models from ls.load or ls.wrap.")
        shift_report.resolve_reference(inputs["--prompts"], s)
        return inputs, {"second": pair2}
    return inputs, {}


def run_method(name: str, a: LoadedModel, b: LoadedModel | None = None, **kwargs: Any) -> Result:
    """METHODS[name] on A (and B): prompt sets from the keywords of its inputs, the rest settings (see make)."""
    m = METHODS[name]
    if m.needs_b and b is None:
        raise InputError(f"{m.command}() compares two checkpoints: give B (ls.{m.command}(a, b, ...)).")
    inputs_of = {keyword_of(i): i for i in m.module.INPUTS}
    extras = {k: kwargs.pop(k) for k in list(kwargs) if k in EXTRAS.get(name, {})}
    chat_template = bool(kwargs.pop("chat_template", False))
    show = bool(kwargs.pop("progress", True))
    given_values = {k: kwargs.pop(k) for k in list(kwargs) if k in inputs_of}
    s = settings_of(m, kwargs)
    models = pair_of(a, b)
    given = {inputs_of[k].flag: _sets(inputs_of[k], v) for k, v in given_values.items()
             if v is not None and needed(m, inputs_of[k], s)}
    parts: dict[str, list[Any]] = {}

    def memo(part: str, key: tuple, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        value = fn(*args, **kw)
        parts.setdefault(part, []).append(value)
        return value

    bar = Progress(m.command, quiet=not show, notebook=True)
    try:
        with evaluation(*(lm for _, lm, _ in models.items())):
            inputs = resolve_inputs(m, models, s, given, chat_template)
            inputs, run_kwargs = _hooks(m, models, inputs, s, extras)
            report, meta = m.module.run(models, inputs, s, bar.stage(0.0, 1.0), memo, **run_kwargs)
    finally:
        bar.close()
    return Result(m.command, m.module.PAGE, report, meta, models, dict(inputs), parts)


def _describe(f: Field) -> str:
    bounds = ""
    if f.spec.choices is not None:
        bounds = "; one of " + ", ".join(map(repr, f.spec.choices))
    elif f.spec.lo is not None or f.spec.hi is not None:
        bounds = f"; from {f.spec.lo} to {f.spec.hi}"
    return f"{f.name} (default {f.default!r}{bounds}): {f.spec.help}"


def signature_of(m: Method) -> inspect.Signature:
    """(a, [b,] prompts=None, [b=None,] *, other inputs, extras, chat_template, progress, settings...)."""
    P = inspect.Parameter
    params = [P("a", P.POSITIONAL_OR_KEYWORD)]
    if m.needs_b:
        params += [P("b", P.POSITIONAL_OR_KEYWORD), P("prompts", P.POSITIONAL_OR_KEYWORD, default=None)]
    else:
        params += [P("prompts", P.POSITIONAL_OR_KEYWORD, default=None), P("b", P.POSITIONAL_OR_KEYWORD, default=None)]
    params += [P(keyword_of(i), P.KEYWORD_ONLY, default=None) for i in m.module.INPUTS[1:]]
    params += [P(k, P.KEYWORD_ONLY, default=None) for k in EXTRAS.get(m.command, {})]
    params += [P("chat_template", P.KEYWORD_ONLY, default=False), P("progress", P.KEYWORD_ONLY, default=True)]
    params += [P(f.name, P.KEYWORD_ONLY, default=f.default, annotation=f.type) for f in fields_of(m.settings)]
    return inspect.Signature(params, return_annotation=Result)


def make(name: str) -> Callable[..., Result]:
    """The API function of METHODS[name]: its signature and docstring from the declaration."""
    m = METHODS[name]
    sig = signature_of(m)

    def method(*args: Any, **kwargs: Any) -> Result:
        names = set(sig.parameters)
        extra = [k for k in kwargs if k not in names]
        if extra:
            settings_of(m, {k: kwargs[k] for k in extra})  # raises, naming the unknown setting(s)
        bound = sig.bind(*args, **kwargs)
        given = dict(bound.arguments)
        a, b = given.pop("a"), given.pop("b", None)
        return run_method(name, a, b, **given)

    inputs = [f"{keyword_of(i)}: {i.help} (default from A: {i.demo_set} on the demo models)" for i in m.module.INPUTS]
    doc = [f"{m.title}: the page's computation on A (and B), as `python -m logitscope {m.command}` runs it.", "",
           "Prompt sets (a string, list, DataFrame or PromptSet; see logitscope.api.prompts):",
           *[f"  {line}" for line in inputs], "Other keywords:",
           *[f"  {k}: {v}" for k, v in {**EXTRAS.get(name, {}), **COMMON}.items()], "Settings:",
           *[f"  {_describe(f)}" for f in fields_of(m.settings)], "", "Returns a logitscope.api.Result."]
    method.__name__ = method.__qualname__ = m.command
    method.__doc__ = "\n".join(doc)
    method.__signature__ = sig  # type: ignore[attr-defined]
    method.__module__ = "logitscope.api"
    return method
