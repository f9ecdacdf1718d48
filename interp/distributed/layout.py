"""How a sequence is split across ranks: layouts, padding, shard and gather.

Architecture
------------
A sequence of ``total_len`` tokens is split over ``world_size`` ranks so that every rank holds
the same number of tokens ``local_len`` (ring attention passes equally sized key/value blocks
around the ring). Two layouts:

- ``"contiguous"``: rank ``r`` holds tokens ``[r * L, (r + 1) * L)``.
- ``"zigzag"``: the sequence is cut into ``2P`` equal chunks of ``C = L / 2`` tokens and rank
  ``r`` holds chunks ``r`` and ``2P - 1 - r`` (in that order). Under a causal mask every rank
  then does the same amount of work (Liu et al. 2023; zhuzilin/ring-flash-attention).

Uneven lengths
--------------
When ``total_len`` is not a multiple of ``P`` (contiguous) or ``2P`` (zigzag), the sequence is
padded *at its end* with zeros up to ``padded_len = P * local_len`` by :func:`shard_sequence`,
so the padding lands in the last chunk (rank ``P - 1`` for contiguous, rank 0 for zigzag).
Ring attention is told ``total_len`` and drops keys at positions ``>= total_len`` (padded
queries produce harmless values that :func:`gather_sequence` cuts off again). With one rank no
padding is added.

Each rank's shard is described by a list of :class:`Chunk` (global start, offset inside the
local tensor, length); ring attention derives its block masks from these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

from interp.errors import InputError

Layout = Literal["contiguous", "zigzag"]
LAYOUTS: tuple[str, ...] = ("contiguous", "zigzag")


@dataclass(frozen=True)
class Chunk:
    """A run of consecutive tokens held by one rank."""

    start: int  # global position of the first token
    offset: int  # index of the first token in the rank's local tensor
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def local_len_for(total_len: int, world_size: int, layout: Layout) -> int:
    """Tokens per rank (after padding) for a sequence of ``total_len`` tokens."""
    _check_layout(layout)
    if world_size == 1:
        return total_len
    chunks_per_rank = 2 if layout == "zigzag" else 1
    return chunks_per_rank * math.ceil(total_len / (chunks_per_rank * world_size))


def chunks_of(rank: int, world_size: int, local_len: int, layout: Layout) -> list[Chunk]:
    """The chunks rank ``rank`` holds when every rank holds ``local_len`` tokens."""
    _check_layout(layout)
    if layout == "contiguous" or world_size == 1:
        return [Chunk(rank * local_len, 0, local_len)]
    if local_len % 2:
        raise InputError(f"zigzag layout needs an even local length, got {local_len}")
    c = local_len // 2
    return [Chunk(rank * c, 0, c), Chunk((2 * world_size - 1 - rank) * c, c, c)]


def shard_sequence(
    x: torch.Tensor, dim: int, rank: int, world_size: int, layout: Layout = "contiguous"
) -> torch.Tensor:
    """The part of the full tensor ``x`` that ``rank`` holds (a new contiguous tensor).

    ``x`` has the whole sequence along ``dim``; the result has ``local_len_for(x.shape[dim],
    world_size, layout)`` tokens along ``dim``, zero-padded at the end of the sequence when the
    length does not divide evenly (see the module docstring).
    """
    if not 0 <= rank < world_size:
        raise InputError(f"rank {rank} outside world of size {world_size}")
    dim = dim % x.dim()
    total = x.shape[dim]
    local = local_len_for(total, world_size, layout)
    padded = local * world_size
    if padded != total:
        pad_shape = list(x.shape)
        pad_shape[dim] = padded - total
        x = torch.cat([x, x.new_zeros(pad_shape)], dim=dim)
    parts = [x.narrow(dim, ch.start, ch.length) for ch in chunks_of(rank, world_size, local, layout)]
    return torch.cat(parts, dim=dim).contiguous()


def group_rank_and_size(group: dist.ProcessGroup | None) -> tuple[int, int]:
    """``(rank, world_size)`` inside ``group``; ``(0, 1)`` when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def gather_sequence(
    x_local: torch.Tensor,
    dim: int,
    group: dist.ProcessGroup | None = None,
    layout: Layout = "contiguous",
    total_len: int | None = None,
) -> torch.Tensor:
    """Reassemble the full sequence from every rank's shard (all_gather), in original order.

    Inverse of :func:`shard_sequence`: every rank gets the full tensor with ``total_len`` tokens
    along ``dim`` (padding cut off; default: keep all ``world_size * local_len``). Not
    differentiable: to back-propagate, shard the upstream gradient with :func:`shard_sequence`.
    """
    rank, world = group_rank_and_size(group)
    dim = dim % x_local.dim()
    local = x_local.shape[dim]
    if world == 1:
        full = x_local
    else:
        x_local = x_local.contiguous()
        pieces = [torch.empty_like(x_local) for _ in range(world)]
        dist.all_gather(pieces, x_local, group=group)
        ordered: list[tuple[int, torch.Tensor]] = []
        for r, piece in enumerate(pieces):
            for ch in chunks_of(r, world, local, layout):
                ordered.append((ch.start, piece.narrow(dim, ch.offset, ch.length)))
        ordered.sort(key=lambda item: item[0])
        full = torch.cat([t for _, t in ordered], dim=dim)
    if total_len is not None:
        if total_len > full.shape[dim]:
            raise InputError(f"total_len {total_len} exceeds gathered length {full.shape[dim]}")
        full = full.narrow(dim, 0, total_len)
    return full
