"""Every notebook in notebooks/ runs top to bottom (found by glob, never a list), and the
notebooks kept in the repository carry no outputs.

Executing them takes minutes (they load SmolLM2 and train small models), so the execution
tests are marked slow. The kernel is this interpreter's ipykernel, registered in a temporary
Jupyter path so that the notebooks run with the same environment as the tests.
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
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{path.name}: cell {i} raised"
