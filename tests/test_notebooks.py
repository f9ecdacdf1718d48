"""Every notebook in notebooks/ runs top to bottom (found by glob, never a list), and the
notebooks kept in the repository carry no outputs.

Executing them takes minutes (they load SmolLM2 and train small models), so the execution
tests are marked slow. The kernel is this interpreter's ipykernel, registered in a temporary
Jupyter path so that the notebooks run with the same environment as the tests.

Plotly figures render outside JupyterLab too: every notebook calls
:func:`interp.viz.setup_notebook` in its first code cell, so each figure output carries
``text/html`` with plotly.js inline (no CDN) next to plotly's own mimetype; checked on the
renderer directly and on every figure of every executed notebook.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "interp-tests-python3"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _ids(paths):
    return [p.stem for p in paths]


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stripped(path):
    """No outputs or execution counts in the working copy, nor in the committed version."""
    versions = {"working copy": path.read_text()}
    rel = path.relative_to(ROOT).as_posix()
    shown = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True,
                           text=True)
    if shown.returncode == 0:
        versions["HEAD"] = shown.stdout
    for where, text in versions.items():
        nb = nbformat.reads(text, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{where}: cell {i} of {path.name} has outputs"
                assert cell.execution_count is None, f"{where}: cell {i} has a count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_sets_up_offline_figures(path):
    """The first code cell calls ``setup_notebook()`` (the one place the display is set up)."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "setup_notebook()" in first.source, f"{path.name}: call setup_notebook() first"


def _fallback_problem(html: str) -> str | None:
    """Why a figure's ``text/html`` would not render offline outside JupyterLab, or None."""
    from interp.viz import has_cdn_script

    if 'class="plotly-graph-div"' not in html or "Plotly.newPlot" not in html:
        return "no figure div / Plotly.newPlot call"
    if "plotly.js v" not in html or "window.Plotly" not in html:
        return "plotly.js is not inline"
    if has_cdn_script(html):                     # <script src="https://cdn.plot.ly/...">
        return "loads a script from the network"
    return None


def test_setup_notebook_renderer():
    """After ``setup_notebook()`` a figure's bundle has plotly's mimetype (JupyterLab, VS
    Code) and a self-contained ``text/html`` (classic notebook, nbviewer, offline)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    from interp.viz import setup_notebook

    saved = pio.renderers.default
    try:
        assert setup_notebook() == setup_notebook() == pio.renderers.default
        fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]), layout=dict(height=300))
        bundle = fig._repr_mimebundle_()
    finally:
        pio.renderers.default = saved
    assert set(bundle) >= {PLOTLY_MIME, "text/html"}
    assert bundle[PLOTLY_MIME]["data"][0]["y"] == [3, 4]
    html = bundle["text/html"]
    assert _fallback_problem(html) is None, _fallback_problem(html)
    assert html.index("window.Plotly") < html.index("Plotly.newPlot")   # library first
    assert "height:300px" in html.replace(" ", "")


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A Jupyter data dir holding a kernelspec that runs this very interpreter."""
    from ipykernel.kernelspec import write_kernel_spec

    data = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(data / "kernels" / KERNEL)
    spec = json.loads((data / "kernels" / KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    # The kernel inherits the environment. One OpenMP thread per kernel: on a shared CPU
    # box, torch's default thread count can make each decode step ~40x slower (spin-waits).
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "OMP_NUM_THREADS")}
    old = saved["JUPYTER_PATH"]
    os.environ["JUPYTER_PATH"] = str(data) + (os.pathsep + old if old else "")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield KERNEL
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, kernel_env):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel_env, timeout=900,
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed:\n{exc}")
    figures = 0
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{path.name}: cell {i} raised"
            # tqdm in a kernel without ipywidgets warns on every first import
            assert "IProgress not found" not in str(out.get("text", "")), \
                f"{path.name}: cell {i}: tqdm's IProgress warning (install ipywidgets)"
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                figures += 1
                problem = _fallback_problem(data.get("text/html", ""))
                assert problem is None, f"{path.name}: cell {i}: figure HTML: {problem}"
    # every notebook shows at least one figure; the offline HTML fallback is checked on them
    assert figures, f"{path.name}: no plotly figure output"
