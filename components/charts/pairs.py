"""Figure pairs drawn for checkpoint A and checkpoint B share their scales, so that side by side they read right.

``share_scales(figs)`` gives every numeric axis the union range of the figures' data (bars from 0, histograms with
the same bins and count range, log axes in decades, reversed axes kept reversed), and every colour scale the union
colour range (diverging scales, with a midpoint, symmetric around it). Categorical axes (tokens, ids) are left alone.
Pure plotly, in place; ``components.reports.Report.add`` calls it on every "<name>_A" / "<name>_B" pair.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import plotly.graph_objects as go

from components.charts.style import integer_dtick

PAD = 0.05  # of the span, on each free side of a scatter axis
_HIST_BINS = 30


def _numeric(values: object) -> np.ndarray | None:
    """The finite values of a trace's data as floats; None when the data is not numeric (tokens, labels)."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=object).ravel()
    if arr.size == 0:
        return np.zeros(0)
    try:
        out = arr.astype(float)
    except (TypeError, ValueError):
        return None
    return out[np.isfinite(out)]


def _traces_on(fig: go.Figure, axis_key: str) -> list:
    """The traces drawn against layout axis ``axis_key`` ('xaxis', 'yaxis2', ...)."""
    letter, suffix = axis_key[0], axis_key[5:]
    ref = letter + suffix
    return [t for t in fig.data if (getattr(t, f"{letter}axis", None) or letter) == ref]


def _value_letter(trace) -> str:
    """The axis letter along which a bar or histogram trace's values (or counts) lie."""
    return "x" if getattr(trace, "orientation", None) == "h" else "y"


def _axis_keys(fig: go.Figure) -> set[str]:
    keys = {k for k in fig.layout.to_plotly_json() if k.startswith(("xaxis", "yaxis"))}
    for t in fig.data:
        for letter in "xy":
            ref = getattr(t, f"{letter}axis", None)
            if ref is not None or hasattr(t, letter):
                keys.add(f"{letter}axis{(ref or letter)[1:]}")
    return keys


def _hist_data_letter(trace) -> str:
    return "y" if getattr(trace, "orientation", None) == "h" else "x"


def _bins_of(trace) -> int:
    """How many bins a histogram trace asks for (nbins, or its explicit bins' count); 0 when plotly picks."""
    letter = _hist_data_letter(trace)
    bins = getattr(trace, f"{letter}bins", None)
    if bins is not None and bins.size and bins.start is not None and bins.end is not None:
        return int(round((float(bins.end) - float(bins.start)) / float(bins.size)))
    return int(getattr(trace, f"nbins{letter}", None) or 0)


def _share_histograms(figs: Sequence[go.Figure]) -> set[tuple[int, str]]:
    """Same bins for every histogram of the figures, and the same count range; returns the (figure, axis) count axes
    it set (the data axes are then shared like any other)."""
    done: set[tuple[int, str]] = set()
    hists = [(i, t) for i, f in enumerate(figs) for t in f.data if t.type == "histogram"]
    if not hists:
        return done
    data = [_numeric(getattr(t, _hist_data_letter(t))) for _, t in hists]
    if any(d is None for d in data):
        return done
    allv = np.concatenate([d for d in data if d.size] or [np.zeros(1)])
    lo, hi = float(allv.min()), float(allv.max())
    nbins = max((_bins_of(t) for _, t in hists), default=0) or _HIST_BINS
    size = (hi - lo) / nbins if hi > lo else 1.0
    start, end = lo - (0.0 if hi > lo else 0.5), hi + size * 1e-6 + (0.0 if hi > lo else 0.5)
    edges = np.arange(start, end + size, size)
    top = 0.0
    for i, f in enumerate(figs):
        per_axis: dict[str, list[np.ndarray]] = {}
        for t in f.data:
            if t.type != "histogram":
                continue
            d = _numeric(getattr(t, _hist_data_letter(t)))
            bins = {"start": start, "end": end, "size": size}
            t.update(xbins=bins) if _hist_data_letter(t) == "x" else t.update(ybins=bins)
            counts = np.histogram(d, bins=edges)[0].astype(float)
            norm = (t.histnorm or "")
            if norm in ("probability", "percent") and d.size:
                counts = counts / d.size * (100.0 if norm == "percent" else 1.0)
            elif norm == "probability density" and d.size:
                counts = counts / (d.size * size)
            elif norm == "density":
                counts = counts / size
            count_letter = _value_letter(t)
            ref = (getattr(t, f"{count_letter}axis", None) or count_letter)
            per_axis.setdefault(f"{count_letter}axis{ref[1:]}", []).append(counts)
            data_letter = _hist_data_letter(t)
            data_ref = getattr(t, f"{data_letter}axis", None) or data_letter
            f.layout[f"{data_letter}axis{data_ref[1:]}"].update(range=[start, end], autorange=False)
        for key, cs in per_axis.items():
            stacked = (f.layout.barmode or "") == "stack"
            top = max(top, float(np.sum(cs, axis=0).max() if stacked else max(c.max() for c in cs)))
            done.add((i, key))
    for i, key in done:
        ax = figs[i].layout[key]
        ax.update(range=[0, top * (1 + PAD)] if top > 0 else [0, 1], autorange=False)
        if ax.tickformat == "d":  # an integer count axis: about 6 round ticks from the real tallest bin
            ax.update(tickmode="linear", tick0=0, dtick=nice_step(top, 6))
    return done


