"""Input validation of the CLI and the probes (issue #16): ``--max-tokens`` cuts before the
context check, one prompt check for every probe, paths checked before any model loads, one
wording for file errors, and ``interp run --list-kinds`` as valid TOML."""
from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch

import interp
from interp.cli import main
from interp.paths import PathError, check_input_file, check_output_dir, check_output_path, file_error
from interp.probes.common import NO_REPEATS, ProbeWarning, encode, to_tokens


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded before the input was checked")


@pytest.fixture
def no_model(monkeypatch):
    """Every way a command loads or builds a model raises: the test proves the command
    failed before that."""
    import interp.commands.s2a  # noqa: F401
    import interp.experiment_kinds.s2a as s2a_kind
    import interp.experiment_kinds.streaming as streaming_kind
    import interp.experiments as experiments
    import interp.models.registry as registry
    import interp.recipes.toy_induction as toy_induction

    monkeypatch.setattr(interp, "load_model", _no_model)
    monkeypatch.setattr(registry, "load_model", _no_model)
    monkeypatch.setattr(registry, "load_hf", _no_model)
    monkeypatch.setattr(streaming_kind, "streaming_lm", _no_model)
    monkeypatch.setattr(s2a_kind, "run_comparison", _no_model)
    monkeypatch.setattr(experiments, "run_experiment", _no_model)
    monkeypatch.setattr(toy_induction, "train_toy_induction", _no_model)


@pytest.fixture
def use_smollm2(monkeypatch, smollm2):
    """``interp.load_model`` returns the session's SmolLM2 (no second load)."""
    calls = []

    def load(name, *args, **kwargs):
        calls.append(name)
        return smollm2

    import interp.models.registry as registry

    monkeypatch.setattr(interp, "load_model", load)
    monkeypatch.setattr(registry, "load_model", load)
    return calls


@pytest.fixture(scope="module")
def long_text(tmp_path_factory) -> Path:
    from interp.data import load_text

    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text(load_text("alice") * 3, encoding="utf-8")     # ~118k tokens for SmolLM2
    return path


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"interp {command}: error: "), err
    assert "Errno" not in err and ".tmp" not in err and "Traceback" not in err
    return lines[0]


# -- --max-tokens: cut first, then the context check ---------------------------------------

