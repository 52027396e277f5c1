"""Small helpers every analysis page shares: progress bridging, error display, compare columns, metadata."""
from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import streamlit as st

from analysis.core.errors import LogitscopeError
from analysis.core.progress import ProgressFn
from components.model_state import ModelPair, require_models
from components.reports import Report, report_metadata


@contextmanager
def progress_bar(label: str) -> Iterator[ProgressFn]:
    """A st.progress bar; yields ``report(fraction, message)`` for engine functions' ``progress=`` argument.

    ``report`` may be passed into an st.cache_data function (as an underscore argument): it updates the
    bar in the context captured here, outside the cache's element recording, so a later cache hit does not
    try to replay the bar (which raises CacheReplayClosureError).
    """
    from analysis.compute.backend import use_backend
    from components.backend_ui import session_backend

    backend = session_backend()  # the sidebar's compute backend runs the block (BackendError: a bad address)
    bar = st.progress(0.0, text=label)
    ctx = contextvars.copy_context()

    def update(fraction: float, message: str = "") -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=f"{label} {message}".strip())

    def report(fraction: float, message: str = "") -> None:
        ctx.run(update, fraction, message)
    try:
        with use_backend(backend):
            yield report
    finally:
        bar.empty()


def plot(fig: Any, key: str, **kwargs: Any) -> Any:
    """Draw a figure exactly as it exports: plotly's own theme (theme=None), not Streamlit's, and no colour that
    Streamlit's front end mistakes for a theme placeholder (components.charts.style.screen_safe)."""
    import plotly.graph_objects as go

    from components.charts.style import screen_safe, themed

    figure = go.Figure(fig) if not isinstance(fig, go.Figure) else fig
    return st.plotly_chart(screen_safe(themed(figure)), key=key, theme=None, **kwargs)


def show(report: Report, name: str, key: str, *, bundle: str, optional: bool = False, table: str | None = None) -> None:
    """Draw figure ``name`` of a report with its export popover (and its data: the report's table of the same name,
    or of the name ``table``).

    Streamlit keys: ``{key}_{name}`` (chart), ``{key}_x_{name}`` (export); the exported file is ``{bundle}_{name}``.
    ``optional``: draw nothing when the report has no such figure.
    """
    if name not in report.figures:
        if optional:
            return
        raise KeyError(name)
    from components.export_ui import export_figure

    plot(report.figures[name], f"{key}_{name}")
    export_figure(report.figures[name], f"{bundle}_{name}", key=f"{key}_x_{name}",
                  data=report.tables.get(table or name))


def model_default(key: str, value: Any) -> None:
    """Give widget `key` the current model's default `value`: on first use, and again whenever the model's
    default changes while the widget still holds the previous default (a value the user edited is kept)."""
    memo = f"{key}__model_default"
    if key not in st.session_state or st.session_state[key] == st.session_state.get(memo, object()):
        st.session_state[key] = value
    st.session_state[memo] = value


@contextmanager
def user_errors(stop: bool = True) -> Iterator[None]:
    """Show project errors as st.error (their message) and any other exception as a short error, never a traceback;
    then stop the page, or (``stop=False``, for one tab or part) carry on with the rest of it."""
    try:
        yield
    except LogitscopeError as err:
        st.error(str(err))
        if stop:
            st.stop()
    except Exception as err:  # noqa: BLE001 - the app must keep working
        st.error(f"Something went wrong: {type(err).__name__}: {err}")
        if stop:
            st.stop()


def pair_from_specs(specs: tuple) -> ModelPair:
    """The ModelPair of ``pair.specs()`` re-fetched from the model cache."""
    from components.model_state import load_cached

    got = {which: load_cached(spec) for which, spec in specs}
    return ModelPair(*got["A"], *(got.get("B", (None, None))))


@st.cache_data(max_entries=64, show_spinner=False)
def _memo(name: str, key: tuple, _fn: Callable[..., Any], _args: tuple, _kwargs: dict) -> Any:
    return _fn(*_args, **_kwargs)


