"""RetrievalModel: shapes, state sizes, strict configs, for every implementation of the sweep."""
from __future__ import annotations

import pytest
import torch

from interp import attention
from interp.config import ConfigError, from_dict
from interp.retrieval import MixerSpec, RetrievalModel, RetrievalModelConfig, RetrievalSweepConfig

IMPLS = RetrievalSweepConfig(exclude=[]).implementations()  # built from the registry


def model_for(label: str, d_model: int, **kw) -> RetrievalModel:
    impl = IMPLS[label]
    return RetrievalModel(RetrievalModelConfig(
        vocab_size=40, d_model=d_model, n_heads=2, max_len=24, mixers=list(impl.mixers),
        combine=impl.combine, **kw))


def test_every_registered_implementation_is_swept():
    names = {n for n in attention.names()
             if n != "linear" and not attention.get_class(n).same_math_as}
    maps = {f"linear_{fm}" for fm in attention.feature_maps()}
    assert names | maps <= set(IMPLS)


@pytest.mark.parametrize("label", list(IMPLS))
def test_forward_shapes_and_state_size_monotone_in_width(label):
    x = torch.randint(0, 40, (3, 24))
    m = model_for(label, 32)
    assert m(x).shape == (3, 24, 40)
    assert m(x[:, :7]).shape == (3, 7, 40)
    sizes = [model_for(label, d).state_size(24) for d in (16, 32, 64)]
    assert sizes[0] < sizes[1] < sizes[2], sizes


@pytest.mark.parametrize("short_conv", [0, 3])
def test_state_size_sums_mixers_over_layers_and_heads(short_conv):
    cfg = RetrievalModelConfig(
        vocab_size=20, d_model=32, n_layers=3, n_heads=4, max_len=64, short_conv=short_conv,
        mixers=[MixerSpec("softmax"), MixerSpec("linear", {"feature_map": "elu"})])
    m = RetrievalModel(cfg)
    d = 8
    per_layer = 4 * (attention.get("softmax", d_head=d).state_size(64)
                     + attention.get("linear", feature_map="elu", d_head=d).state_size(64))
    conv = 3 * (short_conv - 1) * 32 if short_conv else 0
    assert m.state_size(64) == 3 * per_layer + conv
    alt = RetrievalModel(RetrievalModelConfig(**{**cfg.__dict__, "combine": "alternate"}))
    assert [len(b.mixers) for b in alt.blocks] == [1, 1, 1]
    assert [b.mixers[0].spec.name for b in alt.blocks] == ["softmax", "linear", "softmax"]


def test_same_seed_same_weights_and_causal():
    a, b = model_for("softmax", 32), model_for("softmax", 32)
    x = torch.randint(0, 40, (2, 24))
    assert torch.equal(a(x), b(x))
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % 40
    assert torch.allclose(a(x)[:, :10], a(y)[:, :10], atol=1e-6)  # no look-ahead


def test_bad_configs():
    with pytest.raises(ValueError, match="valid names"):
        MixerSpec("no_such_attention")
    with pytest.raises(ValueError, match="d_head"):
        MixerSpec("softmax", {"d_head": 8})
    with pytest.raises(ValueError, match="multiple of n_heads"):
        RetrievalModelConfig(vocab_size=10, d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(RetrievalModelConfig, {"vocab_size": 10, "n_head": 2})
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(RetrievalModelConfig, {"vocab_size": 10, "mixers": [{"name": "softmax",
                                                                      "opts": {}}]})
    cfg = from_dict(RetrievalModelConfig, {"vocab_size": 10, "mixers": [
        {"name": "linear", "options": {"feature_map": "relu"}}]})
    assert cfg.mixers[0] == MixerSpec("linear", {"feature_map": "relu"})
    m = RetrievalModel(cfg)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 65, dtype=torch.long))
