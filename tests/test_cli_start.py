"""Fast CLI start (issue #17): ``interp --help``, ``interp models`` and argument errors import
none of torch / transformer-lens / transformers / pandas / plotly, and print what the full
(torch and pandas) path prints. Behaviour only: the times are in ``benchmarks/cli_start.py``.

Each start is a fresh interpreter (this test process has torch imported already)."""
from __future__ import annotations

import csv
import importlib
import io
import json
import re
import subprocess
import sys

import pytest

import interp
import interp.commands  # noqa: F401  (registers every command)
from interp.cli import _COMMANDS, _literal_in_source, format_rows, print_table, source_literal

HEAVY = ("torch", "transformer_lens", "transformers", "pandas", "plotly")

#: runs ``python -m interp ARGV`` in this interpreter, then reports the exit status and the
#: heavy modules imported as the last line of stderr
_RUN_CLI = f"""
import json, runpy, sys
sys.argv = ["interp", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("interp", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def _run_cli(argv: list[str], env_cache=None) -> tuple[int, list[str], str, str]:
    """``interp ARGV`` in a fresh interpreter: (exit status, heavy modules imported, stdout,
    stderr without the report line)."""
    import os

    env = dict(os.environ)
    if env_cache is not None:
        env["INTERP_CACHE"] = str(env_cache)
    proc = subprocess.run([sys.executable, "-c", _RUN_CLI, json.dumps(argv)],
                          capture_output=True, text=True, env=env, timeout=120)
    *err, report = proc.stderr.rstrip("\n").split("\n")
    result = json.loads(report)
    return result["code"], result["heavy"], proc.stdout, "\n".join(err)


# -- no heavy imports --------------------------------------------------------------------------

ARGUMENT_ERRORS = {
    "unknown-probe": ["probe", "nosuchprobe"],
    "missing-value": ["probe", "induction", "--model"],
    "unknown-option": ["probe", "induction", "--bogus"],
    "unknown-command": ["nonsense"],
    "bad-int": ["train", "toy-induction", "--steps", "x"],
    "bad-choice": ["stream", "--mode", "nosuchmode"],
}


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in sorted(_COMMANDS))],
                         ids=lambda a: " ".join(a))
def test_help_imports_nothing_heavy(argv):
    code, heavy, out, _ = _run_cli(argv)
    assert code == 0 and out.startswith("usage: interp")
    if argv == ["--help"]:
        assert all(name in out for name in _COMMANDS)
    assert heavy == []


@pytest.mark.parametrize("argv", ARGUMENT_ERRORS.values(), ids=ARGUMENT_ERRORS.keys())
def test_argument_errors_import_nothing_heavy(argv):
    code, heavy, out, err = _run_cli(argv)
    assert code == 2 and out == ""
    assert re.match(r"interp( \w+)?: error: ", err.splitlines()[-1]), err    # argparse's line
    assert heavy == []


def test_import_interp_imports_nothing_heavy():
    code = (f"import sys, interp; dir(interp); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# -- interp models: the same listing as the full path ----------------------------------------

@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_models_prints_what_list_models_prints(fmt, tmp_path, monkeypatch, capsys):
    """No toy checkpoint: byte for byte the pandas text of ``list_models()``."""
    from interp.models.registry import list_models

    cache = tmp_path / "cache"
    (cache / "models" / "minilm-l6").mkdir(parents=True)
    (cache / "models" / "minilm-l6" / "manifest.json").write_text("{}")   # "cached"
    code, heavy, out, err = _run_cli(["models", "--format", fmt], env_cache=cache)
    assert code == 0 and heavy == [], err
    monkeypatch.setenv("INTERP_CACHE", str(cache))
    print_table(list_models(), fmt, None)
    assert out == capsys.readouterr().out
    assert "minilm-l6" in out


def test_models_with_a_toy_checkpoint(tmp_path, monkeypatch):
    """With a toy checkpoint the rows are the same; params stay integers (pandas makes that
    column float: 134515008.0, NaN) and a toy's is empty."""
    from interp.models.registry import list_models

    toy = tmp_path / "toy" / "t1"
    toy.mkdir(parents=True)
    (toy / "config.json").write_text(json.dumps({"n_layers": 2, "attn_only": True,
                                                 "n_heads": 4, "d_model": 64}))
    code, heavy, out, err = _run_cli(["models", "--format", "csv"], env_cache=tmp_path)
    assert code == 0 and heavy == [], err
    rows = list(csv.DictReader(io.StringIO(out)))
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    want = list_models()
    assert [r["name"] for r in rows] == list(want.name) and rows[-1]["name"] == "toy:t1"
    for row, (_, ref) in zip(rows, want.iterrows()):
        assert (row["kind"], row["cached"], row["description"]) == (
            ref.kind, str(ref.cached), ref.description)
        assert row["params"] == ("" if ref.params != ref.params else str(int(ref.params)))
    code, heavy, out, _ = _run_cli(["models"], env_cache=tmp_path)
    assert out.splitlines()[-1].split(None, 4)[:4] == ["toy:t1", "toy", "-", "True"]


