"""One declaration per method: a frozen settings dataclass whose fields carry their own default, bounds or choices,
help text and whether they change the computation or only the display.

Everything else derives from that declaration and from nothing else (no streamlit here; the widgets are in
components.settings_ui):
- ``add_arguments`` / ``from_args``: the CLI's flags (``--top-k`` for ``top_k``), defaults, choices and --help;
- ``as_metadata``: metadata.json's "settings";
- ``to_query`` / ``from_query``: the URL's query parameters (only values that differ from the default);
- ``compute_key``: the cache key of the engine call (display-only settings never recompute);
- ``check``: bounds and choices, as an InputError naming the setting.

    @dataclass(frozen=True)
    class LensSettings:
        top_k: int = setting(10, "top-k tokens kept per layer", label="Top-k", lo=1, hi=50)
        colour: str = setting("prob", "heatmap colour", choices=COLOURS, display=True)
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from analysis.core.errors import InputError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
RESERVED = ("set", "chat", "run")  # "<key>.set" / ".chat": a prompt input's link; "<page>.run": the page has run


@dataclass(frozen=True)
class Spec:
    """What a settings field declares besides its default (see ``setting``)."""

    help: str
    label: str = ""
    choices: tuple | None = None
    names: Mapping[Any, str] | None = None  # display names of the choices
    lo: float | None = None
    hi: float | None = None
    display: bool = False  # True: only changes the display; never part of the cache key
    cli: bool = True  # False: not a CLI flag (e.g. a page-only view choice)
    widget: str = ""  # "", "radio", "slider", "toggle", "textarea": how the page draws it ("" = by type)


def setting(default: Any, help: str, *, label: str = "", choices: Any = None, lo: float | None = None,
            hi: float | None = None, display: bool = False, cli: bool = True, widget: str = "") -> Any:
    """A settings field: its default and its declaration. ``choices`` may be a sequence or {value: display name}."""
    names = dict(choices) if isinstance(choices, Mapping) else None
    values = tuple(choices) if choices is not None else None
    spec = Spec(help=help, label=label, choices=values, names=names, lo=lo, hi=hi, display=display, cli=cli,
                widget=widget)
    if isinstance(default, (list, dict, set)):
        raise TypeError("settings defaults must be immutable (use a tuple)")
    return field(default=default, metadata={"spec": spec})


@dataclass(frozen=True)
class Field:
    """One declared setting: its name, Python type, default and Spec."""

    name: str
    type: Any
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        """The CLI flag: --top-k for top_k."""
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        """The widget label (the field name in words when none is declared)."""
        return self.spec.label or self.name.replace("_", " ").capitalize()

    @property
    def base(self) -> Any:
        """The type without Optional: int for ``int | None``."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        if typing.get_origin(self.type) in (typing.Union, types.UnionType) and len(args) == 1:
            return args[0]
        return self.type

    @property
    def optional(self) -> bool:
        """True when None is an allowed value."""
        return type(None) in typing.get_args(self.type)

    def name_of(self, value: Any) -> str:
        """The display name of a choice (its text when none is declared)."""
        return (self.spec.names or {}).get(value, str(value))


def fields_of(cls: type) -> tuple[Field, ...]:
    """The declared settings of a settings dataclass, in order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("spec")
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        out.append(Field(f.name, hints[f.name], f.default, spec))
    return tuple(out)


def field_of(cls: type, name: str) -> Field:
    """One declared setting by name."""
    for f in fields_of(cls):
        if f.name == name:
            return f
    raise KeyError(name)


def defaults(cls: type) -> dict[str, Any]:
    """{name: default} of every setting."""
    return {f.name: f.default for f in fields_of(cls)}


# ----------------------------------------------------------------------------------------- values and text
def to_text(f: Field, value: Any) -> str:
    """A value as CLI/URL text: tuples comma separated, None as '', booleans as true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(to_text(f, v) for v in value)
    return str(value)


def _scalar(kind: Any, text: str, what: str) -> Any:
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in TRUE or low in FALSE:
                return low in TRUE
            raise ValueError(text)
        if kind is int:
            return int(text.strip())
        if kind is float:
            return float(text.strip())
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a{'n' if kind is int else ''} "
                         f"{getattr(kind, '__name__', kind)}.") from None
    return text


def from_text(f: Field, text: str) -> Any:
    """Parse CLI/URL text into the field's type (InputError naming the setting when it does not parse)."""
    what = f"Setting '{f.name}'"
    if f.optional and text.strip().lower() in ("", "none"):
        return None
    base = f.base
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        if text.strip().lower() == "none":  # "--parts none": no part (the field itself is not optional)
            return ()
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(_scalar(item, p, what) for p in parts)
    return _scalar(base, text, what)