def nice_step(span: float, max_ticks: int = 6) -> int:
    """An integer tick step of 1, 2 or 5 x 10^k giving at most ``max_ticks`` steps over ``span``."""
    step = integer_dtick(span, max_ticks)
    base = 10 ** max(0, len(str(step)) - 1)
    return next(m * base for m in (1, 2, 5, 10) if m * base >= step)


def fix_histograms(fig: go.Figure) -> go.Figure:
    """Explicit bins for the figure's histograms, and its count axis sized (and ticked) from the tallest bin those
    bins give, so an integer count axis never gets a tick per unit on a tall histogram."""
    _share_histograms([fig])
    return fig


def _axis_range(figs: Sequence[go.Figure], key: str) -> tuple[float, float, bool] | None:
    """(lo, hi, from_zero) over the figures' data on axis ``key``; None for a categorical or empty axis."""
    letter = key[0]
    vals: list[np.ndarray] = []
    from_zero = False
    for f in figs:
        ax = f.layout[key]
        if ax.type == "category" or ax.tickmode == "array" and ax.ticktext:
            return None
        if ax.range is not None and ax.autorange is not True:
            r = _numeric(ax.range)
            if r is None:
                return None
            vals.append(10 ** r if ax.type == "log" else r)
        for t in _traces_on(f, key):
            if t.type in ("histogram", "sankey", "table", "indicator", "pie"):
                continue
            raw = getattr(t, letter, None)
            if raw is None and t.type in ("heatmap", "contour") and t.z is not None:
                z = np.asarray(t.z, dtype=object)
                raw = np.arange(z.shape[0] if letter == "y" else (z.shape[1] if z.ndim > 1 else z.shape[0]))
            elif raw is None:
                continue
            v = _numeric(raw)
            if v is None:
                return None
            if t.type == "bar" and _value_letter(t) == letter:
                from_zero = True
                base = _numeric(getattr(t, "base", None))
                v = np.concatenate([v, base if base is not None and base.size else np.zeros(1)])
            if t.type in ("heatmap", "contour") and v.size > 1:
                step = float(np.median(np.diff(np.sort(v)))) / 2
                v = np.concatenate([v - step, v + step])  # cells extend half a step beyond their centres
            vals.append(v)
    allv = np.concatenate(vals) if vals else np.zeros(0)
    if allv.size == 0:
        return None
    return float(allv.min()), float(allv.max()), from_zero


def _share_axis(figs: Sequence[go.Figure], key: str) -> None:
    got = _axis_range(figs, key)
    if got is None:
        return
    lo, hi, from_zero = got
    axes = [f.layout[key] for f in figs]
    log = any(ax.type == "log" for ax in axes)
    reversed_ = any(ax.autorange == "reversed" for ax in axes)
    if log:
        if hi <= 0:
            return
        lo = max(lo, hi * 1e-12) if lo <= 0 else lo
        a, b = math.log10(lo), math.log10(hi)
        pad = max(b - a, 1.0) * PAD
        rng = [a - pad, b + pad]
    else:
        span = hi - lo if hi > lo else max(abs(hi), 1.0)
        pad = span * PAD
        rng = [lo if (from_zero and lo == 0) else lo - pad, hi if (from_zero and hi == 0) else hi + pad]
    if not log and lo >= 0 and any(ax.rangemode in ("tozero", "nonnegative") for ax in axes):
        rng[0] = 0.0  # the axis asked to start at zero: no padding below it
    if reversed_:
        rng = rng[::-1]
    for ax in axes:
        ax.update(range=rng, autorange=False)


