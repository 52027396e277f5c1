"""Figures that hold side by side: every report figure, in compare mode on the demo zoo and on a 30-layer tiny pair,
passes a layout check. A and B figures of one view share their axis ranges and colour scales, titles and axis
titles fit the room plotly gives them (wrapped to a half-width column, top margin grown for each title line), no
figure uses WebGL (Scattergl: a page holds many and browsers allow few contexts), and each exported PNG has content.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from components.charts import pairs, style
from tests.app.test_chart_style import cli_figures, deep_report_figures, tiny_prompts  # noqa: F401  (fixtures)
from tests.paths import REPO

LINE_PX = 22  # one title line at plotly's default 17 px title font, with its spacing


@pytest.fixture(scope="module")
def deep_pair_figures():
    """Lens and flow report figures of A vs B, both 30-layer tiny models (different random weights)."""
    return deep_report_figures(compare=True)


def _pairs(figures: dict[str, go.Figure]) -> list[tuple[str, go.Figure, go.Figure]]:
    out = []
    for key, fig in figures.items():
        if key.endswith("_A") and key[:-1] + "B" in figures:
            out.append((key[:-2], fig, figures[key[:-1] + "B"]))
        elif not key.endswith(("_A", "_B")) and f"{key}_B" in figures and f"{key}_A" not in figures:
            out.append((key, fig, figures[f"{key}_B"]))  # steering: A's view keeps its name, B's gets "_B"
    return out


def _numeric_axes(fig: go.Figure) -> list[str]:
    """Visible axes that carry numbers: numeric data of the traces on them, or a histogram (its counts)."""
    keys = []
    for key in fig.layout.to_plotly_json():
        if re.fullmatch(r"[xy]axis\d*", key) and fig.layout[key].type != "category" \
                and fig.layout[key].visible is not False:
            on = [t for t in fig.data if (getattr(t, f"{key[0]}axis", None) or key[0]) == key[0] + key[5:]]
            if any(t.type == "histogram" for t in on):
                keys.append(key)
                continue
            data = [getattr(t, key[0], None) for t in on if t.type not in ("table", "sankey")]
            data = [d for d in data if d is not None]
            if data and all(pairs._numeric(d) is not None and pairs._numeric(d).size for d in data):
                keys.append(key)
    return keys


def _colour_ranges(fig: go.Figure) -> list[tuple]:
    out = []
    for t in pairs._colour_traces(fig):
        if t.type in ("heatmap", "contour", "histogram2d"):
            out.append((t.zmin, t.zmax))
        else:
            out.append((t.marker.cmin, t.marker.cmax))
    return out


def pair_problems(figures: dict[str, go.Figure]) -> list[str]:
    """A/B pairs whose numeric axes or colour scales differ."""
    bad = []
    for view, a, b in _pairs(figures):
        for key in sorted(set(_numeric_axes(a)) & set(_numeric_axes(b))):
            if not pairs.shared([a, b], key):
                bad.append(f"{view}.{key}: A {a.layout[key].range} vs B {b.layout[key].range}")
        ca, cb = _colour_ranges(a), _colour_ranges(b)
        if ca != cb or any(None in r for r in ca):
            bad.append(f"{view}: colour ranges A {ca} vs B {cb}")
    return bad


def title_problems(figures: dict[str, go.Figure]) -> list[str]:
    """Titles wider than a half column, or with more lines than the top margin holds; axis titles too wide."""
    bad = []
    for key, fig in figures.items():
        text = fig.layout.title.text or ""
        lines = text.split("<br>") if text else []
        if any(len(re.sub(r"<[^>]+>", "", x)) > style.TITLE_CHARS * (style.SUP_WIDTH if x.startswith("<sup>") else 1)
               for x in lines):
            bad.append(f"{key}: title line over {style.TITLE_CHARS} chars: {text!r}")
        top = fig.layout.margin.t if fig.layout.margin.t is not None else 100
        above = [a for a in fig.layout.annotations if a.yref == "paper" and a.y is not None and a.y >= 1 and a.text]
        sub_lines = max((a.text.count("<br>") + 1 for a in above), default=0)  # subplot titles under the title
        if lines and top < 18 + LINE_PX * len(lines) + 20 * sub_lines:
            bad.append(f"{key}: {len(lines)} title lines in a {top} px top margin")
        leg = fig.layout.legend
        if leg.orientation == "h" and leg.y is not None and leg.y >= 1 and fig.layout.showlegend is not False:
            bad.append(f"{key}: a horizontal legend above the plot, under the title")
        for name in fig.layout.to_plotly_json():
            if re.fullmatch(r"[xy]axis\d*", name):
                ax = fig.layout[name]
                t = ax.title.text if ax.title is not None else None
                if t and any(len(re.sub(r"<[^>]+>", "", x)) > style.AXIS_TITLE_CHARS + 12 for x in t.split("<br>")):
                    bad.append(f"{key}.{name}: axis title line too wide: {t!r}")
                if ax.automargin is not True and ax.visible is not False:
                    bad.append(f"{key}.{name}: no automargin (labels may be clipped in the export)")
    return bad


def webgl(figures: dict[str, go.Figure]) -> list[str]:
    """Figures with WebGL traces."""
    return [f"{k}: {t.type}" for k, f in figures.items() for t in f.data if t.type.endswith("gl")]


def test_every_compare_pair_shares_its_ranges_and_colour_scales(cli_figures, deep_pair_figures):  # noqa: F811
    figures = {**cli_figures, **deep_pair_figures}
    assert len(_pairs(figures)) >= 15  # every page's A/B views (lens, flow, neurons, OOD, steering monitor)
    assert pair_problems(figures) == []


def test_titles_fit_a_half_column_and_axes_push_their_margins(cli_figures, deep_pair_figures):  # noqa: F811
    assert title_problems({**cli_figures, **deep_pair_figures}) == []


def test_no_figure_uses_webgl(cli_figures, deep_pair_figures):  # noqa: F811
    assert webgl({**cli_figures, **deep_pair_figures}) == []


def test_the_checks_can_fail():
    a = go.Figure(go.Scatter(x=[0, 1, 2], y=[0, 1, 5]))
    b = go.Figure(go.Scattergl(x=[0, 1, 2], y=[0, 9, 2]))
    a.update_yaxes(range=[0, 5])
    b.update_yaxes(range=[0, 9])
    assert pair_problems({"v_A": a, "v_B": b})
    assert webgl({"v_B": b}) == ["v_B: scattergl"]
    long = go.Figure(layout={"title": "x" * 80, "margin": {"t": 30}})
    assert len(title_problems({"t": long})) == 2  # too wide and no room


def test_share_scales_unions_ranges_colours_and_histogram_bins():
    a = go.Figure([go.Scatter(x=[0, 1, 2], y=[0.0, 1.0, 2.0]), go.Heatmap(z=[[0, 1], [2, 3]])])
    b = go.Figure([go.Scatter(x=[0, 1, 2], y=[5.0, 6.0, 10.0]), go.Heatmap(z=[[0, 8], [1, 1]])])
    pairs.share_scales([a, b])
    assert a.layout.yaxis.range == b.layout.yaxis.range
    assert a.layout.yaxis.range[0] < 0 < 10 < a.layout.yaxis.range[1]
    assert (a.data[1].zmin, a.data[1].zmax) == (b.data[1].zmin, b.data[1].zmax) == (0, 8)
    # diverging: symmetric around the midpoint, over both figures
    c = go.Figure(go.Heatmap(z=[[-1, 2]], zmid=0, colorscale="RdBu"))
    d = go.Figure(go.Heatmap(z=[[-5, 1]], zmid=0, colorscale="RdBu"))
    pairs.share_scales([c, d])
    assert (c.data[0].zmin, c.data[0].zmax) == (d.data[0].zmin, d.data[0].zmax) == (-5, 5)
    # histograms: same bins and the same count axis (from the tallest bin of either)
    h1 = go.Figure(go.Histogram(x=[0, 0, 0, 1]))
    h2 = go.Figure(go.Histogram(x=[5, 6, 7, 8, 9, 10]))
    pairs.share_scales([h1, h2])
    assert h1.data[0].xbins == h2.data[0].xbins and h1.layout.yaxis.range == h2.layout.yaxis.range
    assert h1.layout.yaxis.range[1] >= 3 and h1.layout.xaxis.range == h2.layout.xaxis.range
    # bars start at zero; categorical axes are left alone
    e = go.Figure(go.Bar(x=["a", "b"], y=[2, 3]))
    f = go.Figure(go.Bar(x=["a", "c"], y=[1, 7]))
    pairs.share_scales([e, f])
    assert e.layout.yaxis.range[0] == 0 and e.layout.yaxis.range == f.layout.yaxis.range
    assert e.layout.xaxis.range is None


def test_a_log_and_reversed_axis_stays_log_and_reversed():
    a = go.Figure(go.Scatter(x=[0, 1], y=[1, 100]))
    b = go.Figure(go.Scatter(x=[0, 1], y=[1, 1000]))
    for f in (a, b):
        f.update_yaxes(type="log", autorange="reversed")
    pairs.share_scales([a, b])
    lo, hi = a.layout.yaxis.range
    assert lo > hi and hi < 0 < 3 < lo  # reversed, in decades: 10**3 inside
    assert a.layout.yaxis.range == b.layout.yaxis.range


def ink_problems(figures: dict[str, go.Figure]) -> list[str]:
    """Figures whose exported PNG (kaleido, scale 1) is near-blank or near-solid, or has almost no shades."""
    from io import BytesIO

    from PIL import Image

    from components import exporting

    bad = []
    for name, fig in figures.items():
        png = exporting.figure_bytes(fig, "png", scale=1)
        img = np.asarray(Image.open(BytesIO(png)).convert("L"), dtype=float)
        ink = (img < 200).mean()  # share of pixels that are not near-white
        if not 0.005 < ink < 0.9 or len(np.unique(img)) <= 16:
            bad.append(f"{name}: {ink:.3f} drawn, {len(np.unique(img))} shades")
    return bad


def test_every_exported_bundle_png_has_content(cli_figures, deep_pair_figures):  # noqa: F811
    # every figure of the six methods' bundles (demo pair, compare mode) and of the 30-layer pair
    assert ink_problems({**cli_figures, **deep_pair_figures}) == []
    blank = go.Figure(layout={"width": 300, "height": 200, "xaxis": {"visible": False}, "yaxis": {"visible": False}})
    assert ink_problems({"blank": blank})  # the check can fail


def test_no_colour_on_screen_is_taken_for_a_streamlit_theme_placeholder(cli_figures):  # noqa: F811
    import json

    placeholder = re.compile(r'"#0000[0-9a-fA-F]{2}"')
    raw = [k for k, f in cli_figures.items() if placeholder.search(f.to_json())]
    assert raw, "the demo figures use Magma, whose first stop #000004 is a placeholder code"
    for key in raw:
        assert not placeholder.search(json.dumps(style.screen_safe(cli_figures[key]))), key


def test_one_colour_means_promotes_on_every_page():
    from components.charts import flow, shift, steering

    assert flow.POS.format(a=1) == f"rgba({style.PROMOTES_RGB},1)"  # pushes toward the target
    assert shift.SHIFT_SCALE == style.DIVERGING == "RdBu"  # plotly's RdBu: negative red, positive blue
    tiles = steering.generations_figure.__doc__
    assert "blue = steering made the token more likely" in tiles and "DIVERGING" in Path(steering.__file__).read_text()


@pytest.mark.parametrize("n_layers, step, rows", [(4, 0, [0, 1, 2, 3, 4]), (80, 0, list(range(0, 81, 3)) + [80]),
                                                  (80, 10, list(range(0, 81, 10))), (30, 7, [0, 7, 14, 21, 28, 30])])
def test_deep_heatmaps_draw_a_row_every_k_layers_and_always_the_last(n_layers, step, rows):
    assert style.layer_rows(n_layers, step) == rows
    assert len(style.layer_rows(n_layers, 0)) <= style.MAX_LAYER_ROWS + 1


def test_an_80_layer_lens_heatmap_is_subsampled_and_labels_the_last_layer():
    from analysis.lens import lens_trace
    from analysis.models.tiny import tiny_model
    from components.charts.lens import lens_heatmap

    lm = tiny_model("llama", layers=80)
    tr = lens_trace(lm, ["5 17 3 9"], k=3)
    fig = lens_heatmap(tr, 0)
    drawn = list(fig.data[0].y)
    assert drawn[0] == 0 and drawn[-1] == 80 and len(drawn) <= style.MAX_LAYER_ROWS + 1
    assert np.asarray(fig.data[0].z).shape[0] == len(drawn)
    assert 80 in fig.layout.yaxis.tickvals and "a row every 3 layers of 81" in fig.layout.title.text
    assert fig.layout.height <= 1000


def test_report_figures_carry_their_own_template_even_under_streamlits_default():
    import plotly.io as pio
    import streamlit  # noqa: F401  (importing it makes its placeholder template the default)

    from components.reports import Report

    assert pio.templates.default == "streamlit"
    rep = Report()
    rep.add("f", go.Figure(go.Scatter(y=[1, 2])))
    fig = rep.figures["f"]
    assert fig.layout.template == style.TEMPLATE and fig.layout.template.layout.colorway[1] == "#f58518"
    assert not re.search(r"#0000[0-9a-fA-F]{2}\b", str(style.screen_safe(fig)))


def test_pages_draw_figures_only_through_page_kit():

    root = REPO
    bare = [f"{p.relative_to(root)}:{i}" for folder in ("pages", "components") for p in (root / folder).rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if "st.plotly_chart(" in line and p.name != "page_kit.py"]
    assert bare == [], "use page_kit.plot (theme=None, screen_safe): " + ", ".join(bare)
    gl = [str(p.relative_to(root)) for p in (root / "components").rglob("*.py") if "go.Scattergl(" in p.read_text()
          and p.name != "style.py"]
    assert gl == []


def test_a_tall_histograms_integer_count_axis_ticks_from_its_real_tallest_bin():
    from components.reports import Report

    fig = go.Figure(go.Histogram(x=[0.0] * 48 + [1.0] * 3))
    style.integer_axis(fig, "y", span=3)  # an estimate far below the real tallest bin (48)
    rep = Report()
    rep.add("h", fig)
    ax = rep.figures["h"].layout.yaxis
    assert ax.range[1] >= 48 and ax.dtick == pairs.nice_step(48) == 10
    assert [pairs.nice_step(n) for n in (3, 7, 13, 48, 960)] == [1, 2, 5, 10, 200]


def test_ood_layer_ticks_stay_readable_at_thirty_layers():
    from components.charts.ood import layer_ticks

    assert layer_ticks(range(5)) == [0, 1, 2, 3, 4]
    ticks = layer_ticks(range(31))
    assert ticks[0] == 0 and ticks[-1] == 30 and len(ticks) <= 13


def test_a_prompt_in_a_title_stays_on_one_line():
    from components.charts.text import one_line

    assert one_line("User: hi\nAssistant: <b>") == "User: hi ↵ Assistant: &lt;b&gt;"
