"""Repeated random tokens and the induction training mixture."""
from __future__ import annotations

import pytest
import torch

from interp.config import ConfigError, from_dict
from interp.tasks import InductionMixture, repeated_tokens


@pytest.mark.parametrize("bos", [None, 0], ids=["no-bos", "bos"])
@pytest.mark.parametrize("n_repeats", [1, 2, 4])
def test_copies_identical_and_shape(bos, n_repeats):
    L = 25
    out = repeated_tokens(8, L, n_repeats, 1000, bos_token=bos, seed=1)
    o = 0 if bos is None else 1
    assert out.shape == (8, o + L * n_repeats) and out.dtype == torch.long
    if bos is not None:
        assert (out[:, 0] == bos).all()
        assert not (out[:, 1:] == bos).any()
    first = out[:, o:o + L]
    for i in range(n_repeats):
        assert torch.equal(out[:, o + i * L:o + (i + 1) * L], first)


def test_exclude_and_low():
    out = repeated_tokens(64, 50, 2, 20, seed=0, low=3, exclude={5, 7})
    vals = set(out.unique().tolist())
    assert vals <= set(range(3, 20)) - {5, 7}
    assert len(vals) == 20 - 3 - 2  # everything else does occur in 6400 draws


def test_positional_and_keyword_calls_agree_and_seeds():
    a = repeated_tokens(4, 10, 2, 50, seed=5)
    b = repeated_tokens(batch=4, seg_len=10, n_repeats=2, vocab_size=50, seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, repeated_tokens(4, 10, 2, 50, seed=6))


@pytest.mark.parametrize(
    "kwargs",
    [dict(vocab_size=None), dict(vocab_size=10, low=10), dict(vocab_size=3, exclude=[0, 1, 2]),
     dict(vocab_size=10, bos_token=10), dict(vocab_size=10, seg_len=0)],
    ids=["no-vocab", "low>=vocab", "all-excluded", "bos-out-of-range", "empty-segment"],
)
def test_bad_arguments_raise(kwargs):
    args = dict(batch=2, seg_len=5, n_repeats=2) | kwargs
    with pytest.raises(ValueError):
        repeated_tokens(**args)


def test_mixture_rows():
    cfg = InductionMixture(vocab_size=500, seg_len=20, n_repeats=2, batch=200,
                           repeat_share=0.3, bos_token=0, low=1)
    tokens, repeated = cfg.build(0)
    assert tokens.shape == (200, cfg.seq_len) == (200, 41)
    assert (tokens[:, 0] == 0).all() and (tokens[:, 1:] >= 1).all()
    halves_equal = (tokens[:, 1:21] == tokens[:, 21:]).all(dim=1)
    assert torch.equal(halves_equal, repeated)  # random rows (almost surely) differ
    assert 0.15 < repeated.float().mean() < 0.45
    assert torch.equal(cfg.build(0).tokens, tokens)
    assert not torch.equal(cfg.build(1).tokens, tokens)
    fn = cfg.batch_fn(seed=2)
    assert torch.equal(fn(3), fn(3)) and not torch.equal(fn(3), fn(4))


def test_mixture_config_strict():
    cfg = from_dict(InductionMixture, {"vocab_size": 50, "exclude": [1, 2]})
    assert cfg.exclude == [1, 2]
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(InductionMixture, {"vocab_size": 50, "share": 0.5})
    with pytest.raises(ValueError, match="repeat_share"):
        InductionMixture(vocab_size=50, repeat_share=1.5)