def _colour_traces(fig: go.Figure) -> list:
    """Traces coloured by value (heatmaps, contours, markers with a colour scale), in order."""
    out = []
    for t in fig.data:
        if t.type in ("heatmap", "contour", "histogram2d") or getattr(getattr(t, "marker", None), "colorscale", None) is not None and \
                _numeric(t.marker.color) is not None and np.asarray(t.marker.color, dtype=object).size > 1:
            out.append(t)
    return out


def _colour_range(traces: Iterable) -> tuple[float, float, float | None] | None:
    lo, hi, mid = math.inf, -math.inf, None
    for t in traces:
        is_marker = t.type not in ("heatmap", "contour", "histogram2d")
        src = t.marker if is_marker else t
        v = _numeric(src.color if is_marker else t.z)
        if v is None:
            return None
        explicit_lo = src.cmin if is_marker else t.zmin
        explicit_hi = src.cmax if is_marker else t.zmax
        m = src.cmid if is_marker else t.zmid
        mid = m if m is not None else mid
        lo = min(lo, explicit_lo if explicit_lo is not None else (v.min() if v.size else lo))
        hi = max(hi, explicit_hi if explicit_hi is not None else (v.max() if v.size else hi))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return float(lo), float(hi), mid


def _share_colours(figs: Sequence[go.Figure]) -> None:
    groups = [_colour_traces(f) for f in figs]
    if len({len(g) for g in groups}) != 1:
        return
    for traces in zip(*groups, strict=True):
        got = _colour_range(traces)
        if got is None:
            continue
        lo, hi, mid = got
        if mid is not None:
            m = max(abs(lo - mid), abs(hi - mid)) or 1.0
            lo, hi = mid - m, mid + m
        if hi <= lo:
            hi = lo + 1.0
        for t in traces:
            if t.type in ("heatmap", "contour", "histogram2d"):
                t.update(zmin=lo, zmax=hi, zauto=False)
                if mid is not None:
                    t.update(zmid=None)  # zmid would override the shared zmin/zmax
            else:
                t.marker.update(cmin=lo, cmax=hi, cauto=False)
                if mid is not None:
                    t.marker.update(cmid=None)
    for key in ("coloraxis",):
        axes = [f.layout[key] for f in figs if f.layout[key] is not None and f.layout[key].colorscale is not None]
        if len(axes) != len(figs):
            continue
        vals = [_numeric(t.z if t.type in ("heatmap", "contour") else t.marker.color)
                for f in figs for t in f.data if getattr(t, "coloraxis", None) == key]
        vals = [v for v in vals if v is not None and v.size]
        if vals:
            allv = np.concatenate(vals)
            for ax in axes:
                ax.update(cmin=float(allv.min()), cmax=float(allv.max()))


def share_scales(figs: Sequence[go.Figure]) -> Sequence[go.Figure]:
    """Give figures of the same view (A, B, ...) the same numeric axis ranges and colour scales, in place."""
    figs = [f for f in figs if f is not None]
    if len(figs) < 2:
        return figs
    count_axes = _share_histograms(figs)
    keys = set.intersection(*[_axis_keys(f) for f in figs])
    for key in sorted(keys):
        if any((i, key) in count_axes for i in range(len(figs))):
            continue
        _share_axis(figs, key)
    _share_colours(figs)
    return figs


def shared(figs: Sequence[go.Figure], key: str) -> bool:
    """True when every figure has the same range on layout axis ``key`` (for tests)."""
    ranges = {tuple(np.round(np.asarray(f.layout[key].range, dtype=float), 9)) if f.layout[key].range is not None
              else None for f in figs}
    return len(ranges) == 1 and None not in ranges
