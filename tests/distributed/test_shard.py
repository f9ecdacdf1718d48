"""Sharding helpers (:mod:`interp.distributed.shard`) and :class:`interp.results.Sweep` in a
process group: round-robin shares, gathering in order, rank-independent seeding, rank 0
alone writes."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from interp.distributed import run_distributed
from interp.distributed.shard import (derive_seed, gather, is_main, map_items, rank, seed_all,
                                      shard, unshard, world_size)
from interp.results import Sweep
from tests.distributed import workers


@given(st.lists(st.integers(), max_size=30), st.integers(1, 6))
def test_shard_round_robin_and_unshard(items, world):
    shares = [shard(items, r, world) for r in range(world)]
    for r, share in enumerate(shares):
        assert share == [x for i, x in enumerate(items) if i % world == r]
    assert unshard(shares) == items


def test_shard_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="not in a world of 2"):
        shard([1, 2, 3], 2, 2)


def test_without_a_group():
    assert (rank(), world_size(), is_main()) == (0, 1, True)
    assert shard([1, 2, 3]) == [1, 2, 3] and gather("x") == ["x"]


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "points", "a") == derive_seed(0, "points", "a")
    assert len({derive_seed(0, "p", k) for k in "abcdefgh"}) == 8
    assert 0 <= derive_seed("x") < 2**63
    seed_all(1, "x")
    a = torch.rand(3)
    seed_all(1, "x")
    assert torch.equal(a, torch.rand(3))


def test_map_items_one_process_seeds_each_item():
    out = map_items(lambda i: float(torch.rand(())), range(3), seed=4, name="m")
    expected = []
    for i in range(3):
        seed_all(4, "m", i)
        expected.append(float(torch.rand(())))
    assert out == expected


@pytest.mark.distributed
def test_map_items_in_a_group_equals_one_process():
    single = map_items(lambda i: (i, float(torch.randn(()))), range(5), seed=2)
    per_rank = run_distributed(workers.map_in_group, 2, 5, timeout=120)
    assert per_rank[0] == per_rank[1]
    assert [(i, v) for i, _, v in per_rank[0]] == single
    assert [r for _, r, _ in per_rank[0]] == [0, 1, 0, 1, 0]


@pytest.mark.distributed
def test_sweep_in_a_group_equals_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    ref = workers.sweep_in_group(0, 1, str(one), 5)
    per_rank = run_distributed(workers.sweep_in_group, 2, str(two), 5, timeout=120)
    assert [r["mine"] for r in per_rank] == [[0, 2, 4], [1, 3]]
    for r in per_rank:
        pd.testing.assert_frame_equal(r["table"], ref["table"])
        assert r["after"] == ref["after"]
    assert (two / "s.jsonl").read_text() == (one / "s.jsonl").read_text()
    assert sorted(p.name for p in two.iterdir()) == ["s.jsonl", "written_by_rank0.txt"]


@pytest.mark.distributed
def test_sweep_resumes_in_a_group_and_reads_leftover_rank_files(tmp_path):
    # An interrupted sharded sweep leaves rank files; a later run counts them as done.
    Sweep(tmp_path, "s")._append(tmp_path / "s.rank1.jsonl", {
        "key": '{"i": 1}', "point": {"i": 1}, "result": {"value": -1.0}})
    per_rank = run_distributed(workers.sweep_in_group, 2, str(tmp_path), 4, timeout=120)
    assert [r["mine"] for r in per_rank] == [[0, 3], [2]]
    table = per_rank[0]["table"]
    assert list(table.i) == [0, 1, 2, 3] and table.value[1] == -1.0
    assert not list(tmp_path.glob("s.rank*.jsonl"))
    assert list(Sweep(tmp_path, "s").table().i) == [0, 1, 2, 3]
