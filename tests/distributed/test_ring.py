"""Ring attention on 2 and 4 gloo processes equals dense attention (outputs and gradients).

All cases of one world size run inside a single ``run_distributed`` call (starting processes is
the slow part); each case is then checked by its own parametrized test."""
from __future__ import annotations

import itertools

import pytest
import torch

from interp.distributed import run_distributed
from tests.distributed import workers
from tests.distributed.reference import dense_with_grads

pytestmark = pytest.mark.distributed

TOL = 1e-5
NAMES = ("out", "dq", "dk", "dv")


def _case_id(world, causal, layout, n, heads, kv_heads, impl):
    mask = "causal" if causal else "full"
    return f"P{world}-{mask}-{layout}-n{n}-h{heads}kv{kv_heads}-{impl}"


def _grid(world):
    # n: divisible by 2P; not divisible (padding); for P=4 zigzag n=25 leaves a whole chunk padded.
    lengths = (8 * world, 8 * world - 3, 6 * world + 1)
    for causal, layout, n in itertools.product((True, False), ("contiguous", "zigzag"), lengths):
        yield (world, causal, layout, n, 4, 2, "auto")  # GQA
    for causal, layout in itertools.product((True, False), ("contiguous", "zigzag")):
        yield (world, causal, layout, 8 * world, 4, 4, "auto")  # multi-head
        yield (world, causal, layout, 8 * world - 1, 4, 1, "explicit")  # MQA, reference kernel


CASES = {world: list(_grid(world)) for world in (2, 4)}


def _make_case(world, causal, layout, n, heads, kv_heads, impl, seed):
    g = torch.Generator().manual_seed(seed)
    b, d = 2, 16
    return {
        "q": torch.randn(b, heads, n, d, generator=g),
        "k": torch.randn(b, kv_heads, n, d, generator=g),
        "v": torch.randn(b, kv_heads, n, d, generator=g),
        "dout": torch.randn(b, heads, n, d, generator=g),
        "causal": causal,
        "layout": layout,
        "block_impl": impl,
    }


@pytest.fixture(scope="module")
def ring_results():
    """{case id: (ring [out, dq, dk, dv], dense reference [out, dq, dk, dv])}."""
    results = {}
    for world, cases in CASES.items():
        inputs = [_make_case(*c, seed=i) for i, c in enumerate(cases)]
        rank0 = run_distributed(workers.ring_cases, world, inputs, timeout=240)[0]
        for case, inp, got in zip(cases, inputs, rank0):
            ref = dense_with_grads(inp["q"], inp["k"], inp["v"], inp["dout"], inp["causal"])
            results[_case_id(*case)] = (got, ref)
    return results


ALL_IDS = [_case_id(*c) for cases in CASES.values() for c in cases]


@pytest.mark.parametrize("case_id", ALL_IDS)
def test_ring_matches_dense(ring_results, case_id):
    got, ref = ring_results[case_id]
    for name, g, r in zip(NAMES, got, ref):
        assert g.dtype == torch.float32
        assert g.shape == r.shape, name
        err = (g.double() - r).abs().max().item()
        assert err <= TOL, f"{case_id}: {name} max abs error {err:.2e} > {TOL}"


@pytest.mark.parametrize("world", [2, 4])
def test_shard_gather_roundtrip(world):
    g = torch.Generator().manual_seed(world)
    tensors = [
        (torch.randn(2, 3, n, 5, generator=g), dim, layout)
        for n, dim, layout in [
            (16, 2, "contiguous"), (16, 2, "zigzag"), (13, 2, "contiguous"), (13, 2, "zigzag"),
            (1, 2, "zigzag"), (4 * world + 1, 0, "zigzag"),
        ]
    ]
    tensors[-1] = (torch.randn(4 * world + 1, 3, generator=g), 0, "zigzag")
    per_rank = run_distributed(workers.shard_gather_roundtrip, world, tensors, timeout=120)
    for rank, back in enumerate(per_rank):
        for (x, dim, layout), y in zip(tensors, back):
            assert torch.equal(x, y), f"rank {rank}: {layout} length {x.shape[dim]} dim {dim}"


def test_world_size_one_group_is_dense():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 11, 8, generator=g)
    k = torch.randn(1, 2, 11, 8, generator=g)
    v = torch.randn(1, 2, 11, 8, generator=g)
    (got,) = run_distributed(workers.world_one, 1, q, k, v, timeout=120)
    ref = dense_with_grads(q, k, v, torch.ones(1, 4, 11, 8), causal=True)
    for name, a, r in zip(NAMES, got, ref):
        assert (a.double() - r).abs().max().item() <= TOL, name
