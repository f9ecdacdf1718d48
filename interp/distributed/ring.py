"""Ring attention over torch.distributed (Liu et al. 2023, "Ring Attention with Blockwise
Transformers for Near-Infinite Context").

Architecture
------------
Every rank of a process group holds a shard of the sequence (``layout.py``: contiguous or
zigzag, padded at the end for uneven lengths) of queries, keys and values. Ring attention
computes exact softmax attention of the local queries to the *whole* sequence without any
rank ever holding more than two key/value shards -- of one kv head: the ring makes one lap
per kv head (heads are independent), so only ``2 / kv_heads`` of a shard is in flight:

Forward (``P`` steps). At step ``t`` rank ``r`` holds the key/value shard of rank
``src = (r - t) mod P``. It first posts the send of that shard to ``r + 1`` and the receive of
the next one from ``r - 1`` (``comm.RingComm.exchange``, non-blocking), then attends its query
chunks to the shard's key chunks (``blocks.block_forward``), merges each block result into a
float32 running ``(out, lse)`` with the log-sum-exp update of ``blocks.merge_block``, and only
then waits for the incoming shard: communication overlaps compute.

Masks come from global token positions (``layout.chunks_of``). For every (query chunk, key
chunk) pair under ``causal=True``: keys entirely after the queries -> skipped; keys entirely
at or before the first query -> no mask; the same chunk (the diagonal) -> causal mask. Keys at
positions ``>= total_len`` (padding) are trimmed off the key chunk. With the zigzag layout this
gives every rank the same work: at step ``t > 0`` either both query chunks see the first key
chunk (``src < r``) or the second query chunk sees both key chunks (``src > r``).

Backward (FlashAttention-style, exact). The autograd function saves only q, k, v, the merged
output and ``lse``. Backward rotates k/v around the ring again; for every visible block it
recomputes the probabilities from the saved global ``lse`` (``blocks.block_backward``) and adds
the block's ``dq`` locally, while ``dk``/``dv`` accumulators travel *with* their key block: after
adding its share a rank passes the accumulator on to ``r + 1``; one last hop after step
``P - 1`` returns every accumulator, complete, to the rank that owns those keys.

With no initialised process group, or a group of one rank, :func:`ring_attention` is plain
dense attention (torch SDPA) on the local tensors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from interp.distributed.blocks import (
    BlockImpl,
    MaskKind,
    acc_dtype,
    block_backward,
    block_forward,
    merge_block,
)
from interp.distributed.comm import RingComm
from interp.distributed.layout import LAYOUTS, Chunk, Layout, chunks_of, group_rank_and_size
from interp.errors import InputError

__all__ = ["ring_attention", "block_plan"]


def block_plan(
    q_chunks: list[Chunk], k_chunks: list[Chunk], causal: bool, total_len: int
) -> list[tuple[int, Chunk, MaskKind]]:
    """Which (query chunk index, trimmed key chunk, mask) pairs must be computed.

    Key tokens at global positions ``>= total_len`` (padding) are trimmed off; pairs with no
    visible key are left out.
    """
    plan: list[tuple[int, Chunk, MaskKind]] = []
    for i, qc in enumerate(q_chunks):
        for kc in k_chunks:
            k_len = min(kc.length, total_len - kc.start)
            if k_len <= 0:
                continue
            kt = Chunk(kc.start, kc.offset, k_len)
            if not causal or kt.end - 1 <= qc.start:
                plan.append((i, kt, "full"))
            elif kt.start > qc.end - 1:
                continue
            elif kt.start == qc.start:
                plan.append((i, kt, "causal"))
            else:  # cannot happen for the layouts in layout.py (chunks are aligned)
                raise RuntimeError(f"unaligned chunks {qc} and {kt}: no block mask for them")
    return plan


def _seq(x: torch.Tensor, chunk: Chunk, length: int | None = None) -> torch.Tensor:
    """The tokens of ``chunk`` along the sequence dim (dim 2) of a local tensor (a view)."""
    return x.narrow(2, chunk.offset, chunk.length if length is None else length)


def _heads(x: torch.Tensor, j: int, group: int) -> torch.Tensor:
    """Query heads ``[j * group, (j + 1) * group)`` of ``x`` ``[b, heads, n, d]`` (a view)."""
    return x.narrow(1, j * group, group)


def _forward_pass(comm, q, k, v, out, lse, plan_for, impl, scale):
    """One lap of the ring for one kv head: ``q``/``out``/``lse`` are views of that head's
    query heads; ``k``/``v`` ``[b, 1, L, d]``. Merges every visible block into ``out``/``lse``."""
    seen = set()
    k_cur, v_cur = k, v
    for step in range(comm.world_size):
        pending = comm.exchange([k_cur, v_cur]) if step + 1 < comm.world_size else None
        for i, qc, kc, mask in plan_for(step):
            out_b, lse_b = block_forward(
                _seq(q, qc), _seq(k_cur, kc), _seq(v_cur, kc), mask, scale, impl
            )
            out_s, lse_s = _seq(out, qc), lse.narrow(2, qc.offset, qc.length)
            if i in seen:
                merge_block(out_s, lse_s, out_b, lse_b)
            else:
                out_s.copy_(out_b)
                lse_s.copy_(lse_b)
                seen.add(i)
            del out_b, lse_b
        if pending is not None:
            k_cur = v_cur = None  # the old shard is freed once its send completed
            k_cur, v_cur = pending.wait()


def _backward_pass(comm, dout, q, k, v, out, lse, dq, plan_for, impl, scale, acc):
    """One lap of the ring for one kv head (views as in :func:`_forward_pass`); adds into
    ``dq`` and returns this rank's complete ``(dk, dv)`` ``[b, 1, L, d]``."""
    k_cur, v_cur = k, v
    dkv_pending = None
    for step in range(comm.world_size):
        kv_pending = comm.exchange([k_cur, v_cur]) if step + 1 < comm.world_size else None
        dk_b = torch.zeros(k.shape, dtype=acc, device=k.device)  # this block's dk
        dv_b = torch.zeros(v.shape, dtype=acc, device=v.device)
        for _, qc, kc, mask in plan_for(step):
            gq, gk, gv = block_backward(
                _seq(dout, qc), _seq(q, qc), _seq(k_cur, kc), _seq(v_cur, kc),
                _seq(out, qc), lse.narrow(2, qc.offset, qc.length), mask, scale, impl,
            )
            _seq(dq, qc).add_(gq)
            _seq(dk_b, kc).add_(gk)
            _seq(dv_b, kc).add_(gv)
            del gq, gk, gv
        if dkv_pending is not None:  # shares of earlier ranks for this same key block
            dk_in, dv_in = dkv_pending.wait()
            dk_b.add_(dk_in)
            dv_b.add_(dv_in)
            del dk_in, dv_in
        dkv_pending = comm.exchange([dk_b, dv_b])
        del dk_b, dv_b
        if kv_pending is not None:
            k_cur = v_cur = None
            k_cur, v_cur = kv_pending.wait()
    return dkv_pending.wait()  # our own key block, complete after a full lap


