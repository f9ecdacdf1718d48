"""The README's "Using it" snippet runs as pasted (and prints what its comments say)."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_snippet_runs_as_pasted():
    text = README.read_text()
    block = re.search(r"<!-- readme-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README.md lost its <!-- readme-snippet --> block"
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(block.group(1), "README.md", "exec"), scope)
    printed = out.getvalue().splitlines()
    assert re.fullmatch(r"\[\(\d+, \d+\)(, \(\d+, \d+\))*\]", printed[0]), printed[0]
    assert printed[1] == f"torch.Size([1, {scope['tokens'].shape[1]}, 49152])"
