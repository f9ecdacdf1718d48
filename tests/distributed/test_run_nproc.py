"""``interp run --nproc N``: a sharded run gives the same tables as one process, resumes
under --nproc, and fails as a whole (non-zero exit, the rank named, no hang) when a rank fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from interp.cli import main
from tests.distributed import sharded_kind

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[2]
TABLES = ("points.csv", "mapped.csv", "after.csv")


def _experiment(tmp_path: Path, n_points: int = 7) -> Path:
    exp = tmp_path / "sharded.toml"
    exp.write_text(f'kind = "{sharded_kind.KIND}"\nseed = 3\n[config]\n'
                   f"n_points = {n_points}\n")
    return exp


def _run(exp: Path, out: Path, *extra: str) -> int:
    return main(["run", str(exp), "--out", str(out), "--no-progress", *extra])


def _computed(out: Path) -> dict[int, list[int]]:
    return {int(p.stem.split("rank")[1]): [int(x) for x in p.read_text().split()]
            for p in sorted(out.glob("computed.rank*.txt"))}


def _same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        assert (a / name).read_text() == (b / name).read_text(), name
    assert (a / "points.jsonl").read_text() == (b / "points.jsonl").read_text()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("one")
    assert _run(_experiment(tmp), tmp / "out") == 0
    return tmp / "out"


def test_two_processes_equal_one(tmp_path, one_process, capsys):
    out = tmp_path / "out"
    assert _run(_experiment(tmp_path), out, "--nproc", "2") == 0
    assert str(out / "report.html") in capsys.readouterr().out
    _same_tables(out, one_process)
    assert _computed(out) == {0: [0, 2, 4, 6], 1: [1, 3, 5]}   # round robin, no overlap
    assert not list(out.glob("points.rank*.jsonl"))
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["nproc"] == 2
    assert "processes" in (out / "report.html").read_text()
    assert not list(out.glob(".*.tmp"))


def test_rank_failure_fails_the_run_and_resume_skips_finished(tmp_path, one_process,
                                                              monkeypatch, capsys):
    exp, out = _experiment(tmp_path), tmp_path / "out"
    monkeypatch.setenv("INTERP_TEST_FAIL", "1:1")     # rank 1 fails after one point
    start = time.monotonic()
    assert _run(exp, out, "--nproc", "2") == 1
    assert time.monotonic() - start < 90               # no hang in a collective
    err = capsys.readouterr().err
    assert "rank 1 of 2 failed" in err and "deliberate failure on rank 1" in err
    assert "resume" in err
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "failed" and "rank 1" in meta["error"]
    assert "deliberate failure" in (out / "report.html").read_text()
    assert not (out / "points.csv").exists()           # no table from a failed sweep
    first = _computed(out)
    assert first[1] == [1]
    finished = {json.loads(line)["point"]["i"]
                for p in out.glob("points*.jsonl") for line in p.read_text().splitlines()}
    assert 1 in finished and set(first[0]) <= finished

    monkeypatch.delenv("INTERP_TEST_FAIL")
    for p in out.glob("computed.rank*.txt"):
        p.unlink()
    assert _run(exp, out, "--nproc", "2") == 0
    again = sorted(i for ids in _computed(out).values() for i in ids)
    assert not set(again) & finished                     # finished points were skipped
    assert sorted(set(again) | finished) == list(range(7))
    _same_tables(out, one_process)
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_one_process_resumes_a_sharded_run(tmp_path, one_process, monkeypatch):
    exp, out = _experiment(tmp_path), tmp_path / "out"
    monkeypatch.setenv("INTERP_TEST_FAIL", "0:2")
    assert _run(exp, out, "--nproc", "2") == 1
    monkeypatch.delenv("INTERP_TEST_FAIL")
    assert _run(exp, out) == 0                           # rank files are merged and skipped
    assert not list(out.glob("points.rank*.jsonl"))
    _same_tables(out, one_process)


def test_bad_nproc_is_a_user_error(tmp_path, capsys):
    assert _run(_experiment(tmp_path), tmp_path / "o", "--nproc", "0") == 2
    assert "--nproc must be >= 1" in capsys.readouterr().err


RETRIEVAL = """kind = "retrieval_sweep"
[config]
vocab_size = 32
seq_len = 16
num_kv_pairs = [2]
d_models = [16, 32]
registry = false
options = {}
hybrids = [
    {label = "lin", mixers = [{name = "linear", options = {feature_map = "elu"}}]},
    {label = "swa", mixers = [{name = "sliding_window", options = {window = 4}}]},
]
probe_samples = 8
[config.train]
steps = 15
batch_size = 16
test_size = 32
[config.quick]
include = ["lin"]
"""


@pytest.mark.slow
def test_retrieval_sweep_sharded_equals_one_process_and_torchrun(tmp_path):
    exp = tmp_path / "retrieval.toml"
    exp.write_text(RETRIEVAL)
    outs = {n: tmp_path / f"nproc{n}" for n in (1, 2)}
    for n, out in outs.items():
        assert _run(exp, out, "--nproc", str(n)) == 0
    outs["torchrun"] = tmp_path / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", "-m", "interp", "run", str(exp), "--out", str(outs["torchrun"]),
         "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = {n: pd.read_csv(out / "retrieval.csv").drop(columns="seconds")
              for n, out in outs.items()}
    assert len(tables[1]) == 4
    for n in (2, "torchrun"):
        pd.testing.assert_frame_equal(tables[n], tables[1], check_exact=True)
        assert not list(outs[n].glob("points.rank*.jsonl"))
