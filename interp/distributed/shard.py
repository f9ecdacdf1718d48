"""Sharding work across the ranks of a process group, and gathering it back.

Architecture
------------
A sharded run (``interp run EXPERIMENT --nproc N``, or the same command under ``torchrun``)
starts N processes that each run the *whole* experiment code. Work that opts in is split and
gathered with the helpers here; everything else runs on every rank (redundantly, cheaply), and
only rank 0 writes results (:mod:`interp.results` skips its writes on other ranks).

- :func:`rank` / :func:`world_size` / :func:`is_main` read the default process group; without
  one (a plain one-process run) they are ``0`` / ``1`` / ``True``. They never import torch:
  if ``torch.distributed`` was never imported, no group can exist.
- :func:`shard` gives rank ``r`` the items ``r, r + N, r + 2N, ...`` (round robin), so uneven
  costs along a sweep spread over the ranks; :func:`gather` is ``all_gather_object`` (every
  rank gets the list of every rank's object, in rank order); :func:`broadcast` sends rank 0's
  object to all. Collectives: every rank must call them in the same order.
- :func:`map_items` is shard + compute + gather: ``fn(item)`` for every item, results in item
  order on every rank. Before each item the global RNGs are reseeded by :func:`seed_all` from
  ``(seed, name, index)``, so a result does not depend on which rank computed it or what ran
  before it: a sharded run gives the same values as a one-process run.
- :func:`process_group_from_env` joins the group that ``torchrun`` describes in the
  environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).

Objects travel through the process group (pickled), so this works with any backend (gloo on
CPU; NCCL when each rank has its own GPU) and does not need a shared file system.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence, TypeVar

from interp.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

#: Collective timeout of a sharded run: ranks that finish their shard early wait in the gather
#: for the slowest one. A rank that dies does not leave the others waiting this long: the
#: launcher (or torchrun) stops the whole group on the first failure.
RUN_TIMEOUT = timedelta(days=7)


def _dist():
    """``torch.distributed`` if it is imported and a default group is initialised, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def rank() -> int:
    """This process's rank in the default group (0 without a group)."""
    dist = _dist()
    return dist.get_rank() if dist else 0


def world_size() -> int:
    """Number of ranks in the default group (1 without a group)."""
    dist = _dist()
    return dist.get_world_size() if dist else 1


def is_main() -> bool:
    """True on rank 0, the rank that writes results (and in a one-process run)."""
    return rank() == 0


def shard(items: Sequence[T], rank_: int | None = None, world: int | None = None) -> list[T]:
    """This rank's share of ``items``: item ``i`` goes to rank ``i % world``."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if not 0 <= rank_ < world:
        raise InputError(f"rank {rank_} is not in a world of {world}")
    return list(items)[rank_::world]


def unshard(shares: Sequence[Sequence[T]]) -> list[T]:
    """Inverse of :func:`shard`: ``shares[r]`` is rank ``r``'s share; items in original order."""
    world = len(shares)
    n = sum(len(s) for s in shares)
    return [shares[i % world][i // world] for i in range(n)]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank (``[obj]`` alone)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (other ranks' ``obj`` is ignored)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (nothing without a group)."""
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (their ``str``), the same in every process."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch (all devices) with ``seed``."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_all(*parts: Any) -> int:
    """Seed ``random``, numpy and torch (all devices) from :func:`derive_seed`; returns it."""
    seed = derive_seed(*parts)
    seed_everything(seed)
    return seed


def map_items(fn: Callable[[T], R], items: Sequence[T], *, seed: int = 0, name: str = "map",
              wrap: Callable[[Iterator], Iterator] | None = None) -> list[R]:
    """``[fn(item) for item in items]``, computed on this rank's share and gathered.

    Before item ``i`` the global RNGs are seeded from ``(seed, name, i)``, and after the
    gather from ``(seed, name, "end")``, so results and the RNG state afterwards are the same
    on every rank and for any number of ranks. ``wrap`` wraps this rank's iterator (a progress
    bar). Every rank must call this with the same items; results must be picklable.
    """
    items = list(items)
    world, me = world_size(), rank()
    mine = list(range(me, len(items), world))
    it: Iterator[int] = iter(mine)
    if wrap is not None:
        it = wrap(it)
    out = []
    for i in it:
        seed_all(seed, name, i)
        out.append(fn(items[i]))
    results = unshard(gather(out))
    seed_all(seed, name, "end")
    return results


@contextlib.contextmanager
def process_group_from_env(backend: str = "gloo") -> Iterator[bool]:
    """Join the process group described by ``torchrun``'s environment for the ``with`` body.

    Yields True when a group of more than one rank was joined (``WORLD_SIZE`` > 1 and no group
    yet), else False and does nothing. For NCCL each rank uses GPU ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _dist() is not None:
        yield False
        return
    import torch
    import torch.distributed as dist

    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=RUN_TIMEOUT)
    try:
        yield True
    finally:
        dist.destroy_process_group()
