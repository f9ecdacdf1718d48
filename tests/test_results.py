from __future__ import annotations

import json

import pandas as pd

from interp.results import Sweep, atomic_write_text, write_meta, write_table


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_table_and_meta(tmp_path):
    df = pd.DataFrame({"layer": [0, 1], "score": [0.5, 0.25]})
    write_table(df, tmp_path / "t.csv")
    assert pd.read_csv(tmp_path / "t.csv").equals(df)
    write_meta(tmp_path, {"steps": 3}, seed=7)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["config"] == {"steps": 3} and meta["seed"] == 7
    assert "torch" in meta["versions"]


def test_sweep_resumes_and_ignores_torn_line(tmp_path):
    points = [{"impl": "softmax", "d": d} for d in (8, 16, 32)]
    calls = []
    sweep = Sweep(tmp_path)
    for p in sweep.pending(points[:2]):
        calls.append(p)
        sweep.record(p, {"acc": p["d"] / 100})
    with open(sweep.path, "a") as fh:       # an interrupted write
        fh.write('{"key": "tor')
    sweep2 = Sweep(tmp_path)
    todo = list(sweep2.pending(points))
    assert todo == [points[2]]
    sweep2.record(todo[0], {"acc": 0.32})
    table = sweep2.table()
    assert sorted(table.d) == [8, 16, 32] and len(calls) == 2


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os
    import stat

    p = atomic_write_text(tmp_path / "r.csv", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
