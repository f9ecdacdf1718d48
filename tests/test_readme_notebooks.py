"""The README's notebooks paragraph names commands that the dev extras install: every
``jupyter <subcommand>`` it quotes exists beside this interpreter and answers ``--help``, and
the extras that provide them (and ipywidgets, for tqdm's widgets) are in ``pyproject.toml``."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _notebook_paragraph() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("Notebooks in `notebooks/`")
    return text[start:text.index("\n\n", start)]


def _jupyter_commands() -> list[str]:
    return sorted(set(re.findall(r"`jupyter ([a-z][a-z-]*)", _notebook_paragraph())))


def test_readme_names_how_to_open_and_run_the_notebooks():
    commands = _jupyter_commands()
    assert "lab" in commands, "say how to open the notebooks"
    assert {"nbconvert", "execute"} & set(commands), "say how to run one without a browser"


@pytest.mark.parametrize("sub", _jupyter_commands())
def test_each_jupyter_command_of_the_readme_is_installed(sub):
    exe = Path(sys.executable).parent / f"jupyter-{sub}"
    assert exe.is_file(), f"`jupyter {sub}` is named in the README but not installed"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_dev_extras_install_what_the_notebooks_need():
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["dev"]
    names = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() for d in dev}
    assert {"jupyterlab", "ipywidgets", "ipykernel"} <= names, names