def test_format_rows_matches_pandas_for_plain_columns(capsys):
    import pandas as pd

    rows = [{"a": "x", "n": 1, "ok": True, "s": "a, \"quoted\" / text"},
            {"a": "yyyy", "n": -20, "ok": False, "s": "é"}]
    for fmt in ("table", "csv", "json"):
        print_table(pd.DataFrame(rows, columns=list(rows[0])), fmt, None)
        assert format_rows(rows, list(rows[0]), fmt) == capsys.readouterr().out, fmt


def test_model_rows_are_the_registry():
    """What ``interp models`` lists (built without torch) is the registry's table."""
    import interp.models.registry as registry
    from interp.models.pretrained import PRETRAINED

    assert [r["name"] for r in registry.model_rows()][:len(PRETRAINED)] == list(PRETRAINED)
    assert [r["params"] for r in registry.model_rows()][:len(PRETRAINED)] == [
        s.n_params for s in PRETRAINED.values()]
    assert registry.PRETRAINED is PRETRAINED
    assert [r["name"] for r in registry.model_rows()] == list(registry.list_models().name)
    assert registry.model_names()[:len(PRETRAINED)] == list(PRETRAINED)


# -- what --help shows, read from the source -------------------------------------------------

@pytest.mark.parametrize("module, name", [
    ("interp.devices", "DTYPE_NAMES"),
    ("interp.streaming.evaluate", "MODES"),
    ("interp.recipes.toy_induction", "ToyInductionConfig.steps"),
    ("interp.recipes.toy_induction", "ToyInductionConfig.name"),
])
def test_source_literals_are_the_modules_values(module, name):
    value = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    assert _literal_in_source(module, name.split(".")) == value


def test_source_literal_falls_back_to_importing():
    from interp.devices import DTYPES
    from interp.models.pretrained import PRETRAINED

    for module, name in (("interp.devices", ["DTYPES"]),               # torch objects
                         ("interp.models.pretrained", ["PRETRAINED"]),  # computed
                         ("interp.recipes.toy_induction", ["Nope", "x"])):
        with pytest.raises(LookupError):
            _literal_in_source(module, name)
    assert source_literal("interp.devices", "DTYPES") is DTYPES
    assert source_literal("interp.models.pretrained", "PRETRAINED") is PRETRAINED


# -- import interp: lazy names -----------------------------------------------------------------

def test_lazy_public_names():
    import interp.families
    import interp.models.loading
    import interp.models.registry
    import interp.swap

    assert interp.load_model is interp.models.registry.load_model
    assert interp.list_models is interp.models.registry.list_models
    assert interp.swap_attention is interp.swap.swap_attention
    assert interp.wrap is interp.models.loading.wrap
    assert interp.describe_layers is interp.families.describe_layers
    assert set(interp.__all__) <= set(dir(interp))
    assert {"viz", "probes", "models", "cli"} <= set(dir(interp))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        interp.nope


def test_submodules_load_on_attribute_access():
    """``import interp; interp.viz.setup_notebook()`` works without ``import interp.viz``."""
    code = ("import interp; print(callable(interp.viz.setup_notebook), "
            "callable(interp.attention.names))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
