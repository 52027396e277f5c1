"""One chart style (components/charts/style.py) on every page's figures: axes of layers, blocks, heads, positions,
ranks, counts and prompt numbers show integer ticks only; axes that show neuron ids are categorical.

Lens and flow run on a 30-layer tiny model (where plotly's automatic ticks fall on 0.5 steps); every method runs
through its command line on the demo zoo with the tiny built-in sets of tests/cli/test_cli.py, A and B loaded, with the
report's figures captured instead of written.
"""
from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import pytest

from components.charts import style
from components.methods import METHODS
from tests.cli.test_cli import BASE, TUNED, tiny_prompts  # noqa: F401  (fixture)

INTEGER_TITLE = re.compile(r"\b(layers?|blocks?|heads?|positions?|ranks?|counts?|prompts?)\b|number of", re.I)
VALUE_AXIS = re.compile(r"units\)|\(logits\)")  # e.g. 'h_3[last prompt token] · v̂_3 (residual units)': a value
NEURON_ID = re.compile(r"^L\d+\.N\d+$")
CLI_ARGS = {
    "lens": ["--model-b", TUNED, "--prompts", "facts"],
    "flow": ["--model-b", TUNED],
    "shift": ["--model-b", TUNED],
    "ood": ["--model-b", TUNED],
    "neurons": ["--model-b", TUNED, "--n-random", "2", "--random-sets", "1"],
    "steer": ["--model-b", TUNED, "--flag-tokens", "4", "--new-tokens", "4"],
}


def _axes(fig: go.Figure) -> dict:
    """Every axis of the figure, by layout name: those the layout sets and those only the traces refer to."""
    layout = fig.layout.to_plotly_json()
    axes = {k: v for k, v in layout.items() if re.fullmatch(r"[xy]axis\d*", k)}
    for tr in fig.data:
        for letter in "xy":
            ref = getattr(tr, f"{letter}axis", None) or letter
            axes.setdefault(f"{letter}axis{ref[1:]}", {})
    return axes


def _title(ax: dict) -> str:
    t = ax.get("title")
    return (t.get("text") or "") if isinstance(t, dict) else (t or "")


def _is_int(v) -> bool:
    try:
        return float(v) == int(float(v))
    except (TypeError, ValueError):
        return False


def integer_only(ax: dict) -> bool:
    """True when the axis can show no fractional tick: categorical, integer tick values, or an integer dtick >= 1
    from an integer tick0 (tickformat 'd' alone is not enough: plotly's own 0.5 steps would then read 0, 0, 1, 1)."""
    if ax.get("type") == "category":
        return True
    if ax.get("tickmode") == "array":
        return all(_is_int(v) for v in ax.get("tickvals") or ()) and bool(ax.get("tickvals"))
    dtick = ax.get("dtick")
    return _is_int(dtick) and float(dtick) >= 1 and _is_int(ax.get("tick0", 0))


def _axis_data(fig: go.Figure, name: str) -> list:
    """Values drawn on layout axis ``name`` ('xaxis2' -> traces with xaxis 'x2')."""
    letter, ref = name[0], name[0] + name[5:]
    out: list = []
    for tr in fig.data:
        if (getattr(tr, f"{letter}axis", None) or letter) == ref and getattr(tr, letter, None) is not None:
            out += list(np.asarray(getattr(tr, letter), dtype=object).ravel())
    return out


def problems(figures: dict[str, go.Figure]) -> list[str]:
    bad = []
    for key, fig in figures.items():
        for name, ax in _axes(fig).items():
            if ax.get("visible") is False:
                continue
            title = _title(ax)
            if INTEGER_TITLE.search(title) and not VALUE_AXIS.search(title) and not integer_only(ax):
                bad.append(f"{key}.{name} '{title[:50]}': fractional ticks possible {ax.get('dtick'), ax.get('type')}")
            ids = [v for v in _axis_data(fig, name) if isinstance(v, str) and NEURON_ID.match(v)]
            if ids and ax.get("type") != "category":
                bad.append(f"{key}.{name} '{title[:50]}': neuron ids on a non-categorical axis")
    return bad


@pytest.fixture(scope="module")
def cli_figures(tiny_prompts, tmp_path_factory):  # noqa: F811
    """Every method's report figures from its command line, keyed 'method/figure'."""
    import logitscope.common as common
    from logitscope.cli import main

    got: dict[str, go.Figure] = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, m in METHODS.items():
            def record(out, report, *args, _name=name, **kwargs):
                got.update({f"{_name}/{k}": f for k, f in report.figures.items()})
                return out, []
            mp.setattr(common, "save_bundle", record)
            out = tmp_path_factory.mktemp(name)
            assert main([m.command, "--model", BASE, *CLI_ARGS[name], "--out", str(out), "--quiet"]) == 0, name
    return got