def _planner(comm, local, layout, causal, total_len):
    """``plan_for(step)`` -> ``[(query chunk index, query chunk, key chunk, mask)]``."""
    rank, world = comm.rank, comm.world_size
    q_chunks = chunks_of(rank, world, local, layout)

    def plan_for(step: int):
        src = (rank - step) % world
        plan = block_plan(q_chunks, chunks_of(src, world, local, layout), causal, total_len)
        return [(i, q_chunks[i], kc, mask) for i, kc, mask in plan]

    return plan_for


class _RingAttention(torch.autograd.Function):
    """One ring lap per kv head: only one kv head's key/value blocks are in flight at a time
    (``2 / kv_heads`` of a shard per buffer instead of a whole shard), which keeps the
    per-rank peak memory near ``1/P`` of dense attention also without GQA."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, layout, total_len, group, impl):
        comm = RingComm(group)
        b, h, local, _ = q.shape
        kvh = k.shape[1]
        g = h // kvh
        acc = acc_dtype(q.dtype)
        plan_for = _planner(comm, local, layout, causal, total_len)
        out = torch.zeros(b, h, local, v.shape[-1], dtype=acc, device=q.device)  # [b, h, L, d]
        lse = torch.full((b, h, local), float("-inf"), dtype=acc, device=q.device)  # [b, h, L]
        for j in range(kvh):
            _forward_pass(comm, _heads(q, j, g), k.narrow(1, j, 1), v.narrow(1, j, 1),
                          _heads(out, j, g), _heads(lse, j, g), plan_for, impl, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.cfg = (causal, scale, layout, total_len, group, impl)
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        causal, scale, layout, total_len, group, impl = ctx.cfg
        comm = RingComm(group)
        local = q.shape[2]
        kvh = k.shape[1]
        g = q.shape[1] // kvh
        acc = acc_dtype(q.dtype)
        plan_for = _planner(comm, local, layout, causal, total_len)
        dq = torch.zeros(q.shape, dtype=acc, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        for j in range(kvh):
            dk_j, dv_j = _backward_pass(
                comm, _heads(dout, j, g), _heads(q, j, g), k.narrow(1, j, 1), v.narrow(1, j, 1),
                _heads(out, j, g), _heads(lse, j, g), _heads(dq, j, g), plan_for, impl, scale, acc)
            dk.narrow(1, j, 1).copy_(dk_j)
            dv.narrow(1, j, 1).copy_(dv_j)
        return dq.to(q.dtype), dk, dv, None, None, None, None, None, None


def _dense_attention(q, k, v, causal, scale, total_len):
    """Single-process fallback: SDPA on the local tensors (padded keys dropped)."""
    if total_len < k.shape[2]:
        k, v = k[:, :, :total_len], v[:, :, :total_len]
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    group=None,
    layout: Layout = "contiguous",
    scale: float | None = None,
    *,
    total_len: int | None = None,
    block_impl: BlockImpl = "auto",
) -> torch.Tensor:
    """Exact softmax attention over a sequence sharded across the ranks of ``group``.

    Args:
        q: ``[batch, heads, local_seq, d_head]`` -- this rank's queries.
        k, v: ``[batch, kv_heads, local_seq, d_head]`` -- this rank's keys/values; ``heads`` must
            be a multiple of ``kv_heads`` (GQA: query head ``h`` uses kv head
            ``h // (heads // kv_heads)``).
        causal: causal mask over *global* positions.
        group: process group (default: the world group). No initialised group, or one rank:
            plain dense attention on the local tensors.
        layout: ``"contiguous"`` or ``"zigzag"`` (see :mod:`interp.distributed.layout`); every
            rank must hold the same ``local_seq`` (even for zigzag).
        scale: score scale, default ``1 / sqrt(d_head)``.
        total_len: true sequence length when the shards were zero-padded at the end
            (:func:`~interp.distributed.layout.shard_sequence` of an uneven length); keys at
            positions ``>= total_len`` are ignored. Default: ``world_size * local_seq``.
        block_impl: per-block kernel, ``"auto"`` | ``"fused"`` | ``"explicit"`` (``blocks.py``).

    Returns:
        ``[batch, heads, local_seq, d_head]`` in ``q.dtype`` (accumulated in float32), this
        rank's rows of the attention output. Differentiable in q, k and v.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise InputError("q, k, v must be [batch, heads, seq, d_head]")
    if k.shape[:3] != v.shape[:3]:
        raise InputError(f"k {tuple(k.shape)} and v {tuple(v.shape)} disagree")
    b, h, local, d = q.shape
    if k.shape[0] != b or k.shape[2] != local or k.shape[3] != d:
        raise InputError(
            f"k {tuple(k.shape)} must be [batch={b}, kv_heads, local_seq={local}, d_head={d}]"
        )
    if h % k.shape[1]:
        raise InputError(f"heads ({h}) must be a multiple of kv_heads ({k.shape[1]})")
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    _, world = group_rank_and_size(group)
    full_len = world * local
    total_len = full_len if total_len is None else int(total_len)
    if not 1 <= total_len <= full_len:
        raise InputError(f"total_len must be in [1, {full_len}], got {total_len}")
    if world == 1:
        return _dense_attention(q, k, v, causal, scale, total_len)
    return _RingAttention.apply(q, k, v, causal, scale, layout, total_len, group, block_impl)
