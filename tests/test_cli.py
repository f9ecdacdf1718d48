from __future__ import annotations

import subprocess
import sys

import pytest

from interp.cli import main


def test_models_command_lists_registry(capsys):
    assert main(["models", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "name,kind,params,cached,description"
    assert "smollm2-135m,pretrained,134515008" in out and "minilm-l6" in out


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "interp.cli", "--help"], capture_output=True,
                         text=True).stdout
    from interp.cli import _COMMANDS

    for name in _COMMANDS:
        assert name in out


def test_unknown_command_exits_nonzero():
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2
