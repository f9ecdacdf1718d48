"""MQAR: every query's answer is the value stored for its key, decoded from the tokens alone."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from interp.config import ConfigError, from_dict
from interp.tasks import IGNORE_INDEX, MQARConfig, mqar


def decode_row(inputs: list[int], n: int) -> dict[int, int]:
    """Independent reading of one row: pairs are (inputs[2i], inputs[2i+1]) for i < n;
    after them the answer for position t is the value of inputs[t] if it is a key."""
    table = {}
    for i in range(n):
        k, v = inputs[2 * i], inputs[2 * i + 1]
        assert k not in table, "keys must be distinct"
        table[k] = v
    answers = {}
    for t in range(2 * n, len(inputs)):
        if inputs[t] in table:
            answers[t] = table[inputs[t]]
    return answers


def check_batch(inputs, targets, vocab_size, seq_len, n):
    assert inputs.shape == targets.shape == (inputs.shape[0], seq_len)
    assert inputs.dtype == targets.dtype == torch.long
    assert 0 <= inputs.min() and inputs.max() < vocab_size
    half = vocab_size // 2
    for row_in, row_t in zip(inputs.tolist(), targets.tolist()):
        keys, values = row_in[0:2 * n:2], row_in[1:2 * n:2]
        assert all(k < half for k in keys) and all(v >= half for v in values)
        assert len(set(keys)) == n and len(set(values)) == n
        answers = decode_row(row_in, n)
        assert len(answers) == n  # each key queried exactly once
        expected = [answers.get(t, IGNORE_INDEX) for t in range(seq_len)]
        assert row_t == expected


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    extra=st.integers(0, 40),
    vocab_extra=st.integers(0, 100),
    power_a=st.sampled_from([0.01, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**31),
)
def test_every_query_answer_is_its_stored_value(n, extra, vocab_extra, power_a, seed):
    seq_len, vocab = 3 * n + extra, 2 * n + vocab_extra
    inputs, targets = mqar(4, vocab, seq_len, n, power_a, seed=seed)
    check_batch(inputs, targets, vocab, seq_len, n)


def test_config_build_matches_function_and_shapes():
    cfg = MQARConfig(vocab_size=128, seq_len=64, num_kv_pairs=8, batch=32)
    a = cfg.build(3)
    b = mqar(32, 128, 64, 8, 0.01, seed=3)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    check_batch(a.inputs, a.targets, 128, 64, 8)


def test_seeds_reproduce_and_differ():
    cfg = MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4, batch=16)
    assert torch.equal(cfg.build(1).inputs, cfg.build(1).inputs)
    assert torch.equal(cfg.build(1).targets, cfg.build(1).targets)
    assert not torch.equal(cfg.build(1).inputs, cfg.build(2).inputs)


def test_queries_are_shuffled_and_power_law_close():
    n, seq_len = 8, 128
    inputs, targets = mqar(256, 512, seq_len, n, power_a=0.01, seed=0)
    same_order = 0
    offsets = []
    for row_in, row_t in zip(inputs.tolist(), targets.tolist()):
        pos = [t for t in range(seq_len) if row_t[t] != IGNORE_INDEX]
        same_order += [row_in[t] for t in pos] == row_in[0:2 * n:2]
        offsets += [t - 2 * n for t in pos]
    assert same_order < 5  # 1/8! chance per row of keeping the pair order
    space = seq_len - 2 * n
    # p(g) ~ g^-0.99: far more queries in the first quarter than a uniform draw would give
    assert sum(o < space // 4 for o in offsets) / len(offsets) > 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vocab_size=64, seq_len=20, num_kv_pairs=8), "pairs"),
        (dict(vocab_size=10, seq_len=64, num_kv_pairs=8), "vocab_size"),
        (dict(vocab_size=64, seq_len=64, num_kv_pairs=0), "num_kv_pairs"),
        (dict(vocab_size=64, seq_len=64, num_kv_pairs=4, power_a=0.0), "power_a"),
        (dict(vocab_size=64, seq_len=64, num_kv_pairs=4, batch=0), "batch"),
    ],
)
def test_bad_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MQARConfig(**kwargs)


def test_strict_loading_rejects_unknown_fields():
    assert from_dict(MQARConfig, {"num_kv_pairs": 4}).num_kv_pairs == 4
    with pytest.raises(ConfigError, match="train_power_a"):
        from_dict(MQARConfig, {"train_power_a": 0.01})
    with pytest.raises(ConfigError):
        from_dict(MQARConfig, {"seq_len": 8, "num_kv_pairs": 8})
