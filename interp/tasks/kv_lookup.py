"""In-context key-value lookup prompts in natural text, for pretrained models.

One row (``n`` pairs, ``s`` demonstration lookups; every key and value one token)::

    <bos> Codes:\\n k1: v1, k2: v2, ..., kn: vn. kd1: vd1, ..., kds: vds, kq:
          ^ header  ^ the table: n distinct keys, n distinct values    ^ query -> answer vq

- keys and values are drawn (without replacement within a row) from fixed word lists: by
  default common nouns as keys and capital letters as values, so a value carries no meaning
  that ties it to its key and the only way to answer is to look the key up in the context;
- every key and value is written with a leading space (``" apple"``, ``" A"``), and must be a
  single token in that form: :meth:`KVLookupConfig.build` checks this with the tokenizer and
  raises naming the words that are not;
- the ``s`` demonstrations are lookups of other stored keys (random order, never the queried
  key) with their answers: they tell a small model that the task is lookup (SmolLM2-135M,
  8 pairs: top-1 accuracy 0.52 without them, 1.0 with six, on 48 prompts of seed 0);
- the answer is the queried value's token (with its leading space), predicted at the last
  position. Rows are built token by token, so every row of a batch has the same length and
  no padding is needed (:func:`interp.swap.swap_attention` refuses padded batches).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from interp.errors import InputError
from interp.tasks._sampling import check_int, distinct_rows, generator, to_device

#: Default keys: common nouns (no animals or colours, so no key suggests a value).
DEFAULT_KEYS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "table", "music", "paper", "chair", "water", "glass",
    "bread", "house", "plant", "train", "book", "door", "field", "window", "bridge", "forest",
    "letter", "shirt", "wheel", "castle", "engine", "market", "ocean", "robot", "sugar",
    "tower", "wallet",
)
#: Default values: the capital letters.
DEFAULT_VALUES: tuple[str, ...] = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class KVLookupBatch(NamedTuple):
    """A batch of key-value lookup prompts.

    Attributes:
        tokens: ``LongTensor [batch, seq]``; the answer is predicted at position ``seq - 1``.
        answers: ``LongTensor [batch]``, token id of the queried key's value.
        keys: ``LongTensor [batch, n_pairs]`` key token ids in table order.
        values: ``LongTensor [batch, n_pairs]`` value token ids; ``values[b, i]`` belongs to
            ``keys[b, i]``.
        query: ``LongTensor [batch]`` index (into the table) of the queried pair.
    """

    tokens: Tensor
    answers: Tensor
    keys: Tensor
    values: Tensor
    query: Tensor


def single_token_ids(tokenizer, words: Sequence[str], what: str) -> Tensor:
    """``LongTensor [len(words)]``: the token id of ``" " + word`` for each word.

    Raises:
        InputError: naming every word whose space-prefixed form is not exactly one token, or
            repeated words.
    """
    if len(set(words)) != len(words):
        raise InputError(f"{what} must be distinct, got repeats in {list(words)}")
    ids, bad = [], []
    for word in words:
        toks = tokenizer(" " + word, add_special_tokens=False).input_ids
        if len(toks) == 1:
            ids.append(toks[0])
        else:
            bad.append(word)
    if bad:
        raise InputError(
            f"{what} {bad} are not single tokens for this tokenizer (written with a leading "
            f"space); pass {what} that are, e.g. shorter common words")
    return torch.tensor(ids, dtype=torch.long)


def _token(tokenizer, text: str) -> int:
    toks = tokenizer(text, add_special_tokens=False).input_ids
    if len(toks) != 1:
        raise InputError(f"{text!r} is not a single token for this tokenizer ({toks})")
    return toks[0]


@dataclass(frozen=True)
class KVLookupConfig:
    """Key-value lookup prompt settings (strict config).

    Attributes:
        n_pairs: ``n``, key-value pairs in the table (distinct keys, distinct values).
        n_shots: ``s < n`` answered lookups of other stored keys before the query.
        batch: rows per :meth:`build`.
        header: text before the table (tokenized as is; may be empty).
        keys, values: word lists to draw from; each word must be one token as ``" " + word``.
        bos: put the tokenizer's BOS token first.
    """

    n_pairs: int = 8
    n_shots: int = 6
    batch: int = 64
    header: str = "Codes:\n"
    keys: tuple[str, ...] = DEFAULT_KEYS
    values: tuple[str, ...] = DEFAULT_VALUES
    bos: bool = True

    def __post_init__(self) -> None:
        check_int("n_pairs", self.n_pairs, 1)
        check_int("n_shots", self.n_shots, 0)
        check_int("batch", self.batch, 1)
        if self.n_shots >= self.n_pairs:
            raise InputError(f"n_shots={self.n_shots} must be < n_pairs={self.n_pairs} "
                             f"(demonstrations look up other keys than the query)")
        for what, words in (("keys", self.keys), ("values", self.values)):
            if len(words) < self.n_pairs:
                raise InputError(f"n_pairs={self.n_pairs} needs at least that many {what}, "
                                 f"got {len(words)}")

    @property
    def seq_len(self) -> int:
        """Tokens per row without BOS and header: ``4 n + 4 s + 2``."""
        return 4 * self.n_pairs + 4 * self.n_shots + 2

    def build(self, tokenizer, seed: int,
              device: str | torch.device | None = None) -> KVLookupBatch:
        """Draw ``batch`` prompts from ``seed`` (on CPU) and tokenize them with ``tokenizer``
        (a HF tokenizer). Returns :class:`KVLookupBatch` on ``device`` (default CPU) with
        ``tokens [batch, seq]``, ``seq = bos + len(header tokens) + 4 n + 4 s + 2``."""
        gen = generator(seed)
        key_ids = single_token_ids(tokenizer, self.keys, "keys")
        value_ids = single_token_ids(tokenizer, self.values, "values")
        colon, comma, stop = (_token(tokenizer, c) for c in (":", ",", "."))
        b, n, s = self.batch, self.n_pairs, self.n_shots
        keys = distinct_rows(key_ids, b, n, gen)                      # [b, n]
        values = distinct_rows(value_ids, b, n, gen)                  # [b, n]
        query = torch.randint(0, n, (b,), generator=gen)              # [b]
        order = torch.rand(b, n, generator=gen)
        order[torch.arange(b), query] = 2.0                           # the query goes last
        demo = order.argsort(dim=1)[:, :s]                            # [b, s] other pairs
        col = lambda t: torch.full((b, 1), t, dtype=torch.long)       # noqa: E731
        table = torch.stack([keys, col(colon).expand(b, n), values, col(comma).expand(b, n)],
                            dim=2).reshape(b, 4 * n)                  # k : v , ...
        table[:, -1] = stop                                           # ... kn : vn .
        dk, dv = keys.gather(1, demo), values.gather(1, demo)         # [b, s]
        shots = torch.stack([dk, col(colon).expand(b, s), dv, col(comma).expand(b, s)],
                            dim=2).reshape(b, 4 * s)
        qk = keys.gather(1, query[:, None])                           # [b, 1]
        prefix = tokenizer(self.header, add_special_tokens=False).input_ids if self.header \
            else []
        if self.bos:
            if tokenizer.bos_token_id is None:
                raise InputError("bos=True but the tokenizer has no BOS token; set bos=False")
            prefix = [tokenizer.bos_token_id] + prefix
        head = torch.tensor(prefix, dtype=torch.long).expand(b, len(prefix))
        tokens = torch.cat([head, table, shots, qk, col(colon)], dim=1)
        answers = values.gather(1, query[:, None])[:, 0]
        return to_device(KVLookupBatch(tokens, answers, keys, values, query), device)
