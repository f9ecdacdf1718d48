"""Single-process tests: block kernels, log-sum-exp merge, layouts, and the no-group fallback."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interp.distributed import gather_sequence, local_len_for, ring_attention, shard_sequence
from interp.distributed.blocks import block_backward, block_forward, merge_block
from interp.distributed.layout import chunks_of
from interp.distributed.ring import block_plan
from tests.distributed.reference import dense_attention, dense_with_grads

TOL = 1e-5


def _qkv(heads, kv_heads, lq, lk, d=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, heads, lq, d, generator=g, dtype=dtype),
        torch.randn(2, kv_heads, lk, d, generator=g, dtype=dtype),
        torch.randn(2, kv_heads, lk, d, generator=g, dtype=dtype),
        torch.randn(2, heads, lq, d, generator=g, dtype=dtype),
    )


def _block_reference(q, k, v, mask, scale):
    """Explicit float64 block attention with a top-left causal mask, plus lse."""
    group = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    s = q.double() @ k.transpose(-1, -2) * scale
    if mask == "causal":
        keep = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


@pytest.mark.parametrize("impl", ["explicit", "fused"])
@pytest.mark.parametrize("mask", ["full", "causal"])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
def test_block_forward_backward(impl, mask, heads, kv_heads):
    q, k, v, dout = _qkv(heads, kv_heads, 12, 9)
    scale = 0.37
    out, lse = block_forward(q, k, v, mask, scale, impl)
    ref_out, ref_lse = _block_reference(q, k, v, mask, scale)
    assert out.dtype == torch.float32 and lse.shape == (2, heads, 12)
    assert (out.double() - ref_out).abs().max() <= TOL
    assert (lse.double() - ref_lse).abs().max() <= TOL

    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    _block_reference(qd, kd, vd, mask, scale)[0].backward(dout.double())
    grads = block_backward(dout, q, k, v, out, lse, mask, scale, impl)
    for name, g, r in zip(("dq", "dk", "dv"), grads, (qd.grad, kd.grad, vd.grad)):
        assert g.shape == r.shape, name
        assert (g.double() - r).abs().max() <= TOL, name


@pytest.mark.parametrize("impl", ["explicit", "fused"])
def test_split_and_merge_equals_whole(impl):
    """Attention to keys [0, 20) == LSE-merge of attention to [0, 7) and [7, 20), and the
    per-block backward with the merged (global) out/lse sums to the whole gradient."""
    q, k, v, dout = _qkv(4, 2, 10, 20, seed=3)
    scale = 0.25
    whole, whole_lse = block_forward(q, k, v, "full", scale, impl)
    out, lse = block_forward(q, k[:, :, :7], v[:, :, :7], "full", scale, impl)
    out_b, lse_b = block_forward(q, k[:, :, 7:], v[:, :, 7:], "full", scale, impl)
    merge_block(out, lse, out_b, lse_b)
    assert (out - whole).abs().max() <= TOL
    assert (lse - whole_lse).abs().max() <= TOL
    g1 = block_backward(dout, q, k[:, :, :7], v[:, :, :7], out, lse, "full", scale, impl)
    g2 = block_backward(dout, q, k[:, :, 7:], v[:, :, 7:], out, lse, "full", scale, impl)
    gw = block_backward(dout, q, k, v, whole, whole_lse, "full", scale, impl)
    assert (g1[0] + g2[0] - gw[0]).abs().max() <= TOL
    assert (torch.cat([g1[1], g2[1]], 2) - gw[1]).abs().max() <= TOL
    assert (torch.cat([g1[2], g2[2]], 2) - gw[2]).abs().max() <= TOL


def test_explicit_float64_stays_float64():
    q, k, v, _ = _qkv(2, 1, 5, 5, dtype=torch.float64)
    out, lse = block_forward(q, k, v, "causal", 0.5, "auto")
    assert out.dtype == lse.dtype == torch.float64


@given(
    n=st.integers(1, 70),
    world=st.integers(1, 6),
    layout=st.sampled_from(["contiguous", "zigzag"]),
)
@settings(max_examples=150, deadline=None)
def test_shards_partition_the_sequence(n, world, layout):
    """Every position appears in exactly one shard, equal local lengths, padding only at the end,
    and concatenating the shards' chunks in position order restores the input exactly."""
    x = torch.arange(n, dtype=torch.float64) + 1  # padding is 0
    local = local_len_for(n, world, layout)
    pieces = []
    for r in range(world):
        shard = shard_sequence(x, 0, r, world, layout)
        assert shard.shape == (local,)
        for ch in chunks_of(r, world, local, layout):
            pieces.append((ch.start, shard[ch.offset : ch.offset + ch.length]))
    full = torch.cat([p for _, p in sorted(pieces, key=lambda t: t[0])])
    assert full.shape[0] == world * local and full.shape[0] - n < (2 if layout == "zigzag" else 1) * world
    assert torch.equal(full[:n], x)
    assert not full[n:].any()


def test_zigzag_balances_causal_work():
    """Under a causal mask every rank computes the same number of (query, key) pairs."""
    world, local = 4, 8
    work = []
    for r in range(world):
        qc = chunks_of(r, world, local, "zigzag")
        total = 0
        for src in range(world):
            for i, kc, mask in block_plan(qc, chunks_of(src, world, local, "zigzag"), True, 32):
                n = qc[i].length
                total += n * kc.length if mask == "full" else n * (n + 1) // 2
        work.append(total)
    assert len(set(work)) == 1, work


def test_no_process_group_falls_back_to_dense():
    q, k, v, dout = _qkv(4, 2, 13, 13, seed=5)
    for causal in (True, False):
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
        out = ring_attention(qg, kg, vg, causal=causal, layout="zigzag")
        out.backward(dout)
        ref = dense_with_grads(q, k, v, dout, causal)
        for name, a, r in zip(("out", "dq", "dk", "dv"), (out, qg.grad, kg.grad, vg.grad), ref):
            assert (a.detach().double() - r).abs().max() <= TOL, name
    assert torch.equal(gather_sequence(q, 2, None, "zigzag", 13), q)


def test_fallback_drops_padded_keys():
    q, k, v, _ = _qkv(2, 2, 6, 6, seed=7)
    out = ring_attention(q, k, v, causal=False, total_len=4)
    ref = dense_attention(q[:, :, :4].double(), k[:, :, :4].double(), v[:, :, :4].double(), False)
    assert (out[:, :, :4].double() - ref).abs().max() <= TOL


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"layout": "striped"}, "layout"),
        ({"total_len": 0}, "total_len"),
    ],
)
def test_bad_arguments(kwargs, match):
    q, k, v, _ = _qkv(4, 2, 4, 4)
    with pytest.raises(ValueError, match=match):
        ring_attention(q, k, v, **kwargs)
    with pytest.raises(ValueError, match="multiple"):
        ring_attention(q, k[:, :1].expand(2, 3, 4, 16), v[:, :1].expand(2, 3, 4, 16))


def test_scale_argument():
    q, k, v, _ = _qkv(2, 2, 5, 5)
    out = ring_attention(q, k, v, causal=True, scale=0.1)
    ref = dense_attention(q.double(), k.double(), v.double(), True, scale=0.1)
    assert (out.double() - ref).abs().max() <= TOL
    assert not math.isclose(0.1, 1 / math.sqrt(16))
