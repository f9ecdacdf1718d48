"""Experiment registry and launcher: strict configs, run directory contents, resumable
sweeps, failures, and the ``interp run`` / ``interp view`` commands."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from interp.cli import main
from interp.config import ConfigError
from interp.experiments import (RunContext, experiment, get_kind, kinds, load_experiment,
                                run_experiment)

ROOT = Path(__file__).resolve().parents[1]
CALLS: list[dict] = []          # points the test sweep actually computed
FAIL_AFTER: list[int] = []      # make the test sweep fail after this many points


@dataclass(frozen=True)
class Inner:
    scale: float = 1.0


@dataclass(frozen=True)
class SweepConfig:
    n_points: int = 3
    label: str = "demo"
    inner: Inner = field(default_factory=Inner)


@experiment("test_sweep", SweepConfig)
def run_test_sweep(cfg: SweepConfig, ctx: RunContext) -> None:
    """A tiny resumable sweep used by the tests."""
    sweep = ctx.sweep()
    points = [{"i": i} for i in range(cfg.n_points)]
    for k, point in enumerate(ctx.progress(sweep.pending(points), desc="points")):
        if FAIL_AFTER and k >= FAIL_AFTER[0]:
            raise RuntimeError("simulated crash")
        CALLS.append(point)
        sweep.record(point, {"value": point["i"] * cfg.inner.scale})
    table = sweep.table()
    ctx.add_table("points", table, caption="one row per point")
    ctx.add_text(f"**{len(table)}** points, label `{cfg.label}`" + (" (quick)" if ctx.quick else ""))


def _spec(**config):
    return {"kind": "test_sweep", "config": config}


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    FAIL_AFTER.clear()


def test_registry_discovers_kind_modules():
    assert "quickstart" in kinds() and "test_sweep" in kinds()
    assert get_kind("quickstart").config_cls.__name__ == "QuickstartConfig"
    with pytest.raises(ConfigError, match=r"known kinds: \[.*'quickstart'"):
        get_kind("nope")


def test_duplicate_kind_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        @experiment("test_sweep", SweepConfig)
        def other(cfg, ctx):
            pass


def test_quickstart_file_validates():
    kind, cfg, spec = load_experiment(ROOT / "experiments" / "quickstart.toml")
    assert kind.name == "quickstart" and cfg.model == "smollm2-135m" and spec["seed"] == 0


@pytest.mark.parametrize("data, field_name", [
    ({"kind": "test_sweep", "config": {"n_pointz": 2}}, "n_pointz"),
    ({"kind": "test_sweep", "config": {"inner": {"scal": 2.0}}}, "scal"),
    ({"kind": "test_sweep", "kindd": 1}, "kindd"),
], ids=["config", "nested", "top-level"])
def test_unknown_fields_are_rejected_with_name_and_valid_fields(data, field_name):
    with pytest.raises(ConfigError) as exc:
        load_experiment(data)
    msg = str(exc.value)
    assert field_name in msg and "valid fields" in msg


def test_unknown_fields_in_quickstart_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "quickstart"\n[config]\nseg_lenn = 10\n')
    with pytest.raises(ConfigError, match=r"seg_lenn.*valid fields are .*'seg_len'"):
        load_experiment(bad)


def test_wrong_type_and_missing_kind():
    with pytest.raises(ConfigError, match="n_points"):
        load_experiment(_spec(n_points="three"))
    with pytest.raises(ConfigError, match="missing top-level field 'kind'"):
        load_experiment({"config": {}})


def test_run_writes_meta_tables_and_report(tmp_path):
    out = run_experiment(_spec(n_points=3, label="x"), out_dir=tmp_path / "run", progress=False)
    assert out == tmp_path / "run"
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"] == {"n_points": 3, "label": "x", "inner": {"scale": 1.0}}
    assert meta["kind"] == "test_sweep" and meta["status"] == "finished" and meta["seed"] == 0
    assert "torch" in meta["versions"] and "git_commit" in meta
    assert meta["tables"] == ["points.csv"]
    table = pd.read_csv(out / "points.csv")
    assert list(table["i"]) == [0, 1, 2]
    report = (out / "report.html").read_text()
    assert "<strong>3</strong> points" in report and '<table class="data">' in report
    assert '<script src="http' not in report


def test_second_run_skips_finished_points(tmp_path):
    run_experiment(_spec(n_points=3), out_dir=tmp_path, progress=False)
    assert len(CALLS) == 3
    CALLS.clear()
    run_experiment(_spec(n_points=3), out_dir=tmp_path, progress=False)
    assert CALLS == []
    assert len(pd.read_csv(tmp_path / "points.csv")) == 3


def test_interrupted_sweep_resumes_and_failure_is_reported(tmp_path):
    FAIL_AFTER.append(2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(_spec(n_points=4), out_dir=tmp_path, progress=False)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["status"] == "failed" and "simulated crash" in meta["error"]
    assert "simulated crash" in (tmp_path / "report.html").read_text()
    assert len(CALLS) == 2
    FAIL_AFTER.clear()
    CALLS.clear()
    run_experiment(_spec(n_points=4), out_dir=tmp_path, progress=False)
    assert CALLS == [{"i": 2}, {"i": 3}]
    assert len(pd.read_csv(tmp_path / "points.csv")) == 4


def test_resuming_a_different_config_is_refused(tmp_path):
    run_experiment(_spec(n_points=2), out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different experiment"):
        run_experiment(_spec(n_points=2, label="other"), out_dir=tmp_path, progress=False)


def _forget_field(out_dir, name):
    """Rewrite run.json as a run older than the config field ``name`` would have written it."""
    meta_path = out_dir / "run.json"
    meta = json.loads(meta_path.read_text())
    for config in (meta["config"], meta.get("key_fields", {}).get("config", {})):
        config.pop(name, None)
    meta_path.write_text(json.dumps(meta))


def test_a_field_newer_than_the_folder_resumes_at_its_default(tmp_path):
    run_experiment(_spec(n_points=2), out_dir=tmp_path, progress=False)
    _forget_field(tmp_path, "label")               # the folder predates `label`
    CALLS.clear()
    run_experiment(_spec(n_points=2), out_dir=tmp_path, progress=False)   # label = default
    assert CALLS == []                             # its points were reused
    _forget_field(tmp_path, "label")
    with pytest.raises(ConfigError, match=r'config.label: "demo" -> "other"'):
        run_experiment(_spec(n_points=2, label="other"), out_dir=tmp_path, progress=False)


def test_default_out_dir_is_results_stem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "my_exp.toml"
    exp.write_text('kind = "test_sweep"\ntitle = "T"\n[config]\nn_points = 1\n')
    out = run_experiment(exp, quick=True, progress=False)
    assert out == Path("results") / "my_exp"
    assert "(quick)" in (tmp_path / out / "report.html").read_text()


# -- CLI -------------------------------------------------------------------------------------

def test_cli_run_prints_report_path(tmp_path, capsys):
    exp = tmp_path / "e.toml"
    exp.write_text('kind = "test_sweep"\n[config]\nn_points = 2\n')
    assert main(["run", str(exp), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert str(tmp_path / "o" / "report.html") in capsys.readouterr().out


@pytest.mark.parametrize("toml, needle", [
    (None, "not found"),
    ('kind = "test_sweep"\n[config]\nbogus = 1\n', "bogus"),
    ('kind = "no_such_kind"\n', "known kinds"),
    ('kind = "test_sweep"\n[config\n', "not valid TOML"),
], ids=["missing-file", "bad-field", "unknown-kind", "bad-toml"])
def test_cli_run_bad_input_exits_2(tmp_path, capsys, toml, needle):
    exp = tmp_path / "e.toml"
    if toml is not None:
        exp.write_text(toml)
    assert main(["run", str(exp), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interp run: error:") and needle in err
    if toml and "no_such_kind" in toml:
        assert "quickstart" in err


def test_cli_run_list_kinds(capsys):
    assert main(["run", "--list-kinds"]) == 0
    out = capsys.readouterr().out
    assert "quickstart:" in out and "seg_len = 50" in out


@pytest.mark.parametrize("argv, needle", [
    (["--model", "smollm2-135m", "--text", "/no/such/file.txt", "--out", "x.html"], "no such file"),
    (["--model", "no-such-model", "--prompt", "hi", "--out", "x.html"], "unknown model"),
    (["--model", "smollm2-135m", "--prompt", "hi", "--out", "x.png"], ".html"),
    (["--model", "smollm2-135m", "--prompt", "  ", "--out", "x.html"], "empty"),
], ids=["missing-text", "bad-model", "bad-out", "empty"])
def test_cli_view_bad_input_exits_2(tmp_path, capsys, argv, needle):
    assert main(["view", *argv]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "view"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_cli_view_writes_standalone_page(tmp_path, capsys):
    text = tmp_path / "p.txt"
    text.write_text("Alice was beginning to get very tired of sitting by her sister. " * 3)
    out = tmp_path / "v.html"
    assert main(["view", "--model", "smollm2-135m", "--text", str(text), "--out", str(out),
                 "--layers", "0", "17", "--heads", "3", "--window", "20"]) == 0
    page = out.read_text()
    assert "var CircuitsVis=" in page and '<script src="http' not in page
    assert '"attentionHeadNames":["L0H3","L17H3"]' in page


# -- the quickstart itself -------------------------------------------------------------------

@pytest.mark.slow
def test_quickstart_quick_run(tmp_path):
    from tests.viz.runs import quickstart_quick_run

    out = quickstart_quick_run()
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["quick"] is True
    for name in ["induction_scores", "top_heads", "locality", "k_composition", "sink_per_layer"]:
        assert (out / f"{name}.csv").is_file(), name
    ind = pd.read_csv(out / "induction_scores.csv")
    assert len(ind) == 30 * 9 and ind["induction"].max() > 0.3
    report = (out / "report.html").read_text()
    for needle in ["induction_heatmap", "previous_token_heatmap", "locality_heatmap",
                   "k_composition_heatmap", "sink_curves", "attention_view", "Summary",
                   "Top induction head"]:
        assert needle in report, needle
    assert report.count("var CircuitsVis=") == 1 and '<script src="http' not in report
