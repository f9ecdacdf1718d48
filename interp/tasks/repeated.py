"""Repeated random tokens: the induction-head dataset (Olsson et al. 2022).

A row is an optional BOS token followed by a random segment written ``n_repeats`` times::

    [BOS] x_1 ... x_L  x_1 ... x_L  ...        shape [batch, (1 if BOS) + L * n_repeats]

Every token after the first copy is predictable by an induction head (attend to the token
after the previous occurrence of the current token, copy it). :func:`repeated_tokens` builds
such a batch; :class:`InductionMixture` mixes repeated rows with plain random rows, the
training data for a small attention-only model that forms induction heads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Optional

import torch
from torch import Tensor

from interp.errors import InputError
from interp.tasks._sampling import allowed_ids, check_int, generator, sample_from, to_device


def _token_ids(vocab_size: int, low: int, exclude: Iterable[int] | None,
               bos_token: int | None) -> Tensor:
    check_int("vocab_size", vocab_size, 1)
    check_int("low", low, 0)
    if low >= vocab_size:
        raise InputError(f"low ({low}) must be below vocab_size ({vocab_size})")
    if bos_token is not None and not (isinstance(bos_token, int) and 0 <= bos_token < vocab_size):
        raise InputError(f"bos_token must be an id in [0, {vocab_size}), got {bos_token!r}")
    excl = set(exclude or ())
    if bos_token is not None:
        excl.add(bos_token)  # the BOS never appears inside a segment
    ids = allowed_ids(vocab_size, low, excl)
    if ids.numel() == 0:
        raise InputError(
            f"no token ids left to draw from: vocab_size={vocab_size}, low={low}, "
            f"exclude={sorted(excl)}; widen the vocabulary or exclude fewer ids"
        )
    return ids


def repeated_tokens(
    batch: int,
    seg_len: int,
    n_repeats: int = 2,
    vocab_size: int | None = None,
    *,
    bos_token: int | None = None,
    seed: int = 0,
    low: int = 0,
    exclude: Iterable[int] | None = None,
    generator_: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> Tensor:
    """A random segment repeated ``n_repeats`` times, after an optional BOS.

    Args:
        batch: rows.
        seg_len: segment length ``L`` (>= 1).
        n_repeats: copies of the segment (>= 1).
        vocab_size: token ids are drawn from ``[low, vocab_size)`` (required).
        bos_token: if given, every row starts with it; it is never drawn inside a segment.
        seed: seed of the CPU generator (ignored when ``generator_`` is given).
        low: smallest id drawn (use it to keep special ids ``< low`` out).
        exclude: further ids never drawn (e.g. a tokenizer's special tokens).
        generator_: draw from this generator instead of a fresh one seeded with ``seed``
            (a CPU generator: tokens are drawn on CPU).
        device: where the result goes (default CPU).

    Returns:
        ``LongTensor [batch, (1 if bos_token is not None else 0) + seg_len * n_repeats]``.
        Copies are identical: ``out[:, o + i*L : o + (i+1)*L]`` is the same for every ``i``
        (``o`` = 1 with BOS, else 0).
    """
    if vocab_size is None:
        raise InputError("repeated_tokens needs vocab_size (ids are drawn from [low, vocab_size))")
    check_int("batch", batch, 1)
    check_int("seg_len", seg_len, 1)
    check_int("n_repeats", n_repeats, 1)
    ids = _token_ids(vocab_size, low, exclude, bos_token)
    gen = generator_ if generator_ is not None else generator(seed)
    seg = sample_from(ids, (batch, seg_len), gen)  # [batch, L]
    out = seg.repeat(1, n_repeats)  # [batch, L * n_repeats]
    if bos_token is not None:
        out = torch.cat([torch.full((batch, 1), bos_token, dtype=torch.long), out], dim=1)
    return to_device(out, device)


class MixtureBatch(NamedTuple):
    """A batch of :class:`InductionMixture`.

    Attributes:
        tokens: ``LongTensor [batch, seq_len]``.
        repeated: ``BoolTensor [batch]``, True for rows holding a repeated segment.
    """

    tokens: Tensor
    repeated: Tensor


@dataclass(frozen=True)
class InductionMixture:
    """Training data for toy induction models: repeated random segments mixed with random tokens.

    Each row has ``seq_len = (1 if bos_token is not None) + seg_len * n_repeats`` tokens. With
    probability ``repeat_share`` a row is a repeated segment (:func:`repeated_tokens`), else
    all of it (after BOS) is fresh random tokens, so the model must also learn ordinary
    unigram prediction and cannot assume every sequence repeats.

    Attributes:
        vocab_size: ids drawn from ``[low, vocab_size)`` minus ``exclude`` and the BOS.
        seg_len: segment length.
        n_repeats: copies per repeated row.
        batch: rows per batch.
        repeat_share: share of repeated rows, in [0, 1].
        bos_token: optional BOS id at position 0 of every row.
        low: smallest id drawn.
        exclude: ids never drawn.
    """

    vocab_size: int
    seg_len: int = 25
    n_repeats: int = 2
    batch: int = 32
    repeat_share: float = 0.5
    bos_token: Optional[int] = None
    low: int = 0
    exclude: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_int("batch", self.batch, 1)
        check_int("seg_len", self.seg_len, 1)
        check_int("n_repeats", self.n_repeats, 1)
        if not (0.0 <= self.repeat_share <= 1.0):
            raise InputError(f"repeat_share must be in [0, 1], got {self.repeat_share!r}")
        _token_ids(self.vocab_size, self.low, self.exclude, self.bos_token)

    @property
    def seq_len(self) -> int:
        return (self.bos_token is not None) + self.seg_len * self.n_repeats

    def build(self, seed: int, device: str | torch.device | None = None) -> MixtureBatch:
        """One batch: ``tokens [batch, seq_len]``, ``repeated [batch]``; same seed, same batch
        (drawn on CPU), on ``device`` (default CPU)."""
        gen = generator(seed)
        rep = repeated_tokens(self.batch, self.seg_len, self.n_repeats, self.vocab_size,
                              bos_token=self.bos_token, low=self.low, exclude=self.exclude,
                              generator_=gen)
        ids = _token_ids(self.vocab_size, self.low, self.exclude, self.bos_token)
        body = sample_from(ids, (self.batch, self.seg_len * self.n_repeats), gen)
        rand = rep.clone()
        rand[:, rep.shape[1] - body.shape[1]:] = body
        repeated = torch.rand(self.batch, generator=gen) < self.repeat_share  # [batch]
        tokens = torch.where(repeated[:, None], rep, rand)
        return to_device(MixtureBatch(tokens, repeated), device)

    def batch_fn(self, seed: int = 0, device: str | torch.device | None = None
                 ) -> Callable[[int], Tensor]:
        """``step -> tokens [batch, seq_len]`` on ``device`` (batch ``step`` uses seed
        ``seed * 1_000_003 + step``), the form ``interp.models.toy.train_toy`` takes."""
        check_int("seed", seed, 0)
        return lambda step: self.build(seed * 1_000_003 + step, device=device).tokens
