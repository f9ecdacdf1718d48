"""Single-needle retrieval: one key-value "needle" hidden in a haystack, queried at the end.

Layout of one row (``K = key_len``, ``M = value_len``)::

    haystack ... [key_1..key_K value_1..value_M] ... haystack   key_1..key_K value_1..value_{M-1}
                 ^ needle at ``start``                           ^ query (last K + M - 1 positions)

- the key tokens are ``K`` distinct ids from ``[0, V // 2)``; value tokens are drawn (with
  replacement) from ``[V // 2, V)``;
- haystack tokens are uniform over the whole vocabulary minus the row's key tokens, so the key
  occurs exactly twice: in the needle and in the query;
- the needle starts at ``round(depth * H)`` (``H`` = haystack length), or uniformly in
  ``[0, H]`` when ``depth`` is None;
- ``targets`` are -100 except the last ``M`` positions: the last key token predicts
  ``value_1``, and so on (teacher forcing), so ``targets[:, -M:] == value``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from interp.errors import InputError
from interp.tasks._sampling import (
    IGNORE_INDEX, TaskBatch, check_int, distinct_rows, generator, sample_avoiding, to_device,
)


@dataclass(frozen=True)
class NeedleConfig:
    """Single-needle retrieval settings (strict config).

    Attributes:
        vocab_size: ``V``; keys from ``[0, V//2)``, values from ``[V//2, V)``.
        seq_len: tokens per row, query included.
        key_len: tokens in the key.
        value_len: tokens in the value (the answer).
        depth: needle position as a share of the haystack (0 = start, 1 = end); None = uniform.
        batch: rows per :meth:`build`.
    """

    vocab_size: int = 256
    seq_len: int = 128
    key_len: int = 1
    value_len: int = 1
    depth: Optional[float] = None
    batch: int = 16

    def __post_init__(self) -> None:
        check_int("vocab_size", self.vocab_size, 2)
        check_int("seq_len", self.seq_len, 1)
        check_int("key_len", self.key_len, 1)
        check_int("value_len", self.value_len, 1)
        check_int("batch", self.batch, 1)
        if self.depth is not None and not (0.0 <= self.depth <= 1.0):
            raise InputError(f"depth must be in [0, 1] or None, got {self.depth!r}")
        if self.key_len > self.vocab_size // 2:
            raise InputError(f"key_len={self.key_len} needs vocab_size >= {2 * self.key_len} "
                             f"(distinct key ids from [0, vocab_size // 2)), got {self.vocab_size}")
        if self.haystack_len < 0:
            raise InputError(
                f"seq_len={self.seq_len} cannot hold the needle ({self.key_len + self.value_len} "
                f"tokens) and the query ({self.key_len + self.value_len - 1} tokens); "
                f"use seq_len >= {self.seq_len - self.haystack_len}"
            )

    @property
    def haystack_len(self) -> int:
        """Haystack tokens per row: ``seq_len - (2K + 2M - 1)``."""
        return self.seq_len - (2 * self.key_len + 2 * self.value_len - 1)

    def build(self, seed: int, device: str | torch.device | None = None) -> TaskBatch:
        """``TaskBatch(inputs [batch, seq_len], targets [batch, seq_len])`` drawn from ``seed``
        (on CPU), on ``device`` (default CPU)."""
        gen = generator(seed)
        b, K, M, V = self.batch, self.key_len, self.value_len, self.vocab_size
        half, hay = V // 2, self.haystack_len
        key = distinct_rows(torch.arange(0, half), b, K, gen)  # [b, K]
        value = torch.randint(half, V, (b, M), generator=gen)  # [b, M]
        needle = torch.cat([key, value], dim=1)  # [b, K + M]
        body_len = hay + K + M
        body = sample_avoiding(V, key, (b, body_len), gen)  # [b, hay + K + M]
        if self.depth is None:
            start = torch.randint(0, hay + 1, (b, 1), generator=gen)
        else:
            start = torch.full((b, 1), round(self.depth * hay), dtype=torch.long)
        body.scatter_(1, start + torch.arange(K + M), needle)
        query = torch.cat([key, value[:, :-1]], dim=1)  # [b, K + M - 1]
        inputs = torch.cat([body, query], dim=1)  # [b, seq_len]
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, self.seq_len - M:] = value
        return to_device(TaskBatch(inputs, targets), device)
