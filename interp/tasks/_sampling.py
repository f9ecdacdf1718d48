"""Sampling helpers shared by the synthetic tasks (internal).

Every task draws from a ``torch.Generator`` seeded explicitly, on CPU, so a seed gives the same
tokens on every machine; :func:`to_device` then moves the finished batch where it is used. ``IGNORE_INDEX`` (-100, the ``torch.nn.functional.cross_entropy``
default) marks target positions that carry no label.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

import torch
from torch import Tensor

from interp.errors import InputError

#: Target value for positions without a label (what ``F.cross_entropy`` ignores by default).
IGNORE_INDEX = -100


class TaskBatch(NamedTuple):
    """A batch of a next-token task.

    Attributes:
        inputs: ``LongTensor [batch, seq]`` token ids fed to the model.
        targets: ``LongTensor [batch, seq]``; ``targets[b, t]`` is the token the model should
            predict after reading ``inputs[b, :t + 1]``, or ``IGNORE_INDEX`` (-100) where
            position ``t`` is not scored.
    """

    inputs: Tensor
    targets: Tensor


def to_device(batch, device: str | torch.device | None):
    """``batch`` (a tensor, or a NamedTuple of tensors such as :class:`TaskBatch`) on
    ``device``; unchanged when ``device`` is None. Drawing stays on CPU (same numbers
    everywhere); only the result moves."""
    if device is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(device)
    return type(batch)(*(t.to(device) if isinstance(t, Tensor) else t for t in batch))


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (an int >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` if it is an int >= ``minimum``, else an ``InputError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def allowed_ids(vocab_size: int, low: int = 0, exclude: Iterable[int] | None = None) -> Tensor:
    """``LongTensor [n_allowed]``: ids in ``[low, vocab_size)`` not in ``exclude``, ascending."""
    ids = torch.arange(low, vocab_size)
    if exclude:
        ex = torch.tensor(sorted({int(e) for e in exclude}), dtype=torch.long)
        ids = ids[~torch.isin(ids, ex)]
    return ids


def sample_from(ids: Tensor, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Uniform draws (with replacement) from the 1-D id tensor ``ids``; returns ``shape``."""
    idx = torch.randint(0, ids.numel(), shape, generator=gen)
    return ids[idx]


def distinct_rows(ids: Tensor, batch: int, k: int, gen: torch.Generator) -> Tensor:
    """``[batch, k]``: per row, ``k`` distinct ids drawn uniformly from ``ids`` (no replacement)."""
    if k > ids.numel():
        raise InputError(f"cannot draw {k} distinct ids from {ids.numel()}")
    order = torch.rand(batch, ids.numel(), generator=gen).argsort(dim=1)[:, :k]
    return ids[order]


def sample_avoiding(
    vocab_size: int, avoid: Tensor, shape: tuple[int, int], gen: torch.Generator
) -> Tensor:
    """``[batch, m]`` uniform draws from ``[0, vocab_size)`` minus each row's ``avoid [batch, k]``.

    The ids in each row of ``avoid`` must be distinct. Draw ``r`` uniformly from
    ``[0, vocab_size - k)`` and map it to the ``r``-th id not in the row's ``avoid`` set:
    with ``s`` the sorted avoided ids, ``id = r + #{j : s_j - j <= r}``.
    """
    batch, m = shape
    k = avoid.shape[1]
    r = torch.randint(0, vocab_size - k, (batch, m), generator=gen)
    s = avoid.sort(dim=1).values - torch.arange(k)  # non-decreasing per row
    return r + torch.searchsorted(s.contiguous(), r, right=True)
