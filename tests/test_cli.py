from __future__ import annotations

import subprocess
import sys

import pytest

from interp.cli import main


def test_models_command_lists_registry(capsys):
    assert main(["models", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "name,kind,params,cached,copies,disk_mb,description"
    assert "smollm2-135m,pretrained,134515008" in out and "minilm-l6" in out
    # the Qwen GGUFs store lm_head apart: HF unties it, so these are not the upstream 494M/1.54B
    assert "qwen2.5-coder-0.5b,pretrained,630167424" in out
    assert "qwen2.5-coder-1.5b,pretrained,1777088000" in out


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


def test_probe_induction_prints_top_heads_first(smollm2, capsys):
    assert main(["probe", "induction", "--batch", "2", "--format", "csv", "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("layer,head,induction")
    scores = [float(line.split(",")[2]) for line in lines[1:]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert lines[1].startswith("18,6,")                  # SmolLM2's top induction head


def test_probe_errors_exit_2(capsys, tmp_path):
    assert main(["probe", "induction", "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["probe", "induction", "--text", str(tmp_path / "missing.txt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_probe_on_text_file(tmp_path, capsys, smollm2):
    text = tmp_path / "t.txt"
    text.write_text("One two three four five. One two three four five.")
    out = tmp_path / "scores.csv"
    assert main(["probe", "locality", "--text", str(text), "--out", str(out), "--format",
                 "csv"]) == 0
    import pandas as pd

    df = pd.read_csv(out)
    assert set(df.columns) >= {"layer", "head", "layout", "mass_inside"}
    assert len(df) == 30 * 9 * len(df.layout.unique())
