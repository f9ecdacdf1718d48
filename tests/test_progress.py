"""Progress (:mod:`interp.progress`): bars and stage lines on a non-terminal are whole lines
that never share a line; probes and report writing show progress; ``--no-progress`` and
:func:`~interp.progress.settings` turn it off; notebooks without ipywidgets get no
"IProgress not found" warning."""
from __future__ import annotations

import io
import json
import sys
import time
import warnings
from dataclasses import dataclass

import pandas as pd
import pytest

from interp import progress
from interp.cli import main
from interp.experiments import RunContext, experiment, run_experiment

BAR_MARK = "%|"          # tqdm's bar text: "desc:  40%|####      | 2/5 [...]"


def _lines(text: str) -> list[str]:
    assert "\r" not in text, f"carriage return in non-terminal output: {text!r}"
    return [line for line in text.splitlines() if line.strip()]


def _no_mixed_line(lines: list[str], stage_mark: str) -> None:
    for line in lines:
        assert not (BAR_MARK in line and stage_mark in line), f"bar and stage share: {line!r}"


# -- the line stream ---------------------------------------------------------------------------

def test_line_stream_turns_redraws_into_lines_and_keeps_stage_lines_apart():
    from tqdm.std import tqdm

    buf = io.StringIO()
    out = progress.LineStream(buf, interval=0.0)
    bar = tqdm(total=4, desc="work", file=out, mininterval=0, ascii=True)
    for i in range(4):
        bar.update(1)
        if i == 1:
            progress.write("[stage] halfway", file=out, show=True)
    bar.close()
    out.write("done\n")
    lines = _lines(buf.getvalue())
    assert "[stage] halfway" in lines and lines[-1] == "done"
    assert any(line.startswith("work:") and "4/4" in line for line in lines)
    _no_mixed_line(lines, "[stage]")
    # a stage line after a partial status (what tqdm.write used to glue together)
    buf2 = io.StringIO()
    out2 = progress.LineStream(buf2, interval=1e9)
    out2.write("\rbar  10%|#         | 1/10")
    out2.write("interp: error: something\n")
    assert _lines(buf2.getvalue()) == ["bar  10%|#         | 1/10", "interp: error: something"]


def test_line_stream_throttles_a_fast_bar_but_keeps_its_final_state():
    from tqdm.std import tqdm

    buf = io.StringIO()
    out = progress.LineStream(buf, interval=3600)
    for _ in tqdm(range(500), desc="fast", file=out, mininterval=0, ascii=True):
        pass
    lines = _lines(buf.getvalue())
    assert len(lines) <= 3 and "500/500" in lines[-1], lines


def test_bar_on_a_non_terminal_writes_lines_and_settings_turn_it_off():
    buf = io.StringIO()
    for _ in progress.bar(range(3), desc="items", file=buf, show=True):
        pass
    progress.line_stream(buf).close_line()
    assert "3/3" in _lines(buf.getvalue())[-1]
    quiet = io.StringIO()
    with progress.settings(False):
        assert not progress.enabled()
        for _ in progress.bar(range(3), desc="items", file=quiet):
            pass
        progress.write("stage", file=quiet)
    assert progress.enabled() and quiet.getvalue() == ""


def test_stage_line_only_for_slow_blocks():
    quick, slow = io.StringIO(), io.StringIO()
    with progress.stage("loading quick", delay=0.5, show=True, file=quick):
        pass
    with progress.stage("loading slow", delay=0.05, show=True, file=slow):
        time.sleep(0.3)
    assert quick.getvalue() == ""
    lines = _lines(slow.getvalue())
    assert lines[0] == "loading slow ..." and lines[1].startswith("loading slow: done in ")


