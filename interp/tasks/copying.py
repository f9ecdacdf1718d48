"""Copying and phone-book lookup (Jelassi et al. 2024, "Repeat After Me").

Both tasks have their own token layout, fixed by the config; ``cfg.vocab_size`` is the size a
model needs.

**Copy** (:class:`CopyConfig`)::

    BOS x_1 ... x_L COPY x_1 ... x_{L-1}          shape [batch, 2L + 1]

with ``x`` uniform over ``[0, n_tokens)``, ``BOS = n_tokens``, ``COPY = n_tokens + 1``;
targets are -100 except from the COPY position on, where they are ``x_1 .. x_L``.

**Phone book** (:class:`PhonebookConfig`): ``n_entries`` entries, then a query::

    name SEP number END  name SEP number END ...  QUERY name SEP number_1..number_{D-1}

Token ids: digits ``0..9``, ``SEP = 10``, ``END = 11``, ``QUERY = 12``, name letters
``13 .. 13 + n_letters - 1``. A name is ``name_len`` letters (names distinct within a row), a
number ``number_len`` digits. The query repeats one entry's name (chosen uniformly); targets are
-100 except the last ``number_len`` positions, where they are that entry's number (the SEP after
the query name predicts the first digit).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.errors import InputError
from interp.tasks._sampling import (
    IGNORE_INDEX, TaskBatch, check_int, distinct_rows, generator, to_device,
)

SEP, END, QUERY, FIRST_LETTER = 10, 11, 12, 13


@dataclass(frozen=True)
class CopyConfig:
    """Copy a random string after a COPY marker.

    Attributes:
        n_tokens: ids of the string are drawn from ``[0, n_tokens)``.
        length: string length ``L``.
        batch: rows per :meth:`build`.
    """

    n_tokens: int = 32
    length: int = 16
    batch: int = 16

    def __post_init__(self) -> None:
        check_int("n_tokens", self.n_tokens, 1)
        check_int("length", self.length, 1)
        check_int("batch", self.batch, 1)

    @property
    def bos(self) -> int:
        return self.n_tokens

    @property
    def copy_token(self) -> int:
        return self.n_tokens + 1

    @property
    def vocab_size(self) -> int:
        return self.n_tokens + 2

    @property
    def seq_len(self) -> int:
        return 2 * self.length + 1

    def build(self, seed: int, device: str | torch.device | None = None) -> TaskBatch:
        """``TaskBatch(inputs [batch, 2L + 1], targets [batch, 2L + 1])`` drawn from ``seed``
        (on CPU), on ``device`` (default CPU)."""
        gen = generator(seed)
        b, L = self.batch, self.length
        x = torch.randint(0, self.n_tokens, (b, L), generator=gen)  # [b, L]
        inputs = torch.cat([torch.full((b, 1), self.bos), x,
                            torch.full((b, 1), self.copy_token), x[:, :-1]], dim=1)
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, L + 1:] = x
        return to_device(TaskBatch(inputs, targets), device)


@dataclass(frozen=True)
class PhonebookConfig:
    """Phone-book lookup: entries ``name -> number``, then a query name; answer its number.

    Attributes:
        n_entries: entries per row.
        name_len: letters per name.
        number_len: digits per number.
        n_letters: size of the name alphabet.
        batch: rows per :meth:`build`.
    """

    n_entries: int = 8
    name_len: int = 2
    number_len: int = 4
    n_letters: int = 26
    batch: int = 16

    def __post_init__(self) -> None:
        check_int("n_entries", self.n_entries, 1)
        check_int("name_len", self.name_len, 1)
        check_int("number_len", self.number_len, 1)
        check_int("n_letters", self.n_letters, 1)
        check_int("batch", self.batch, 1)
        if self.n_entries > self.n_letters ** self.name_len:
            raise InputError(
                f"{self.n_entries} distinct names need n_letters ** name_len >= n_entries, got "
                f"{self.n_letters} ** {self.name_len} = {self.n_letters ** self.name_len}; "
                "use longer names, more letters or fewer entries"
            )

    @property
    def vocab_size(self) -> int:
        return FIRST_LETTER + self.n_letters

    @property
    def entry_len(self) -> int:
        return self.name_len + self.number_len + 2

    @property
    def seq_len(self) -> int:
        return self.n_entries * self.entry_len + 1 + self.name_len + self.number_len

    def _names(self, gen: torch.Generator) -> torch.Tensor:
        """``[batch, n_entries, name_len]`` letter ids, names distinct within a row."""
        b, n, m, A = self.batch, self.n_entries, self.name_len, self.n_letters
        space = A ** m
        digits = A ** torch.arange(m - 1, -1, -1)  # [m] place values of a name code
        if space <= 1 << 16 or n * n > space:  # distinct codes by a random permutation
            codes = distinct_rows(torch.arange(space), b, n, gen)  # [b, n]
        else:  # large space: draw and redraw the (rare) rows with a repeated code
            codes = torch.randint(0, space, (b, n), generator=gen)
            while True:
                srt = codes.sort(dim=1).values
                bad = (srt[:, 1:] == srt[:, :-1]).any(dim=1)
                if not bad.any():
                    break
                codes[bad] = torch.randint(0, space, (int(bad.sum()), n), generator=gen)
        return (codes[..., None] // digits) % A + FIRST_LETTER

    def build(self, seed: int, device: str | torch.device | None = None) -> TaskBatch:
        """``TaskBatch(inputs [batch, seq_len], targets [batch, seq_len])`` drawn from ``seed``
        (on CPU), on ``device`` (default CPU)."""
        gen = generator(seed)
        b, n, D = self.batch, self.n_entries, self.number_len
        names = self._names(gen)  # [b, n, name_len]
        numbers = torch.randint(0, 10, (b, n, D), generator=gen)  # [b, n, D]
        entries = torch.cat([names, torch.full((b, n, 1), SEP), numbers,
                             torch.full((b, n, 1), END)], dim=2)  # [b, n, entry_len]
        pick = torch.randint(0, n, (b,), generator=gen)
        rows = torch.arange(b)
        q_name, q_number = names[rows, pick], numbers[rows, pick]  # [b, name_len], [b, D]
        inputs = torch.cat([entries.reshape(b, -1), torch.full((b, 1), QUERY), q_name,
                            torch.full((b, 1), SEP), q_number[:, :-1]], dim=1)
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, -D:] = q_number
        return to_device(TaskBatch(inputs, targets), device)
