"""Every fast form equals its naive reference: outputs and gradients, causal and not, GQA."""
from __future__ import annotations

import pytest
import torch

from interp import attention

from .conftest import all_configs, config_params, make_qkv, rel_err

TOL = 1e-4
SHAPES = [
    pytest.param(dict(batch=2, heads=4, kv_heads=2, seq=37), id="gqa2-seq37"),
    pytest.param(dict(batch=1, heads=3, kv_heads=3, seq=24), id="mha-seq24"),
    pytest.param(dict(batch=1, heads=6, kv_heads=1, seq=19, dv=8), id="mqa-seq19-dv8"),
]


def test_configs_cover_every_registered_name():
    covered = {name for _, name, _ in all_configs()}
    assert covered == set(attention.names())


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,opts", config_params(all_configs()))
def test_fast_equals_naive_outputs_and_grads(name, opts, shape, causal):
    impl = attention.get(name, **opts)
    q, k, v = make_qkv(**shape, requires_grad=True)
    params = [p for p in impl.parameters() if p.requires_grad]
    wts = torch.randn(q.shape[:3] + (v.shape[-1],), generator=torch.Generator().manual_seed(1))

    out = impl(q, k, v, causal=causal)
    ref = impl.naive(q, k, v, causal=causal)
    assert out.shape == ref.shape == q.shape[:3] + (v.shape[-1],)
    assert out.dtype == q.dtype
    assert rel_err(out, ref) < TOL

    grads = torch.autograd.grad((out * wts).sum(), [q, k, v, *params])
    grads_ref = torch.autograd.grad((ref * wts).sum(), [q, k, v, *params])
    for name_g, g, gr in zip(["q", "k", "v"] + [f"param{i}" for i in range(len(params))],
                             grads, grads_ref):
        assert torch.isfinite(g).all(), name_g
        assert gr.abs().sum() > 0, f"reference gradient of {name_g} is zero: test is vacuous"
        assert rel_err(g, gr) < TOL, name_g


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("name,opts", config_params(all_configs()))
def test_pattern_times_v_is_the_output(name, opts, causal):
    impl = attention.get(name, **opts)
    q, k, v = make_qkv(seq=21)
    w = impl.pattern(q, k, v, causal=causal)
    assert w.shape == (q.shape[0], q.shape[1], 21, 21)
    vv = attention.repeat_kv(v, q.shape[1] // k.shape[1])
    assert rel_err(w @ vv, impl(q, k, v, causal=causal)) < TOL
    assert (w >= -1e-6).all() or name == "linear"
    if causal:  # nothing above the diagonal
        assert torch.triu(w, diagonal=1).abs().max() == 0
    if name != "linear":  # softmax-family rows sum to one over the allowed set
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w[..., 0]))


def test_gqa_uses_repeat_kv_head_order():
    """Query head h must read kv head h // (heads // kv_heads), not h % kv_heads."""
    q, k, v = make_qkv(batch=1, heads=4, kv_heads=2, seq=9)
    for name in attention.names():
        impl = attention.get(name)
        out = impl(q, k, v, causal=True)
        for h in range(4):
            kv = h // 2
            single = impl(q[:, h:h + 1], k[:, kv:kv + 1], v[:, kv:kv + 1], causal=True)
            assert rel_err(out[:, h:h + 1], single) < 1e-5, (name, h)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_softmax_naive_matches_manual_formula(causal):
    """The softmax reference itself, against a hand-written loop over queries."""
    q, k, v = make_qkv(batch=1, heads=2, kv_heads=1, seq=6, d=4)
    impl = attention.get("softmax", scale=0.7)
    out = impl.naive(q, k, v, causal=causal)
    for h in range(2):
        for i in range(6):
            js = range(i + 1) if causal else range(6)
            s = torch.stack([(q[0, h, i] * k[0, 0, j]).sum() * 0.7 for j in js])
            p = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
            exp = sum(p[t] * v[0, 0, j] for t, j in enumerate(js))
            torch.testing.assert_close(out[0, h, i], exp, rtol=1e-5, atol=1e-6)