def test_notebook_without_ipywidgets_gets_a_text_bar_and_no_warning(monkeypatch):
    from tqdm.std import tqdm as std_tqdm

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(progress, "_has_ipywidgets", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # tqdm's TqdmWarning "IProgress not found"
        bar = progress.bar(range(2), desc="nb", show=True, file=io.StringIO())
        assert type(bar) is std_tqdm
        list(bar)


# -- where progress shows ----------------------------------------------------------------------

@pytest.fixture()
def no_delay(monkeypatch):
    monkeypatch.setattr(progress, "PROBE_DELAY", 0.0)


def _toy_folder(toy_induction_dir):
    return f"toy:{toy_induction_dir}"


def test_probe_shows_a_per_layer_bar_and_no_progress_hides_it(capsys, no_delay,
                                                              toy_induction_dir):
    model = _toy_folder(toy_induction_dir)
    assert main(["probe", "induction", "--model", model, "--top", "1", "--seg-len", "10"]) == 0
    captured = capsys.readouterr()
    lines = _lines(captured.err)
    layer_lines = [line for line in lines if line.startswith("induction probe:")]
    assert layer_lines and "2/2" in layer_lines[-1], captured.err
    assert any(line.startswith("copying scores:") for line in lines), captured.err
    assert "layer" in captured.out                   # the table still goes to stdout
    assert main(["probe", "induction", "--model", model, "--top", "1", "--seg-len", "10",
                 "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_report_writing_has_a_bar_over_its_items(monkeypatch):
    from interp.report import Report

    seen = []
    real = progress.bar

    def spy(*args, **kw):
        bar = real(*args, **kw)
        seen.append((kw.get("desc"), kw.get("total"), bar))
        return bar

    monkeypatch.setattr(progress, "bar", spy)
    rep = Report("r")
    for i in range(3):
        rep.add_table(f"t{i}", pd.DataFrame({"layer": [i]}), caption="a table")
    rep.to_html(progress=True)          # shown only after a second: silent here
    (desc, total, bar), = [s for s in seen if s[0] == "report"]
    assert total == 3 and bar.n == 3


@dataclass(frozen=True)
class _StagesConfig:
    n: int = 3


@experiment("test_progress_stages", _StagesConfig)
def _run_stages(cfg: _StagesConfig, ctx: RunContext) -> None:
    """Bars and stage lines interleaved (what the quickstart does)."""
    bar = ctx.progress(None, desc="stages", total=cfg.n)
    for i in range(cfg.n):
        bar.set_postfix_str(f"step {i}")
        ctx.log(f"step {i}")
        time.sleep(0.01)
        bar.update(1)
    bar.close()
    ctx.add_table("t", pd.DataFrame({"layer": [0]}), caption="one row")


def test_run_progress_and_stage_lines_never_share_a_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)
    out = run_experiment({"kind": "test_progress_stages"}, out_dir=tmp_path / "run",
                         progress=True)
    lines = _lines(capsys.readouterr().err)
    stage_lines = [line for line in lines if "s] step" in line]
    assert len(stage_lines) == 3, lines
    assert any(line.startswith("stages:") and BAR_MARK in line for line in lines), lines
    _no_mixed_line(lines, "s] step")
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    run_experiment({"kind": "test_progress_stages"}, out_dir=tmp_path / "quiet",
                   progress=False)
    assert capsys.readouterr().err == ""


def test_cli_stderr_is_a_line_stream_only_off_a_terminal(monkeypatch):
    import interp.cli as cli

    seen = {}

    class Tty(io.StringIO):
        def isatty(self):
            return True

    def run(args):
        seen["stderr"] = sys.stderr
        return 0

    monkeypatch.setitem(cli._COMMANDS, "zz-stderr", ("test command", lambda p: None, run))
    terminal = Tty()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["zz-stderr"]) == 0 and seen["stderr"] is terminal
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    assert main(["zz-stderr"]) == 0
    assert isinstance(seen["stderr"], progress.LineStream) and sys.stderr is pipe


# -- a real notebook kernel --------------------------------------------------------------------

def test_notebook_progress_shows_no_iprogress_warning(tmp_path):
    """A kernel runs a cell that imports interp's modules that use tqdm and draws a bar:
    no "IProgress not found" in any output."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from ipykernel.kernelspec import write_kernel_spec

    import os

    data = tmp_path / "jupyter"
    write_kernel_spec(data / "kernels" / "interp-progress-test")
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import interp.models.cache, interp.experiments\n"
        "from interp import progress\n"
        "for _ in progress.bar(range(3), desc='cells'):\n"
        "    pass\n"
        "from tqdm.auto import tqdm\n"
        "for _ in tqdm(range(2)):\n"
        "    pass\n"))
    env = {"JUPYTER_PATH": str(data), "OMP_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(nb, kernel_name="interp-progress-test", timeout=300).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = json.dumps(nb.cells[0].outputs)
    assert "IProgress" not in text, text[:2000]
    assert not [o for o in nb.cells[0].outputs if o.get("output_type") == "error"], text[:2000]
