"""The one axis style every chart uses: integer ticks for layers, blocks, heads, positions, ranks and counts, and
categorical axes for ids and labels. Pure plotly helpers (no streamlit); each returns the figure it was given.

Integer axes get ``tickformat="d"`` plus fixed ticks every ``dtick`` units from ``tick0`` (0 by default), with
dtick = max(1, ceil(span / MAX_TICKS)): never a tick at 0.5 or 1.5, at most about MAX_TICKS ticks. Log axes (ranks)
get one tick per decade (1, 10, 100, ...). Layer numbering of every page: layer 0 = embedding output, layer l = output
of block l-1, layer L = last block's output before the final norm.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

MAX_TICKS = 12
# One colour meaning on every page: blue = promotes / more likely / pushes toward the target, red = suppresses / less
# likely / against (plotly's RdBu runs red -> blue, so a diverging scale centred at 0 agrees).
PROMOTES_RGB, SUPPRESSES_RGB = "33,102,172", "178,24,43"
PROMOTES, SUPPRESSES = f"rgb({PROMOTES_RGB})", f"rgb({SUPPRESSES_RGB})"
DIVERGING = "RdBu"
BLOCK_AXIS = "block (writes layer block+1)"


def integer_dtick(span: float, max_ticks: int = MAX_TICKS) -> int:
    """The tick step for an integer axis spanning ``span`` units: the smallest integer giving <= max_ticks steps."""
    span = float(span) if np.isfinite(span) else 0.0
    return max(1, math.ceil(abs(span) / max(1, max_ticks)))


def span_of(values: Iterable[float]) -> float:
    """max - min of the finite values (0 when there are none)."""
    v = np.asarray([float(x) for x in values], dtype=float)
    v = v[np.isfinite(v)]
    return float(v.max() - v.min()) if v.size else 0.0


def _update(fig: go.Figure, axis: str, props: dict, row: int | None, col: int | None,
            secondary_y: bool | None = None) -> go.Figure:
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', not {axis!r}")
    if axis == "x":
        fig.update_xaxes(props, row=row, col=col)
    elif secondary_y is None:
        fig.update_yaxes(props, row=row, col=col)
    else:
        fig.update_yaxes(props, row=row, col=col, secondary_y=secondary_y)
    return fig


def _data_span(fig: go.Figure, axis: str) -> float:
    """Span of the data on ``axis`` over every trace (a fallback when the caller gives no span)."""
    vals: list[float] = []
    for tr in fig.data:
        data = getattr(tr, axis, None)
        if data is None:
            continue
        arr = np.asarray(data, dtype=object).ravel()
        for x in arr:
            try:
                vals.append(float(x))
            except (TypeError, ValueError):
                continue
    if not vals:
        return 0.0
    finite = [v for v in vals if np.isfinite(v)]
    return max([span_of(finite)] + [abs(v) for v in finite])  # ticks start at tick0 = 0


def integer_axis(fig: go.Figure, axis: str = "x", *, span: float | None = None, row: int | None = None,
                 col: int | None = None, tick0: int = 0, secondary_y: bool | None = None,
                 max_ticks: int = MAX_TICKS) -> go.Figure:
    """Only integer ticks on ``axis`` (layers, blocks, heads, positions, ranks, counts, prompt numbers).

    ``span``: how many units the axis covers (e.g. the number of layers, or the largest count); taken from the
    traces' data on that axis when not given. ``row``/``col`` restrict it to one subplot.
    """
    if span is None:
        span = _data_span(fig, axis)
    props = dict(tickformat="d", tickmode="linear", tick0=int(tick0), dtick=integer_dtick(span, max_ticks))
    return _update(fig, axis, props, row, col, secondary_y)


def layer_rows_axis(fig: go.Figure, n_layers: int, axis: str = "y", max_ticks: int = MAX_TICKS) -> go.Figure:
    """Integer ticks on a layer axis 0..n_layers that always label the last layer (L), whatever the step."""
    step = integer_dtick(n_layers, max_ticks)
    ticks = sorted(set(range(0, n_layers + 1, step)) | {n_layers})
    if len(ticks) > 1 and ticks[-1] - ticks[-2] < step / 2:  # L right next to a tick: drop that tick, keep L
        del ticks[-2]
    return _update(fig, axis, dict(tickformat="d", tickmode="array", tickvals=ticks), None, None)


MAX_LAYER_ROWS = 40


def layer_rows(n_layers: int, step: int = 0, max_rows: int = MAX_LAYER_ROWS) -> list[int]:
    """The layers a layer-by-position heatmap draws: every ``step``-th from 0 (0 = auto: all of them up to
    ``max_rows`` rows, else the smallest step giving at most max_rows), and the last layer L always."""
    if step <= 0:
        step = max(1, math.ceil((n_layers + 1) / max_rows))
    return sorted(set(range(0, n_layers + 1, step)) | {n_layers})


def heatmap_height(n_rows: int, *, budget: int = 560, min_row: int = 16, max_row: int = 28, extra: int = 200) -> int:
    """The height of a rows-by-columns heatmap: rows of max_row px while they fit in ``budget`` px, then thinner (to
    min_row), so a 30-layer lens fits a 800 px screen with its token axis; at least 360 px."""
    row = max(min_row, min(max_row, budget // max(1, n_rows)))
    return max(360, row * n_rows + extra)


def log_integer_axis(fig: go.Figure, axis: str = "y", *, row: int | None = None, col: int | None = None
                     ) -> go.Figure:
    """A log axis of integers (ranks): one tick per decade, labelled 1, 10, 100, ... (no fractional ticks)."""
    props = dict(type="log", tickmode="linear", tick0=0, dtick=1, tickformat="d")
    return _update(fig, axis, props, row, col)


def categorical_axis(fig: go.Figure, axis: str = "x", *, row: int | None = None, col: int | None = None,
                     order: Iterable[str] | None = None) -> go.Figure:
    """A categorical axis (neuron ids, 'block i' / 'H j' labels, tokens): never read as numbers."""
    props: dict = dict(type="category")
    if order is not None:
        props.update(categoryorder="array", categoryarray=list(order))
    return _update(fig, axis, props, row, col)


def count_span(*samples: Iterable[float]) -> float:
    """An estimate of the largest bin count of histograms of ``samples`` (each one trace): numpy's automatic bins,
    never more than the sample size. Use as ``span`` of a histogram's count axis."""
    best = 0
    for s in samples:
        v = np.asarray(list(s), dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        counts, _ = np.histogram(v, bins="auto" if np.ptp(v) > 0 else 1)
        best = max(best, int(counts.max()))
    return float(best)


TITLE_CHARS = 46  # a title line that fits a half-width column at 1280 px (about 400 px of 17 px type)
AXIS_TITLE_CHARS = 44


SUP_WIDTH = 1.4  # a <sup> line (smaller type) holds this many times more characters


def wrap_text(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters at spaces (plotly's <br>); existing breaks kept; a
    line that is all <sup>...</sup> (a subtitle) wraps at SUP_WIDTH x width, each piece in its own <sup>."""
    out = []
    for part in text.split("<br>"):
        if part.startswith("<sup>") and part.endswith("</sup>") and part.count("<sup>") == 1:
            inner = wrap_text(part[5:-6], int(width * SUP_WIDTH))
            out.extend(f"<sup>{x}</sup>" for x in inner.split("<br>"))
            continue
        line = ""
        for word in part.split(" "):
            if line and len(line) + 1 + len(word) > width:
                out.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        out.append(line)
    return "<br>".join(out)


def wrap_titles(fig: go.Figure, width: int = TITLE_CHARS, axis_width: int = AXIS_TITLE_CHARS) -> go.Figure:
    """Wrap the title and the axis titles so they never run into each other or off a half-width column, make room
    above the plot for a title of several lines, and let every axis push its margin for its labels (automargin)."""
    title = fig.layout.title.text if fig.layout.title is not None else None
    if title:
        wrapped = wrap_text(title, width)
        lines = wrapped.count("<br>") + 1
        fig.layout.title.text = wrapped
        above = [a for a in fig.layout.annotations if a.yref == "paper" and a.y is not None and a.y >= 1 and a.text]
        over_plot = bool(above)
        extra = max((wrap_text(a.text, axis_width).count("<br>") + 1 for a in above), default=0) * 20 + 6 * over_plot
        need = 40 + 22 * lines + extra  # subplot titles (of any number of lines) sit above the plot, under the title
        top = fig.layout.margin.t if fig.layout.margin.t is not None else 100
        if (lines > 1 or over_plot) and need > top:
            grow = {"height": fig.layout.height + need - top} if fig.layout.height else {}
            fig.update_layout(margin={"t": need}, **grow)  # the plot keeps its height under a taller title
    for key in fig.layout.to_plotly_json():
        if key.startswith(("xaxis", "yaxis")):
            ax = fig.layout[key]
            if ax.title is not None and ax.title.text:
                ax.title.text = wrap_text(ax.title.text, axis_width)
            if ax.automargin is None:  # tick labels and axis titles push the margin, on screen and in exports
                ax.automargin = True
    for ann in fig.layout.annotations or ():  # make_subplots' titles
        if ann.text and ann.yref == "paper" and "<br>" not in ann.text and len(ann.text) > axis_width:
            ann.text = wrap_text(ann.text, axis_width)
    return fig


THEME = "plotly_white"
# Series colours (checkpoints A, B, then more): blue, orange, green, purple...; red comes late, so that a "B" line
# is never read as "suppresses" (red's meaning on every page).
COLORWAY = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#72b7b2", "#eeca3b", "#ff9da6", "#bab0ac",
            "#e45756")
TEMPLATE = go.layout.Template(pio.templates[THEME])
TEMPLATE.layout.colorway = COLORWAY


def themed(fig: go.Figure) -> go.Figure:
    """Give the figure Logitscope's own template: importing streamlit makes its "streamlit" template the default,
    whose colours are placeholders only Streamlit's front end fills in (a bundle PNG made in the app drew them
    near-black, a CLI PNG did not). With it set here, the screen, the page's export and the CLI's agree."""
    fig.layout.template = TEMPLATE
    return fig


_PLACEHOLDER = re.compile(r"#0000([0-9a-fA-F]{2})")


def screen_safe(fig: go.Figure) -> dict:
    """The figure as a dict for st.plotly_chart, with colours "#0000xx" written as rgb(0, 0, n): Streamlit's
    front end takes those hex codes for its theme placeholders and swaps them (Magma's first stop, #000004, drew
    a KL of 0 lilac on screen while the export drew it black)."""
    def fix(value):
        if isinstance(value, str):
            m = _PLACEHOLDER.fullmatch(value)
            return f"rgb(0,0,{int(m.group(1), 16)})" if m else value
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(fix(v) for v in value)
        return value
    # fig.to_dict(), not json.loads(fig.to_json()): Streamlit draws a JSON-decoded dict without its template (black)
    return fix(fig.to_dict())
