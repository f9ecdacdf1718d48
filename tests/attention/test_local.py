"""Sliding window, sink + window and block-sparse: limits that must reduce to known things."""
from __future__ import annotations

import pytest
import torch

from interp import attention

from .conftest import make_qkv, rel_err

CAUSAL = pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])


@CAUSAL
@pytest.mark.parametrize("seq", [1, 7, 40, 130], ids=lambda s: f"seq{s}")
def test_full_window_equals_softmax(seq, causal):
    q, k, v = make_qkv(seq=seq)
    soft = attention.get("softmax").naive(q, k, v, causal=causal)
    for name, opts in [("sliding_window", {"window": seq}), ("sliding_window", {"window": 10_000}),
                       ("sink_window", {"window": seq, "n_sink": 3})]:
        out = attention.get(name, **opts)(q, k, v, causal=causal)
        assert rel_err(out, soft) < 1e-5, (name, opts)


@CAUSAL
def test_block_sparse_with_all_blocks_equals_softmax(causal):
    q, k, v = make_qkv(seq=29)
    soft = attention.get("softmax").naive(q, k, v, causal=causal)
    impl = attention.get("block_sparse", block_size=4, local_blocks=8, global_blocks=0,
                         random_blocks=0)
    assert rel_err(impl(q, k, v, causal=causal), soft) < 1e-5


@CAUSAL
def test_sink_with_no_sinks_is_sliding_window(causal):
    q, k, v = make_qkv(seq=53)
    sink = attention.get("sink_window", n_sink=0, window=6)(q, k, v, causal=causal)
    slide = attention.get("sliding_window", window=6)(q, k, v, causal=causal)
    assert rel_err(sink, slide) < 1e-6


def test_sink_window_allowed_set_is_streaming_llm():
    impl = attention.get("sink_window", n_sink=2, window=3)
    q, k, v = make_qkv(batch=1, heads=1, kv_heads=1, seq=10)
    w = impl.pattern(q, k, v, causal=True)[0, 0]
    for i in range(10):
        allowed = {j for j in range(i + 1) if j < 2 or i - 3 < j}
        nz = set(torch.nonzero(w[i]).flatten().tolist())
        assert nz == allowed, i


def test_sliding_window_allowed_sets_documented():
    """causal: keys (i - w, i]; bidirectional: |i - j| < w; globals attend / are attended."""
    q, k, v = make_qkv(batch=1, heads=1, kv_heads=1, seq=12)
    impl = attention.get("sliding_window", window=3, global_tokens=(5,))
    for causal in (True, False):
        w = impl.pattern(q, k, v, causal=causal)[0, 0]
        for i in range(12):
            allowed = {j for j in range(12) if abs(i - j) < 3 or i == 5 or j == 5}
            if causal:
                allowed = {j for j in allowed if j <= i}
            assert set(torch.nonzero(w[i]).flatten().tolist()) == allowed, (causal, i)


def test_sliding_window_is_local():
    """Changing a key outside every window must not change the output."""
    impl = attention.get("sliding_window", window=4)
    q, k, v = make_qkv(seq=40)
    out = impl(q, k, v, causal=True)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 10] += 5.0
    v2[:, :, 10] += 5.0
    out2 = impl(q, k2, v2, causal=True)
    changed = (out2 - out).abs().amax(dim=(0, 1, 3)) > 0
    assert changed.nonzero().flatten().tolist() == [10, 11, 12, 13]


def test_block_sparse_layout():
    impl = attention.get("block_sparse", block_size=4, local_blocks=1, global_blocks=1,
                         random_blocks=2, seed=0)
    nb = 12
    for causal in (True, False):
        rows = impl.layout(nb, causal)
        assert rows == impl.layout(nb, causal)  # cached and deterministic
        for t, row in enumerate(rows):
            if t == 0:
                assert row == []  # global query block: attends everything
                continue
            local = set(range(max(0, t - 1), t + 1 if causal else min(nb, t + 2)))
            assert local | {0} <= set(row)
            n_random = len(set(row) - local - {0})
            pool = len(set(range(t if causal else nb)) - local - {0})
            assert n_random == min(2, pool)
            if causal:
                assert max(row) <= t
    other = attention.get("block_sparse", block_size=4, random_blocks=2, seed=1)
    assert other.layout(nb, False) != impl.layout(nb, False)


def test_block_sparse_pattern_follows_layout():
    impl = attention.get("block_sparse", block_size=3, local_blocks=0, global_blocks=1,
                         random_blocks=1, seed=2)
    q, k, v = make_qkv(batch=1, heads=1, kv_heads=1, seq=18)
    w = impl.pattern(q, k, v, causal=False)[0, 0]
    bm = impl.block_mask(6, False)
    blocks = (w.reshape(6, 3, 6, 3).abs().sum(dim=(1, 3)) > 0)
    assert torch.equal(blocks, bm)


@CAUSAL
def test_option_validation(causal):
    for name, opts in [("sliding_window", {"window": 0}), ("sink_window", {"n_sink": -1}),
                       ("sliding_window", {"global_tokens": (-1,)}),
                       ("block_sparse", {"block_size": 0}), ("block_sparse", {"random_blocks": -2})]:
        with pytest.raises(ValueError, match=next(iter(opts))):
            attention.get(name, **opts)
