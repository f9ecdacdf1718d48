"""StreamingKVCache bookkeeping against a naive list simulation: which token each slot
holds and the cache position it gets (sinks first, then the recent window by age)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from interp.streaming.cache import StreamingKVCache


def _naive(n_seen: int, capacity: int, n_sink: int) -> list[int]:
    """Tokens kept, in cache order: the first n_sink, then the most recent ones."""
    toks = list(range(n_seen))
    if n_seen <= capacity:
        return toks
    return toks[:n_sink] + toks[n_seen - (capacity - n_sink):]


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 12), sinks=st.lists(st.integers(0, 11), min_size=1, max_size=3),
       steps=st.integers(1, 40), prefill=st.integers(1, 12))
def test_slots_and_positions_match_naive_cache(capacity, sinks, steps, prefill):
    sinks = [s % capacity for s in sinks]
    c = StreamingKVCache(1, 1, 1, capacity, n_sink=sinks)
    b = len(sinks)
    t = 0
    n0 = min(prefill, capacity, steps)           # a multi-token append while nothing evicts
    while t < steps:
        n = n0 if t == 0 else 1
        slots = c.write_slots(n)
        qpos = c.query_positions(n)
        kpos = c.positions(c.n_seen + n)
        # the "key" of token i is i itself, so the cache shows which token each slot holds
        k = torch.arange(t, t + n, dtype=torch.float32).view(1, 1, n, 1).expand(b, 1, n, 1)
        c.write(0, slots, k, k)
        c.advance(n)
        t += n
        held = c.keys(0, c.length)[:, 0, :, 0]                        # [b, L]
        assert torch.equal(kpos, c.positions())
        for row, s in enumerate(sinks):
            order = _naive(t, capacity, s)
            got = {int(tok): int(p) for tok, p in zip(held[row], kpos[row])}
            assert got == {tok: i for i, tok in enumerate(order)}
            # the newest token is the query, at the last cache position
            assert qpos[row, -1] == len(order) - 1 == got[t - 1]


def test_multi_token_append_that_would_evict_is_refused():
    c = StreamingKVCache(1, 1, 1, 8, n_sink=2)
    c.write_slots(6)
    c.advance(6)
    with pytest.raises(ValueError, match="one token at a time"):
        c.write_slots(3)
    c.write_slots(2)                                  # fills exactly: allowed


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="n_sink"):
        StreamingKVCache(1, 1, 1, 4, n_sink=4)
    with pytest.raises(ValueError, match="2 entries"):
        StreamingKVCache(1, 1, 1, 4, n_sink=[0, 1], batch=3)


def test_truncate_only_before_eviction():
    c = StreamingKVCache(1, 1, 1, 4)
    c.advance(3)
    c.truncate(2)
    assert c.length == 2
    c.advance(3)
    with pytest.raises(ValueError, match="evicted"):
        c.truncate(1)


def test_state_size_counts_keys_and_values():
    c = StreamingKVCache(30, 3, 64, 260, n_sink=4)
    assert c.state_size() == 2 * 30 * 3 * 260 * 64
    assert c.k.shape == (30, 1, 3, 260, 64)