def check(settings: Any) -> Any:
    """``settings`` itself when every value is within its bounds and choices; InputError naming the setting."""
    for f in fields_of(type(settings)):
        value = getattr(settings, f.name)
        if value is None:
            if not f.optional:
                raise InputError(f"Setting '{f.name}' needs a value.")
            continue
        items = value if isinstance(value, tuple) else (value,)
        for v in items:
            if f.spec.choices is not None and v not in f.spec.choices:
                raise InputError(f"Setting '{f.name}' must be one of {', '.join(map(str, f.spec.choices))}; got {v!r}.")
            if f.spec.lo is not None and v < f.spec.lo or f.spec.hi is not None and v > f.spec.hi:
                raise InputError(f"Setting '{f.name}' must be between {f.spec.lo} and {f.spec.hi}; got {v!r}.")
    return settings


def compute_key(settings: Any) -> tuple:
    """((name, value), ...) of the settings that change the computation: the cache key of the engine call."""
    return tuple((f.name, getattr(settings, f.name)) for f in fields_of(type(settings)) if not f.spec.display)


def as_metadata(settings: Any) -> dict[str, Any]:
    """Every setting as a JSON-friendly dict (tuples as lists), for metadata.json."""
    return {f.name: list(v) if isinstance(v := getattr(settings, f.name), tuple) else v
            for f in fields_of(type(settings))}


def from_metadata(cls: type, data: Mapping[str, Any]) -> Any:
    """The settings recorded by ``as_metadata`` (unknown keys ignored, missing ones at their default), each of its
    field's type (lists as tuples) and checked: InputError naming the setting."""
    kw = {f.name: _typed(f, data[f.name]) for f in fields_of(cls) if f.name in data}
    return check(cls(**kw))


def _is(kind: Any, v: Any) -> bool:
    if kind is bool:
        return isinstance(v, bool)
    if kind is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, kind) if isinstance(kind, type) else False


def _typed(f: Field, value: Any) -> Any:
    """A recorded JSON value as the field's type (a list as a tuple of its item type); InputError otherwise. None
    for a field that cannot be None records "not used by the computation" (e.g. lens target_text): its default."""
    if value is None:
        return None if f.optional else f.default
    base = f.base
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        if isinstance(value, list) and all(_is(item, v) for v in value):
            return tuple(float(v) if item is float else v for v in value)
    elif _is(base, value):
        return float(value) if base is float else value
    raise InputError(f"Setting '{f.name}' must be {getattr(base, '__name__', base)}, got {str(value)[:80]!r}.")


# ----------------------------------------------------------------------------------------- URL
def to_query(settings: Any, prefix: str) -> dict[str, str]:
    """{"<prefix>.<name>": text} for every setting that differs from its default (a short, stable link)."""
    out = {}
    for f in fields_of(type(settings)):
        value = getattr(settings, f.name)
        if value != f.default:
            out[f"{prefix}.{f.name}"] = to_text(f, value)
    return out


def from_query(cls: type, params: Mapping[str, str], prefix: str) -> tuple[dict[str, Any], list[str]]:
    """({name: value} given in the URL for this method, [problems]): unknown or invalid parameters are reported,
    never applied (a stale link still opens the page with its defaults)."""
    known = {f.name: f for f in fields_of(cls)}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, text in params.items():
        if not key.startswith(prefix + "."):
            continue
        name = key[len(prefix) + 1:]
        if name in RESERVED:
            continue
        if name not in known:
            problems.append(f"unknown setting '{name}' in the link")
            continue
        try:
            value = from_text(known[name], text)
            check(dataclasses.replace(cls(), **{name: value}))
        except InputError as err:
            problems.append(str(err))
            continue
        values[name] = value
    return values, problems


# ----------------------------------------------------------------------------------------- CLI
def add_arguments(group: Any, cls: type, *, skip: tuple[str, ...] = (), helps: Mapping[str, str] | None = None) -> None:
    """One flag per CLI setting of ``cls`` on an argparse parser or group: type, choices, default and help from the
    declaration (``helps`` may add command-specific text)."""
    for f in fields_of(cls):
        if not f.spec.cli or f.name in skip:
            continue
        extra = (helps or {}).get(f.name, "")
        default = to_text(f, f.default) if f.default is not None else "none"
        text = f"{f.spec.help}{' ' + extra if extra else ''} (default {default or 'empty'})"
        kw: dict[str, Any] = {"dest": f.name, "default": f.default, "help": text.replace("%", "%%")}
        if f.base is bool:  # --flag alone means true; --flag false / --flag=false also parse
            kw.update(type=_arg_type(f), metavar="{true,false}", nargs="?", const=True)
        elif f.spec.choices is not None and typing.get_origin(f.base) is not tuple:
            kw["choices"] = list(f.spec.choices)
            kw["type"] = _arg_type(f)
        else:
            kw["type"] = _arg_type(f)
        group.add_argument(f.flag, **kw)


def _arg_type(f: Field) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return from_text(f, text)
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = f.name
    return parse


def from_args(cls: type, ns: argparse.Namespace, **overrides: Any) -> Any:
    """The settings from parsed CLI flags (settings that are not flags keep their default), checked."""
    kw = {f.name: getattr(ns, f.name) for f in fields_of(cls) if f.spec.cli and hasattr(ns, f.name)}
    kw.update(overrides)
    return check(cls(**kw))