def memo(name: str, key: tuple, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The page's Memo (components.reports.Memo): ``fn(*args, **kwargs)`` from Streamlit's data cache, keyed on the
    part's ``name`` and ``key`` only (the declaration's compute builds keys from the model specs, the prompt sets'
    hashes and the settings the part reads). Shared by every session; a hit replays no progress bar (``progress``
    goes with the unhashed arguments)."""
    return _memo(name, key, fn, args, kwargs)


def compute(module: Any, pair: ModelPair, inputs: Any, settings: Any, label: str = "Computing…") -> Any:
    """``module.compute`` of a declaration for this page's models and inputs, its parts through ``memo``, with a
    progress bar and errors shown as messages (the page stops on one)."""
    with user_errors(), progress_bar(label) as report:
        return module.compute(pair, inputs, settings, report, memo)


def show_row(report: Report, names: Sequence[str], key: str, *, bundle: str) -> None:
    """Figures ``names`` of a report side by side in equal columns (see ``show``)."""
    for name, col in zip(names, st.columns(len(names)), strict=True):
        with col:
            show(report, name, key, bundle=bundle)


def prompt_label(number: int, text: str, width: int = 96) -> str:
    """A prompt as a choice's label: its 1-based number and its text with line breaks shown (↵ ␍ ⇥), cut in the
    middle when long so that both the start and the end (a chat prompt's user turn, just before the answer) show."""
    shown = text.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")
    if len(shown) > width:
        head = width // 4
        shown = shown[:head] + " … " + shown[-(width - head - 3):]
    return f"{number}: {shown}"


def open_page(settings_cls: type, key: str) -> ModelPair:
    """The loaded models (or stop with a message) and this page's settings from the link, its problems shown."""
    from components.settings_ui import apply_query

    pair = require_models()
    for problem in apply_query(settings_cls, key, key):
        st.warning(f"Link: {problem}")
    return pair


def has_run(key: str, params: Any, clicked: bool) -> bool:
    """True once Run was pressed for exactly these ``params`` (hashable settings of the analysis); for a tab or a
    part of a page that waits while the rest of the page carries on (``require_run`` stops the page instead).

    A part that has run says so in the link ("<key without _ran>.run=1"): a fresh session opened from that link
    runs it at once (from the cache when this server computed it before).
    """
    flag = f"{key.removesuffix('_ran')}.run"
    if clicked or (key not in st.session_state and st.query_params.get(flag) == "1"):
        st.session_state[key] = params
    if st.session_state.get(key) != params:
        if flag in st.query_params:
            del st.query_params[flag]
        return False
    if st.query_params.get(flag) != "1":
        st.query_params[flag] = "1"
    return True


def require_run(key: str, params: Any, clicked: bool, what: str, *, changed: str = "settings") -> None:
    """Stop the page until Run was pressed for exactly these ``params`` (see ``has_run``, links included).

    Shows "Press Run to compute {what}." - or that the {changed} changed since the last run - and st.stop()s.
    """
    last = st.session_state.get(key)
    if not has_run(key, params, clicked):
        st.info(f"Press Run to compute {what}" + (f" (the {changed} changed since the last run)." if last else "."))
        st.stop()


def compare_columns(pair: ModelPair) -> list[tuple[str, Any, Any, Any]]:
    """[(label, lm, card, column)] - one column per loaded checkpoint, side by side when B is loaded."""
    items = pair.items()
    cols = st.columns(len(items)) if len(items) > 1 else [st.container()]
    return [(f"{which}: {card.name}", lm, card, col) for (which, lm, card), col in zip(items, cols, strict=True)]


def page_metadata(page: str, pair: ModelPair, settings: dict, prompt_set: Any = None, notes: Any = (),
                  inputs: Any = None) -> dict:
    """Export metadata: the page, both models' cards, the settings, the prompt set's hash, the results' notes and
    every input set by its CLI flag (``inputs``; default: ``prompt_set`` under --prompts), whose exact prompts the
    bundle keeps (see report_metadata)."""
    from components.backend_ui import session_backend_label

    meta = report_metadata(page, pair.cards(), settings, prompt_set, notes, inputs)
    meta["backend"] = session_backend_label()  # the sidebar's compute backend (the results are the same)
    return meta
