"""Small helpers every analysis page shares: progress bridging, error display, compare columns, metadata."""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import streamlit as st

from analysis.errors import LogitscopeError
from components.model_state import ModelPair
from components.reports import Report, report_metadata

ProgressFn = Callable[[float, str], None]


@contextmanager
def progress_bar(label: str) -> Iterator[ProgressFn]:
    """A st.progress bar; yields ``report(fraction, message)`` for engine functions' ``progress=`` argument.

    ``report`` may be passed into an st.cache_data function (as an underscore argument): it updates the
    bar in the context captured here, outside the cache's element recording, so a later cache hit does not
    try to replay the bar (which raises CacheReplayClosureError).
    """
    bar = st.progress(0.0, text=label)
    ctx = contextvars.copy_context()

    def update(fraction: float, message: str = "") -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=f"{label} {message}".strip())

    def report(fraction: float, message: str = "") -> None:
        ctx.run(update, fraction, message)
    try:
        yield report
    finally:
        bar.empty()


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

    st.plotly_chart(report.figures[name], key=f"{key}_{name}")
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
def user_errors() -> Iterator[None]:
    """Show project errors as st.error (their message) and any other exception as a short error, never a traceback."""
    try:
        yield
    except LogitscopeError as err:
        st.error(str(err))
        st.stop()
    except Exception as err:  # noqa: BLE001 - the app must keep working
        st.error(f"Something went wrong: {type(err).__name__}: {err}")
        st.stop()


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
    return [(f"{which}: {card.name}", lm, card, col) for (which, lm, card), col in zip(items, cols)]


def page_metadata(page: str, pair: ModelPair, settings: dict, prompt_set: Any = None, notes: Any = (),
                  inputs: Any = None) -> dict:
    """Export metadata: the page, both models' cards, the settings, the prompt set's hash, the results' notes and
    every input set by its CLI flag (``inputs``; default: ``prompt_set`` under --prompts), whose exact prompts the
    bundle keeps (see report_metadata)."""
    return report_metadata(page, pair.cards(), settings, prompt_set, notes, inputs)
