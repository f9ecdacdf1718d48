"""The prompt-based experiment kinds under ``interp run --nproc 2`` give the same tables as
one process: ``s2a`` maps its questions over the ranks (``RunContext.map``), ``linearised``
shards its sweep points (``Sweep.pending``). Tiny configs on SmolLM2-135M."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from interp.cli import main

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

S2A = """kind = "s2a"
seed = 1
[config]
limit = 4
answer_tokens = 6
rewrite_tokens = 12
threads = 1
"""

LINEARISED = """kind = "linearised"
seed = 2
[config]
feature_maps = ["performer"]
layer_sets = ["all", "first_half"]
n_pairs = 4
n_shots = 2
n_prompts = 4
ppl_tokens = 64
ppl_window = 32
"""

#: wall-clock columns that may differ between runs (none in these tables today)
CLOCK = ("seconds", "duration_s", "wall_s")


def _runs(tmp_path: Path, text: str) -> dict[int, Path]:
    exp = tmp_path / "exp.toml"
    exp.write_text(text)
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"nproc{n}"
        assert main(["run", str(exp), "--out", str(out), "--no-progress", "--nproc", str(n)]) == 0
        meta = json.loads((out / "run.json").read_text())
        assert meta["status"] == "finished" and meta["nproc"] == n
        outs[n] = out
    return outs


def _table(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    return df.drop(columns=[c for c in CLOCK if c in df.columns])


def _same(outs: dict[int, Path], names: list[str]) -> dict[str, pd.DataFrame]:
    tables = {}
    for name in names:
        one, two = _table(outs[1] / name), _table(outs[2] / name)
        pd.testing.assert_frame_equal(two, one, check_exact=True, obj=name)
        tables[name] = one
    return tables


def test_s2a_two_processes_equal_one(tmp_path):
    outs = _runs(tmp_path, S2A)
    t = _same(outs, ["s2a_table.csv", "s2a_examples.csv", "s2a_per_layer.csv"])
    assert list(t["s2a_table.csv"].n) == [4, 4, 4]
    ex = t["s2a_examples.csv"]
    assert len(ex) == 12 and ex.example.nunique() == 4     # every question, in order
    assert (outs[2] / "figures" / "distractor_attention_per_layer.html").is_file()


def test_linearised_two_processes_equal_one(tmp_path):
    outs = _runs(tmp_path, LINEARISED)
    t = _same(outs, ["linearised.csv"])["linearised.csv"]
    assert list(zip(t.feature_map, t.layer_set)) == [
        ("softmax", "none"), ("performer", "all"), ("performer", "first_half")]
    assert (outs[1] / "points.jsonl").read_text() == (outs[2] / "points.jsonl").read_text()
    assert not list(outs[2].glob("points.rank*.jsonl"))
