"""Every registered implementation satisfies the base-class protocol."""
from __future__ import annotations

import json

import pytest
import torch

from interp import attention
from interp.attention import AttentionImpl

from .conftest import make_qkv

NAMES = attention.names()
D = 64

# documented state sizes (floats per head) at d_head = 64 for the default options
EXPECTED_STATE = {
    "softmax": lambda n: 2 * n * D,
    "softmax_rows": lambda n: 2 * n * D,   # the same math as softmax: a KV cache
    "linear": lambda n: D * D + D,  # elu: feature_dim = d_head
    "sliding_window": lambda n: 2 * min(n, 256) * D,
    "sink_window": lambda n: 2 * min(n, 4 + 256) * D,
    "block_sparse": lambda n: 2 * min(n, (1 + 1 + 1 + 1) * 64) * D,
}


def test_names_come_from_the_registry():
    from interp.attention.registry import IMPLEMENTATIONS

    assert NAMES == IMPLEMENTATIONS.names()
    assert set(NAMES) == {"softmax", "linear", "sliding_window", "sink_window", "block_sparse",
                          "softmax_rows"}
    assert set(EXPECTED_STATE) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_protocol(name):
    impl = attention.get(name)
    assert isinstance(impl, AttentionImpl) and isinstance(impl, torch.nn.Module)
    assert impl.name == name
    assert isinstance(impl.quadratic, bool)
    desc = impl.describe()
    assert desc["name"] == name
    json.dumps(desc)  # reports can store it
    assert set(attention.options(name)) <= set(desc)
    for n in (1, 7, 100, 1000, 100_000):
        s = impl.state_size(n)
        assert isinstance(s, int) and s > 0
        assert s == EXPECTED_STATE[name](n)
    assert impl.state_size(10, d_head=32) <= impl.state_size(10)
    sizes = [impl.state_size(n) for n in (1, 10, 100, 1000, 10_000, 100_000)]
    assert sizes == sorted(sizes)
    if impl.quadratic:  # a KV cache grows with the sequence
        assert impl.state_size(2000) == 2 * impl.state_size(1000)
    else:  # O(N) forms carry a bounded state
        assert impl.state_size(10**6) == impl.state_size(10**7)


def test_linear_state_sizes_per_feature_map():
    d = 16
    expected_f = {"elu": d, "relu": d, "performer": 64, "cosformer": 2 * d,
                  "taylor": 1 + d + d * d, "hedgehog": 2 * d}
    assert set(expected_f) == set(attention.feature_maps())
    for fm, f in expected_f.items():
        impl = attention.get("linear", feature_map=fm, d_head=d)
        assert impl.state_size(5) == f * d + f
        q, k, v = make_qkv(d=d)
        _, st = impl(q, k, v, return_state=True)
        assert st.kv.shape[-2] == f  # the state really is that big


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_value_error(name):
    impl = attention.get(name)
    q, k, v = make_qkv(heads=4, kv_heads=2, seq=8)
    cases = {
        "4 dims": (q[0], k[0], v[0]),
        "multiple of kv heads": (q[:, :3], k, v),
        "seq mismatch": (q, k[:, :, :5], v[:, :, :5]),
        "d_head mismatch": (q, k[..., :8], v),
        "batch mismatch": (q, k[:1], v[:1]),
        "one dtype": (q, k.double(), v),
        "dtype": (q.long(), k.long(), v.long()),
        "k and v must match": (q, k, v[:, :1]),
    }
    for what, (qq, kk, vv) in cases.items():
        with pytest.raises(ValueError, match=what):
            impl(qq, kk, vv)


def test_unknown_name_and_option_errors_list_what_is_valid():
    with pytest.raises(ValueError, match="valid names: softmax, linear"):
        attention.get("flash")
    with pytest.raises(ValueError, match=r"'windw'.*valid options: window, global_tokens"):
        attention.get("sliding_window", windw=3)
    with pytest.raises(ValueError, match="valid forms"):
        attention.get("linear", form="fused")


@pytest.mark.parametrize("name", NAMES)
def test_scale_option_is_used(name):
    q, k, v = make_qkv(seq=12)
    a = attention.get(name)(q, k, v)
    b = attention.get(name, scale=1.0 / 4.0)(q, k, v)  # d=16: default 1/sqrt(16) == 1/4
    c = attention.get(name, scale=0.9)(q, k, v)
    torch.testing.assert_close(a, b)
    if name != "linear":  # elu+1 ignores the scale (documented); the softmax family must not
        assert not torch.allclose(a, c)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_dtypes(name, dtype):
    q, k, v = make_qkv(seq=33)
    impl = attention.get(name)
    ref = impl(q, k, v)
    out = impl(q.to(dtype), k.to(dtype), v.to(dtype))
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    err = (out.double() - ref.double()).norm() / ref.double().norm()
    assert err < 2e-2
