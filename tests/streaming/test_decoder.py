"""StreamingLM against HF's own forward: exact while nothing is evicted (dense), and the
window-only cache after eviction against HF with a sliding-window mask (RoPE is relative, so
positions inside the cache give the same logits as original positions for a pure window)."""
from __future__ import annotations

import pytest
import torch

from interp.streaming import StreamingLM


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 49152, (1, 40), generator=g)


@pytest.fixture(scope="module")
def hf_logits(lm, ids):
    with torch.no_grad():
        return lm.hf(ids).logits


def test_fresh_forward_equals_hf(lm, ids, hf_logits):
    assert torch.allclose(lm.forward(ids), hf_logits, atol=1e-4)


def test_stream_shorter_than_cache_equals_dense(lm, ids, hf_logits):
    """Token-by-token decoding of a window-only and a sink stream (one batch) while the
    stream is shorter than the cache: both are exactly dense attention."""
    cache = lm.new_cache(48, [0, 4])
    outs = [lm.step(ids[:, t:t + 1].expand(2, 1), cache) for t in range(ids.shape[1])]
    got = torch.cat(outs, 1)                                          # [2, T, V]
    assert torch.allclose(got, hf_logits.expand(2, -1, -1), atol=1e-4)


def test_prefill_then_decode_equals_dense(lm, ids, hf_logits):
    cache = lm.new_cache(40, 4)
    first = lm.step(ids[:, :25], cache)
    rest = torch.cat([lm.step(ids[:, t:t + 1], cache) for t in range(25, 40)], 1)
    assert torch.allclose(torch.cat([first, rest], 1), hf_logits, atol=1e-4)


def _window_mask(T: int, w: int) -> torch.Tensor:
    i = torch.arange(T)
    ok = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < w)
    return torch.zeros(T, T).masked_fill(~ok, float("-inf"))[None, None]


def test_window_cache_after_eviction_equals_masked_hf(lm, ids):
    C, T = 12, ids.shape[1]
    cache = lm.new_cache(C, 0)
    lm.step(ids[:, :C], cache)
    got = torch.cat([lm.step(ids[:, t:t + 1], cache) for t in range(C, T)], 1)
    with torch.no_grad():
        ref = lm.hf(ids, attention_mask=_window_mask(T, C)).logits[:, C:]
        off = lm.hf(ids, attention_mask=_window_mask(T, C - 1)).logits[:, C:]
    assert (got - ref).abs().max() < 2e-2            # fp32 RoPE at other absolute angles
    assert (got - off).abs().max() > 0.5              # an off-by-one window is far away


def test_sinks_change_logits_only_after_eviction(lm, ids):
    cache = lm.new_cache(12, [0, 4])
    lm.step(ids[:, :12].expand(2, -1), cache)
    out = torch.cat([lm.step(ids[:, t:t + 1].expand(2, 1), cache) for t in range(12, 20)], 1)
    assert (out[0] - out[1]).abs().max() > 0.5


def test_refuses_non_llama_models(minilm):
    with pytest.raises(NotImplementedError, match="Llama-style"):
        StreamingLM(minilm)
