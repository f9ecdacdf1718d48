"""Functions run inside the processes that the distributed tests start (module-level, so that
``run_distributed`` can pickle them by reference). They return tensors; all checking happens in
the test process against references computed there."""
from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

from interp.distributed import gather_sequence, ring_attention, shard_sequence


def ring_cases(rank: int, world_size: int, cases: list[dict]) -> list[list[torch.Tensor]] | None:
    """For each case: shard q/k/v/dout, run ring attention forward + backward, gather
    ``[out, dq, dk, dv]`` back to full length. Rank 0 returns the list; others None."""
    torch.set_num_threads(1)
    gathered = []
    for case in cases:
        layout, n = case["layout"], case["q"].shape[2]
        q, k, v = (
            shard_sequence(case[name], 2, rank, world_size, layout).requires_grad_()
            for name in ("q", "k", "v")
        )
        out = ring_attention(
            q, k, v, causal=case["causal"], layout=layout, total_len=n,
            block_impl=case["block_impl"],
        )
        out.backward(shard_sequence(case["dout"], 2, rank, world_size, layout))
        gathered.append(
            [gather_sequence(t, 2, None, layout, n) for t in (out.detach(), q.grad, k.grad, v.grad)]
        )
    return gathered if rank == 0 else None


def shard_gather_roundtrip(rank: int, world_size: int, tensors: list[tuple]) -> list[torch.Tensor]:
    """``gather_sequence(shard_sequence(x))`` for each ``(x, dim, layout)``, on every rank."""
    torch.set_num_threads(1)
    return [
        gather_sequence(shard_sequence(x, dim, rank, world_size, layout), dim, None, layout, x.shape[dim])
        for x, dim, layout in tensors
    ]


def echo_rank(rank: int, world_size: int, payload):
    dist.barrier()
    return {"rank": rank, "world_size": world_size, "payload": payload}


def fail_on_rank(rank: int, world_size: int, bad_rank: int):
    """``bad_rank`` raises; the others wait in a collective that can never complete."""
    if rank == bad_rank:
        raise ValueError(f"deliberate failure on rank {rank}")
    dist.barrier()
    return rank


def die_on_rank(rank: int, world_size: int, bad_rank: int):
    """``bad_rank`` exits abruptly without reporting."""
    if rank == bad_rank:
        os._exit(3)
    dist.barrier()
    return rank


def sleep_forever(rank: int, world_size: int):
    time.sleep(3600)


def world_one(rank: int, world_size: int, q, k, v):
    """Ring attention inside a one-rank group (must be plain attention)."""
    q, k, v = (x.clone().requires_grad_() for x in (q, k, v))
    out = ring_attention(q, k, v, causal=True)
    out.sum().backward()
    return [out.detach(), q.grad, k.grad, v.grad]


def sweep_in_group(rank: int, world_size: int, out_dir: str, n_points: int):
    """A :class:`Sweep` in a group: which points this rank got, and the gathered table."""
    from interp.results import Sweep, atomic_write_text

    atomic_write_text(f"{out_dir}/written_by_rank{rank}.txt", "x")   # only rank 0 writes
    sweep = Sweep(out_dir, "s", seed=5)
    mine = []
    for point in sweep.pending([{"i": i} for i in range(n_points)]):
        mine.append(point["i"])
        sweep.record(point, {"value": point["i"] + float(torch.rand(()))})
    table = sweep.table()
    return {"mine": mine, "table": table, "after": float(torch.rand(()))}


def map_in_group(rank: int, world_size: int, n_items: int):
    from interp.distributed.shard import map_items

    return map_items(lambda i: (i, rank, float(torch.randn(()))), range(n_items), seed=2)