@pytest.mark.parametrize("probe", ["sink", "locality", "induction"])
def test_max_tokens_on_long_file_works(probe, long_text, use_smollm2, tmp_path, capsys):
    out = tmp_path / "t.csv"
    assert main(["probe", probe, "--text", str(long_text), "--max-tokens", "64",
                 "--format", "csv", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert len(df) > 0 and df.select_dtypes("number").notna().all().all()
    assert use_smollm2 == ["smollm2-135m"]


def test_max_tokens_keeps_bos_and_matches_full_tokenization(smollm2, long_text):
    text = long_text.read_text()
    ids = encode(smollm2, text, max_tokens=64)
    assert len(ids) == 64 and ids[0] == smollm2.tokenizer.bos_token_id
    full = smollm2.tokenizer(text[:20000], add_special_tokens=False).input_ids
    assert ids[1:] == full[:63]
    assert to_tokens(smollm2, text, max_tokens=64).shape == (1, 64)


def test_max_tokens_on_an_encoder_keeps_cls_and_sep(minilm):
    ids = encode(minilm, "word " * 2000, max_tokens=16)
    assert len(ids) == 16
    assert minilm.tokenizer.convert_ids_to_tokens([ids[0], ids[-1]]) == ["[CLS]", "[SEP]"]
    assert encode(minilm, "hello there") == minilm.tokenizer("hello there").input_ids


def test_max_tokens_over_context_says_so(long_text, use_smollm2, capsys):
    assert main(["probe", "sink", "--text", str(long_text), "--max-tokens", "9000"]) == 2
    line = _one_error_line(capsys.readouterr().err, "probe")
    assert "--max-tokens 9000 is over the context length of 8192" in line


def test_view_long_text(long_text, use_smollm2, tmp_path, capsys):
    page = tmp_path / "v.html"
    assert main(["view", "--model", "smollm2-135m", "--text", str(long_text), "--out",
                 str(page)]) == 2
    assert "pass --max-tokens" in _one_error_line(capsys.readouterr().err, "view")
    assert main(["view", "--model", "smollm2-135m", "--text", str(long_text), "--out",
                 str(page), "--max-tokens", "32", "--layers", "0", "--heads", "0"]) == 0
    assert page.stat().st_size > 0


# -- prompts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["probe", "induction", "--prompt", ""],
    ["probe", "locality", "--prompt", ""],
    ["probe", "sink", "--prompt", "   "],
    ["view", "--model", "smollm2-135m", "--prompt", "", "--out", "x.html"],
], ids=["induction", "locality", "sink-whitespace", "view"])
def test_empty_prompt_exits_2_with_one_line(argv, no_model, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert "the prompt is empty" in line


def test_empty_text_file_exits_2(no_model, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert main(["probe", "sink", "--text", str(empty)]) == 2
    assert "is empty" in _one_error_line(capsys.readouterr().err, "probe")


def test_empty_prompt_in_the_library(smollm2):
    from interp.probes.induction import induction_scores
    from interp.probes.locality import locality_scores
    from interp.probes.sink import sink_probe

    for call in (lambda: to_tokens(smollm2, ""), lambda: sink_probe(smollm2, ""),
                 lambda: locality_scores(smollm2, " ")):
        with pytest.raises(ValueError, match="the prompt is empty"):
            call()
    with pytest.raises(ValueError, match="the prompt has 1 token; the induction probe needs "
                                         "at least 2"):
        induction_scores(smollm2, torch.tensor([[1]]), seg_len=None)


def test_sink_short_prompt_clips_default_positions(use_smollm2, capsys):
    assert main(["probe", "sink", "--prompt", "hello there", "--format", "csv"]) == 0
    cap = capsys.readouterr()
    assert cap.err.strip() == ("interp probe: warning: the prompt has 3 tokens; scoring "
                               "positions 0-2 only (default 0-3)")
    header = cap.out.splitlines()[0].split(",")
    assert "mass_2" in header and "mass_3" not in header


def test_sink_explicit_positions_beyond_prompt(smollm2):
    from interp.probes.sink import sink_probe

    with pytest.raises(ValueError, match=r"position 3 is outside a sequence of 3 tokens: the "
                                         r"prompt has 3 tokens, positions \[0, 1, 2, 3\] "
                                         r"need at least 4"):
        sink_probe(smollm2, "hello there", positions=(0, 1, 2, 3))


def test_induction_without_repeats_warns(use_smollm2, capsys, smollm2):
    from interp.probes.induction import induction_scores

    assert main(["probe", "induction", "--prompt", "The cat sat on a mat", "--top", "2",
                 "--no-progress"]) == 0
    assert capsys.readouterr().err.strip() == f"interp probe: warning: {NO_REPEATS}"
    assert main(["probe", "induction", "--prompt", "one two three one two three",
                 "--top", "2"]) == 0
    assert "warning" not in capsys.readouterr().err
    with pytest.warns(ProbeWarning, match="no token repeats"):
        df = induction_scores(smollm2, to_tokens(smollm2, "The cat sat on a mat"), seg_len=None)
    assert (df.induction == 0).all()


def test_locality_short_prompt_warns(use_smollm2, capsys):
    assert main(["probe", "locality", "--prompt", "hello world", "--top", "1"]) == 0
    assert "mass_inside is 1 by definition" in capsys.readouterr().err


# -- paths: checked before any model loads, one wording ------------------------------------

def _bad_outputs(tmp_path: Path) -> dict[str, str]:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "a_dir").mkdir()
    out = {"under-a-file": str(a_file / "t.csv"), "a-directory": str(tmp_path / "a_dir")}
    if os.path.isdir("/proc/self"):
        out["proc"] = "/proc/t.csv"
    return out


@pytest.mark.parametrize("which", ["under-a-file", "a-directory", "proc"])
@pytest.mark.parametrize("argv", [
    ["probe", "induction", "--out", "{out}"],
    ["probe", "sink", "--prompt", "hi there", "--out", "{out}"],
    ["stream", "--tokens", "16", "--out", "{out}"],
], ids=["probe", "probe-prompt", "stream"])
def test_bad_out_fails_before_the_model_loads(argv, which, no_model, tmp_path, capsys):
    bad = _bad_outputs(tmp_path)
    if which not in bad:
        pytest.skip("no /proc here")
    argv = [a.format(out=bad[which]) for a in argv]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert f"cannot write results to {bad[which]}: " in line


@pytest.mark.parametrize("argv, what", [
    (["view", "--model", "smollm2-135m", "--prompt", "hi", "--out", "{d}/f/x.html"], "the page"),
    (["run", "{d}/e.toml", "--out", "{d}/f/run"], "the run directory"),
    (["s2a", "--out", "{d}/f"], "results"),
    (["train", "toy-induction", "--out", "{d}/f"], "the checkpoint folder"),
], ids=["view", "run", "s2a", "train"])
def test_bad_out_of_other_commands(argv, what, no_model, tmp_path, capsys):
    (tmp_path / "f").write_text("a file, not a folder")
    (tmp_path / "e.toml").write_text('kind = "quickstart"\n')
    argv = [a.format(d=tmp_path) for a in argv]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert f"cannot write {what} to {tmp_path}/f" in line and "is a file, not a folder" in line


@pytest.mark.parametrize("argv", [
    ["probe", "sink", "--text", "{missing}"],
    ["view", "--model", "smollm2-135m", "--text", "{missing}", "--out", "{d}/v.html"],
    ["stream", "--text", "{missing}"],
    ["run", "{missing}"],
    ["train", "toy-induction", "--config", "{missing}"],
], ids=["probe", "view", "stream", "run", "train"])
def test_missing_input_file_one_wording(argv, no_model, tmp_path, capsys):
    missing = tmp_path / "missing.txt"
    argv = [a.format(missing=missing, d=tmp_path) for a in argv]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert f"cannot read " in line and f"{missing}: not found (no such file or folder)" in line


def test_bad_text_files(no_model, tmp_path, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    assert main(["probe", "sink", "--text", str(latin1)]) == 2
    assert _one_error_line(capsys.readouterr().err, "probe") == (
        f"interp probe: error: cannot read text file {latin1}: not UTF-8 text (byte 0xe9 at "
        f"offset 3); save it as UTF-8")
    assert main(["probe", "sink", "--text", str(tmp_path)]) == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err, "probe")


def test_write_error_names_the_users_path(use_smollm2, tmp_path, capsys, monkeypatch):
    import interp.results

    def fail(path, text):
        raise PermissionError(13, "Permission denied", str(Path(path).parent / ".t.csv.x1.tmp"))

    monkeypatch.setattr(interp.results, "atomic_write_text", fail)
    out = tmp_path / "t.csv"
    assert main(["probe", "sink", "--prompt", "one two three four five", "--out",
                 str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err, "probe")
    assert line == f"interp probe: error: cannot write results to {out}: permission denied"


def test_paths_api(tmp_path):
    assert file_error("/proc/t.csv", PermissionError(13, "Permission denied", "/proc/.t.tmp"),
                      "results", write=True) == "cannot write results to /proc/t.csv: permission denied"
    deep = tmp_path / "a" / "b" / "t.csv"
    assert check_output_path(deep, "results") == deep
    assert not (tmp_path / "a").exists()                   # checked, nothing created
    assert check_output_dir(tmp_path / "new", "results") == tmp_path / "new"
    assert list(tmp_path.iterdir()) == []                  # no probe file left behind
    with pytest.raises(PathError, match="is a directory"):
        check_output_path(tmp_path, "results")
    with pytest.raises(PathError, match="not found"):
        check_input_file(tmp_path / "nope.txt", "text file")
    assert issubclass(PathError, ValueError)


# -- interp run --list-kinds -------------------------------------------------------------------

def _as_toml(value):
    if isinstance(value, (list, tuple)):
        return [_as_toml(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _as_toml(v) for k, v in value.items() if v is not None}
    return value


def test_list_kinds_is_toml(capsys):
    from interp.config import to_dict
    from interp.experiments import get_kind, kinds

    assert main(["run", "--list-kinds"]) == 0
    parsed = tomllib.loads(capsys.readouterr().out)
    assert set(parsed) == set(kinds())
    for name, fields in parsed.items():
        for f in dataclasses.fields(get_kind(name).config_cls):
            if f.name not in fields:
                continue
            default = (f.default if f.default is not dataclasses.MISSING
                       else f.default_factory())
            assert fields[f.name] == _as_toml(to_dict(default)), (name, f.name)
    assert parsed["quickstart"]["seg_len"] == 50


@pytest.mark.parametrize("probe", ["sink", "locality", "induction"])
def test_method_blockwise_prints_the_pattern_table(probe, long_text, use_smollm2, tmp_path):
    """``--method blockwise`` (row blocks, no [n, n] pattern) prints the same table as
    ``--method pattern`` on a long text."""
    tables = {}
    for method in ("pattern", "blockwise"):
        out = tmp_path / f"{method}.csv"
        assert main(["probe", probe, "--text", str(long_text), "--max-tokens", "300",
                     "--method", method, "--format", "csv", "--out", str(out)]) == 0
        tables[method] = pd.read_csv(out)
    keys = [c for c in ("layer", "head", "layout") if c in tables["pattern"].columns]
    a, b = (tables[m].sort_values(keys).reset_index(drop=True) for m in ("pattern", "blockwise"))
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    num = a.select_dtypes("number").columns
    assert (a[num] - b[num]).abs().max().max() <= 2e-4      # the table is rounded to 1e-4


def test_unknown_method_is_an_argument_error(no_model, capsys):
    with pytest.raises(SystemExit) as err:
        main(["probe", "sink", "--method", "fast"])
    assert err.value.code == 2
    assert "--method" in capsys.readouterr().err
