"""Sequence-parallel attention on torch.distributed.

Modules (ops -> communication -> algorithm -> launcher):

- :mod:`~interp.distributed.blocks` -- per-block attention with log-sum-exp, its exact
  backward, and the log-sum-exp merge (pure tensor ops; explicit reference + fused CPU kernel).
- :mod:`~interp.distributed.layout` -- contiguous / zigzag sequence layouts, padding for uneven
  lengths, :func:`shard_sequence` and :func:`gather_sequence`.
- :mod:`~interp.distributed.comm` -- ring neighbours and non-blocking point-to-point exchange.
- :mod:`~interp.distributed.ring` -- :func:`ring_attention` (forward + backward autograd function).
- :mod:`~interp.distributed.launch` -- :func:`run_distributed`, start N local processes in a group.
- :mod:`~interp.distributed.shard` -- sharded experiment runs: rank / world size, round-robin
  :func:`~interp.distributed.shard.shard`, :func:`~interp.distributed.shard.gather`,
  per-item seeding (``interp run --nproc N``; :class:`interp.results.Sweep` uses it).
"""
from __future__ import annotations

from interp.distributed.comm import default_backend
from interp.distributed.launch import DistributedError, run_distributed
from interp.distributed.layout import gather_sequence, local_len_for, shard_sequence
from interp.distributed.ring import ring_attention

__all__ = [
    "ring_attention",
    "shard_sequence",
    "gather_sequence",
    "local_len_for",
    "run_distributed",
    "DistributedError",
    "default_backend",
]