def deep_report_figures(compare: bool) -> dict[str, go.Figure]:
    """Lens and flow report figures on a 30-layer tiny model, keyed "lens-30/<name>" (``compare``: A vs B, another
    30-layer model with other random weights)."""
    from analysis.models.card import model_card
    from analysis.models.pair import ModelPair
    from analysis.models.tiny import tiny_model
    from analysis.prompts import load_builtin
    from logitscope.common import first_n

    a = tiny_model("gpt2", layers=30)
    b = tiny_model("gpt2", seed=1, layers=30) if compare else None
    models = ModelPair(a, model_card(a), b, model_card(b)) if b is not None else ModelPair(a, model_card(a))
    ps = first_n(load_builtin("facts"), 4)
    got: dict[str, go.Figure] = {}
    for name in ("lens", "flow"):
        m = METHODS[name]
        rep, _ = m.module.run(models, {"--prompts": ps}, m.settings())
        got.update({f"{name}-30/{k}": f for k, f in rep.figures.items()})
    return got


@pytest.fixture(scope="module")
def deep_figures():
    """Lens and flow report figures on a 30-layer tiny model (the depth where fractional layer ticks appeared)."""
    return deep_report_figures(compare=False)


def test_every_method_was_drawn(cli_figures, deep_figures):
    assert {k.split("/")[0] for k in cli_figures} == set(METHODS)
    assert {k.split("/")[0] for k in deep_figures} == {"lens-30", "flow-30"}


def test_integer_axes_and_categorical_ids_on_every_report_figure(cli_figures, deep_figures):
    bad = problems({**cli_figures, **deep_figures})
    assert not bad, "\n".join(bad)


def test_the_check_catches_fractional_ticks_and_numeric_ids():
    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[0.1, 0.2, 0.3]))
    fig.update_layout(xaxis_title="layer")
    assert problems({"f": fig})
    style.integer_axis(fig, "x")
    assert problems({"f": fig}) == []
    ids = go.Figure(go.Bar(x=["L0.N1", "L0.N2"], y=[1, 2]))
    assert problems({"ids": ids})
    assert problems({"ids": style.categorical_axis(ids, "x")}) == []


@pytest.mark.parametrize("span, dtick", [(0, 1), (3, 1), (12, 1), (13, 2), (30, 3), (100, 9)])
def test_integer_dtick_keeps_at_most_twelve_steps(span, dtick):
    assert style.integer_dtick(span) == dtick
    assert span / style.integer_dtick(span) <= style.MAX_TICKS


def test_style_helpers_set_the_documented_properties():
    fig = go.Figure(go.Scatter(x=[1, 10, 1000], y=[0, 30, 5]))
    style.log_integer_axis(fig, "x")
    style.integer_axis(fig, "y")
    ax = fig.layout
    assert ax.xaxis.type == "log" and ax.xaxis.dtick == 1 and ax.xaxis.tickformat == "d"
    assert ax.yaxis.tickformat == "d" and ax.yaxis.dtick == 3 and ax.yaxis.tick0 == 0
    assert style.count_span([1, 1, 1, 2]) >= 2 and style.count_span([]) == 0


@pytest.mark.parametrize("n_layers", [4, 12, 29, 30, 80])
def test_a_deep_lens_heatmap_fits_the_screen_and_always_labels_the_last_layer(n_layers):
    """At 30 layers the lens heatmap was 1,068 px tall (the last layer and the token axis never on one screen) and
    its ticks could stop short of L. Rows now thin to fit (min 16 px) and L is always a tick."""
    import plotly.graph_objects as go

    from components.charts.style import heatmap_height, layer_rows_axis

    fig = layer_rows_axis(go.Figure(go.Heatmap(z=np.zeros((n_layers + 1, 3)))), n_layers, max_ticks=20)
    ticks = list(fig.layout.yaxis.tickvals)
    assert ticks[0] == 0 and ticks[-1] == n_layers and all(float(t).is_integer() for t in ticks)
    assert len(ticks) <= 22 and all(b > a for a, b in zip(ticks, ticks[1:], strict=False))
    height = heatmap_height(n_layers + 1)
    assert height <= (800 if n_layers <= 30 else 16 * (n_layers + 1) + 200)
    assert height >= 16 * (n_layers + 1)  # every row keeps at least 16 px for its token text
