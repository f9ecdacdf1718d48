"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology").

Layout of one row (``n = num_kv_pairs``, ``V = vocab_size``)::

    position   0   1   2   3  ...  2n-2  2n-1 | 2n ...................... seq_len-1
    token      k1  v1  k2  v2 ...  kn    vn   | filler, with each k_i placed once
                                              |   at a query position q_i

- keys are ``n`` distinct ids from the lower half ``[0, V // 2)``, values ``n`` distinct ids
  from the upper half ``[V // 2, V)``;
- the queries are the same keys in a shuffled order; the query slots are ``n`` distinct
  offsets ``g`` into the ``seq_len - 2n`` positions after the pairs, drawn without replacement
  with probability proportional to ``power_a * (g + 1) ** (power_a - 1)`` (a power law: small
  ``power_a`` puts queries close to the pairs; Zoology uses ``power_a = 0.01``);
- every other position after the pairs is filler drawn uniformly from the whole vocabulary
  minus that row's keys, so a key appears after the pairs exactly where it is queried;
- ``targets[b, t]`` is the value of key ``inputs[b, t]`` at the query positions and -100
  (``IGNORE_INDEX``) everywhere else: the model reads the query key and must predict its value.

Accuracy is measured over the positions where ``targets != -100``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import InputError
from interp.tasks._sampling import (
    IGNORE_INDEX, TaskBatch, check_int, distinct_rows, generator, sample_avoiding, to_device,
)


def check_mqar(vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float) -> None:
    """Raise ``InputError`` (saying what to change) unless the settings make a valid MQAR task."""
    check_int("vocab_size", vocab_size, 2)
    check_int("seq_len", seq_len, 3)
    check_int("num_kv_pairs", num_kv_pairs, 1)
    if not (isinstance(power_a, (int, float)) and 0 < power_a <= 1):
        raise InputError(f"power_a must be in (0, 1], got {power_a!r}")
    if 3 * num_kv_pairs > seq_len:
        raise InputError(
            f"{num_kv_pairs} key-value pairs need 2*{num_kv_pairs} context positions plus "
            f"{num_kv_pairs} query positions = {3 * num_kv_pairs} > seq_len={seq_len}; "
            "use fewer pairs or a longer sequence"
        )
    half = vocab_size // 2
    if half < num_kv_pairs or vocab_size - half < num_kv_pairs:
        raise InputError(
            f"vocab_size={vocab_size} is too small for {num_kv_pairs} distinct keys and values "
            f"(keys come from [0, {half}), values from [{half}, {vocab_size})); "
            f"use vocab_size >= {2 * num_kv_pairs}"
        )


def mqar(
    batch: int,
    vocab_size: int,
    seq_len: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    seed: int = 0,
    generator_: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> TaskBatch:
    """A batch of MQAR rows (layout in the module docstring), drawn on CPU (the float64
    query-gap weights stay there) and returned on ``device`` (default CPU).

    Returns:
        ``TaskBatch(inputs LongTensor [batch, seq_len], targets LongTensor [batch, seq_len])``;
        exactly ``num_kv_pairs`` targets per row differ from -100.
    """
    check_int("batch", batch, 1)
    check_mqar(vocab_size, seq_len, num_kv_pairs, power_a)
    gen = generator_ if generator_ is not None else generator(seed)
    n, half = num_kv_pairs, vocab_size // 2
    keys = distinct_rows(torch.arange(0, half), batch, n, gen)  # [batch, n]
    values = distinct_rows(torch.arange(half, vocab_size), batch, n, gen)  # [batch, n]

    context = 2 * n
    space = seq_len - context
    g = torch.arange(1, space + 1, dtype=torch.float64)
    p = power_a * g ** (power_a - 1)  # [space] power-law weight of each query offset
    slots = torch.multinomial(p.expand(batch, space), n, replacement=False, generator=gen)
    order = torch.rand(batch, n, generator=gen).argsort(dim=1)  # which key goes to which slot
    q_keys = keys.gather(1, order)  # [batch, n]
    q_vals = values.gather(1, order)  # [batch, n]

    inputs = torch.empty(batch, seq_len, dtype=torch.long)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    inputs[:, context:] = sample_avoiding(vocab_size, keys, (batch, space), gen)
    pos = context + slots  # [batch, n] query positions
    inputs.scatter_(1, pos, q_keys)
    targets = torch.full((batch, seq_len), IGNORE_INDEX, dtype=torch.long)
    targets.scatter_(1, pos, q_vals)
    return to_device(TaskBatch(inputs, targets), device)


@dataclass(frozen=True)
class MQARConfig:
    """MQAR task settings (strict config; see the module docstring for the layout).

    Attributes:
        vocab_size: ``V``; keys from ``[0, V//2)``, values from ``[V//2, V)``.
        seq_len: tokens per row.
        num_kv_pairs: key-value pairs per row (also the number of queries).
        power_a: power-law exponent of the query gaps (Zoology default 0.01).
        batch: rows per :meth:`build`.
    """

    vocab_size: int = 256
    seq_len: int = 64
    num_kv_pairs: int = 8
    power_a: float = 0.01
    batch: int = 64

    def __post_init__(self) -> None:
        check_int("batch", self.batch, 1)
        check_mqar(self.vocab_size, self.seq_len, self.num_kv_pairs, self.power_a)

    def build(self, seed: int, device: str | torch.device | None = None) -> TaskBatch:
        """``TaskBatch(inputs [batch, seq_len], targets [batch, seq_len])`` drawn from ``seed``
        (on CPU), on ``device`` (default CPU)."""
        return mqar(self.batch, self.vocab_size, self.seq_len, self.num_kv_pairs,
                    self.power_a, seed=seed, device=device)
