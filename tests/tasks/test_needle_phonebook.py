"""Needle, copy and phone-book tasks: answers checked by reading the tokens back."""
from __future__ import annotations

import pytest
import torch

from interp.tasks import IGNORE_INDEX, CopyConfig, NeedleConfig, PhonebookConfig
from interp.tasks.copying import END, QUERY, SEP


@pytest.mark.parametrize("key_len, value_len", [(1, 1), (2, 3)])
@pytest.mark.parametrize("depth", [None, 0.0, 0.5, 1.0])
def test_needle_answer_is_value_after_earlier_key(key_len, value_len, depth):
    cfg = NeedleConfig(vocab_size=64, seq_len=40, key_len=key_len, value_len=value_len,
                       depth=depth, batch=32)
    inputs, targets = cfg.build(0)
    assert inputs.shape == targets.shape == (32, 40)
    for row_in, row_t in zip(inputs.tolist(), targets.tolist()):
        q_start = 40 - (key_len + value_len - 1)
        key = row_in[q_start:q_start + key_len]
        assert all(k < 32 for k in key)
        # find the earlier occurrence of the key and read the value after it
        hits = [s for s in range(q_start - key_len + 1)
                if row_in[s:s + key_len] == key]
        assert len(hits) == 1
        s = hits[0]
        value = row_in[s + key_len:s + key_len + value_len]
        assert all(v >= 32 for v in value)
        assert row_t[-value_len:] == value
        assert all(t == IGNORE_INDEX for t in row_t[:-value_len])
        assert row_in[q_start + key_len:] == value[:-1]
        if depth is not None:
            assert s == round(depth * cfg.haystack_len)


def test_needle_seeds_and_bad_config():
    cfg = NeedleConfig(vocab_size=64, seq_len=32, batch=8)
    assert torch.equal(cfg.build(4).inputs, cfg.build(4).inputs)
    assert not torch.equal(cfg.build(4).inputs, cfg.build(5).inputs)
    with pytest.raises(ValueError, match="seq_len"):
        NeedleConfig(seq_len=3, key_len=1, value_len=2)
    with pytest.raises(ValueError, match="depth"):
        NeedleConfig(depth=1.5)


def test_copy_targets_are_the_string():
    cfg = CopyConfig(n_tokens=10, length=7, batch=5)
    inputs, targets = cfg.build(0)
    assert inputs.shape == (5, cfg.seq_len) and inputs.max() < cfg.vocab_size
    for row_in, row_t in zip(inputs.tolist(), targets.tolist()):
        assert row_in[0] == cfg.bos
        c = row_in.index(cfg.copy_token)
        string = row_in[1:c]
        assert row_t[c:] == string and set(row_t[:c]) == {IGNORE_INDEX}
        assert row_in[c + 1:] == string[:-1]


def parse_phonebook(row: list[int]):
    """Read entries and the query from the token layout alone."""
    q = row.index(QUERY)
    book, entry = {}, []
    for tok in row[:q]:
        if tok == END:
            sep = entry.index(SEP)
            name, number = tuple(entry[:sep]), entry[sep + 1:]
            assert name not in book, "names are distinct"
            book[name] = number
            entry = []
        else:
            entry.append(tok)
    tail = row[q + 1:]
    name = tuple(tail[:tail.index(SEP)])
    return book, name


@pytest.mark.parametrize("n_entries, name_len", [(1, 1), (8, 2), (26, 1)])
def test_phonebook_answer_is_the_number_of_the_query_name(n_entries, name_len):
    cfg = PhonebookConfig(n_entries=n_entries, name_len=name_len, number_len=3, batch=20)
    inputs, targets = cfg.build(1)
    assert inputs.shape == targets.shape == (20, cfg.seq_len)
    assert inputs.max() < cfg.vocab_size
    for row_in, row_t in zip(inputs.tolist(), targets.tolist()):
        book, name = parse_phonebook(row_in)
        assert len(book) == n_entries and name in book
        assert row_t[-3:] == book[name]
        assert set(row_t[:-3]) == {IGNORE_INDEX}


def test_phonebook_bad_config_and_seeds():
    with pytest.raises(ValueError, match="distinct names"):
        PhonebookConfig(n_entries=30, name_len=1, n_letters=26)
    cfg = PhonebookConfig(batch=4)
    assert torch.equal(cfg.build(0).inputs, cfg.build(0).inputs)
    assert not torch.equal(cfg.build(0).inputs, cfg.build(1).inputs)
