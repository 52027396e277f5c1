"""docs/notebook.ipynb, executed headless in a fresh kernel (nbclient): every cell runs without an error, every
figure cell draws a plotly figure with data, and the six methods run on the demo models and on the real model."""
from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from analysis.models.real import real_model_dir
from tests.paths import REPO

pytestmark = [pytest.mark.slow, pytest.mark.real,
              pytest.mark.skipif(not (real_model_dir() / "config.json").is_file(),
                                 reason=f"the real model is not converted at {real_model_dir()} (run make setup)")]
NOTEBOOK = REPO / "docs" / "notebook.ipynb"
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def executed():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    return nb


def test_the_notebook_runs_every_method_on_the_demo_and_the_real_model(executed):
    sources = "\n".join(c.source for c in executed.cells if c.cell_type == "code")
    for method in ("lens", "flow", "steer", "neurons", "shift", "ood"):
        assert f"ls.{method}(a" in sources and f"ls.{method}(real" in sources, method
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors[0]["evalue"] if errors else ""


def test_every_figure_cell_draws_a_figure_with_data(executed):
    figure_cells = [c for c in executed.cells if c.cell_type == "code" and ".figures[" in c.source.splitlines()[-1]]
    assert len(figure_cells) >= 10
    for cell in figure_cells:
        shown = [o["data"][PLOTLY] for o in cell.outputs if o.output_type in ("execute_result", "display_data")
                 and PLOTLY in o.get("data", {})]
        assert shown, cell.source
        fig = shown[0] if isinstance(shown[0], dict) else json.loads(shown[0])
        assert fig["data"] and any(len(t.get("x") or t.get("z") or t.get("y") or t.get("values") or []) for t in
                                   fig["data"]), cell.source


def _result(cell) -> dict:
    return next(o["data"] for o in cell.outputs if o.output_type == "execute_result")


def test_the_progress_bars_do_not_flood_the_cells(executed):
    for cell in executed.cells:
        streams = [o for o in cell.get("outputs", []) if o.output_type == "stream"]
        assert len(streams) <= 60, (len(streams), cell.source)


def test_the_results_show_their_summary_and_the_tables_are_frames(executed):
    by_source = {c.source.splitlines()[-1]: c for c in executed.cells if c.cell_type == "code"}
    summary = _result(by_source["lens"])
    assert "text/html" in summary and "heatmap_A" in summary["text/html"]
    frame = _result(by_source['lens.tables["position_A"].head()'])
    assert "text/html" in frame and "<table" in frame["text/html"]
