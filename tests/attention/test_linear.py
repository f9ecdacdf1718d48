"""Linear attention: the three forms agree, state resumes, feature maps mean what they say."""
from __future__ import annotations

import math

import pytest
import torch

import interp.attention.linear as linear_mod
from interp import attention

from .conftest import D_HEAD, FORMS, make_qkv, rel_err

FMAPS = attention.feature_maps()


def build(fm, form, **kw):
    extra = {"max_len": 512} if fm == "cosformer" else {}
    return attention.get("linear", feature_map=fm, form=form, chunk_size=8, d_head=D_HEAD,
                         **extra, **kw)


def copy_params(src, dst):
    dst.load_state_dict(src.state_dict())


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("fm", FMAPS)
def test_forms_agree(fm, causal):
    q, k, v = make_qkv(seq=45)
    impls = {form: build(fm, form) for form in FORMS}
    for form in FORMS[1:]:
        copy_params(impls["parallel"], impls[form])
    outs = {form: impl(q, k, v, causal=causal) for form, impl in impls.items()}
    assert rel_err(outs["recurrent"], outs["parallel"]) < 1e-4
    assert rel_err(outs["chunked"], outs["parallel"]) < 1e-4


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("fm", FMAPS)
def test_split_and_resume_equals_one_call(fm, form):
    impl = build(fm, form)
    q, k, v = make_qkv(seq=41)
    full, state_full = impl(q, k, v, causal=True, return_state=True)
    parts, state = [], None
    for a, b in [(0, 13), (13, 14), (14, 41)]:  # uneven pieces, one of length 1
        o, state = impl(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], causal=True, state=state,
                        return_state=True)
        parts.append(o)
    assert state.pos == 41 == state_full.pos
    assert rel_err(torch.cat(parts, dim=2), full) < 1e-4
    assert rel_err(state.kv, state_full.kv) < 1e-4


def test_state_from_one_form_resumes_in_another():
    q, k, v = make_qkv(seq=30)
    full = build("elu", "parallel")(q, k, v)
    _, st = build("elu", "chunked")(q[:, :, :17], k[:, :, :17], v[:, :, :17], return_state=True)
    rest = build("elu", "recurrent")(q[:, :, 17:], k[:, :, 17:], v[:, :, 17:], state=st)
    assert rel_err(rest, full[:, :, 17:]) < 1e-4


def test_chunked_segments_carry_state(monkeypatch):
    """Long causal chunked calls run in segments; force many tiny segments and compare."""
    impl = build("elu", "chunked")
    q, k, v = make_qkv(seq=70)
    ref = impl.naive(q, k, v)
    monkeypatch.setattr(linear_mod, "_SEGMENT_FLOATS", 1)
    assert rel_err(impl(q, k, v), ref) < 1e-4


def _no_autograd_path(monkeypatch):
    """Make the autograd CPU path fail, so a passing call proves the buffered path ran."""
    def boom(*a, **kw):
        raise AssertionError("the autograd segment path ran")
    monkeypatch.setattr(linear_mod.LinearAttention, "_chunked_segments", boom)


@pytest.mark.parametrize("fm", ["elu", "relu", "performer", "cosformer", "taylor", "hedgehog"])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (6, 1)], ids=["mha", "gqa2", "mqa"])
@pytest.mark.parametrize("seq", [1, 7, 16, 48, 100, 173])
def test_buffered_chunked_equals_naive(monkeypatch, fm, heads, kv_heads, seq):
    """The CPU no-grad chunked path (buffers, segments, stacked GQA queries, a tail of
    n mod C tokens) against the dense reference, with several segments forced: lengths below,
    at, and not divisible by the chunk size."""
    _no_autograd_path(monkeypatch)
    monkeypatch.setattr(linear_mod, "_SEGMENT_FLOATS", 1500)  # segments of a few chunks
    extra = {"max_len": 512} if fm == "cosformer" else {}
    impl = attention.get("linear", feature_map=fm, form="chunked", chunk_size=16, d_head=D_HEAD,
                         **extra)
    q, k, v = make_qkv(heads=heads, kv_heads=kv_heads, seq=seq, dv=12)
    rec = attention.get("linear", feature_map=fm, form="recurrent", d_head=D_HEAD, **extra)
    copy_params(impl, rec)
    with torch.no_grad():
        out, st = impl(q, k, v, return_state=True)
        ref = impl.naive(q, k, v)
        _, rec_st = rec(q, k, v, return_state=True)
    assert out.shape == ref.shape and out.dtype == q.dtype
    assert rel_err(out, ref) < 1e-4
    assert rel_err(st.kv, rec_st.kv) < 1e-4 and st.pos == seq  # the token-by-token state


@pytest.mark.parametrize("seq", [64, 100, 1000])
def test_buffered_chunked_one_segment_and_bidirectional(monkeypatch, seq):
    """Default segments (one segment, or many at 1000 with 8 heads of d 64), and the
    non-causal chunked form (global sums), against the dense reference."""
    _no_autograd_path(monkeypatch)
    impl = attention.get("linear", feature_map="elu", form="chunked", chunk_size=64, d_head=64)
    q, k, v = make_qkv(batch=1, heads=8, kv_heads=4, seq=seq, d=64)
    with torch.no_grad():
        for causal in (True, False):
            assert rel_err(impl(q, k, v, causal=causal), impl.naive(q, k, v, causal=causal)) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_buffered_chunked_dtypes(monkeypatch, dtype):
    """float64 is computed in float64, bfloat16 in float32 and returned as bfloat16."""
    _no_autograd_path(monkeypatch)
    monkeypatch.setattr(linear_mod, "_SEGMENT_FLOATS", 1500)
    impl = build("elu", "chunked")
    q, k, v = make_qkv(seq=45, dtype=dtype)
    with torch.no_grad():
        out = impl(q, k, v)
        ref = impl.naive(q.double(), k.double(), v.double())
    assert out.dtype == dtype
    assert rel_err(out, ref) < (1e-10 if dtype == torch.float64 else 1e-2)


def test_buffered_chunked_resumes_and_leaves_state_alone(monkeypatch):
    """Split and resume through the buffered path equals one call; the state passed in is not
    written to (the path carries its own copy)."""
    _no_autograd_path(monkeypatch)
    monkeypatch.setattr(linear_mod, "_SEGMENT_FLOATS", 1500)
    impl = build("elu", "chunked")
    q, k, v = make_qkv(seq=90)
    ref = build("elu", "parallel").naive(q, k, v)
    with torch.no_grad():
        a, st = impl(q[:, :, :37], k[:, :, :37], v[:, :, :37], return_state=True)
        kept = st.kv.clone()
        b, _ = impl(q[:, :, 37:], k[:, :, 37:], v[:, :, 37:], state=st, return_state=True)
    assert torch.equal(st.kv, kept)
    assert rel_err(torch.cat([a, b], dim=2), ref) < 1e-4


def test_chunked_with_autograd_takes_the_segment_path(monkeypatch):
    """Inputs that need gradients go through the allocating path (no out= on reused buffers)."""
    def boom(*a, **kw):
        raise AssertionError("the buffered path ran under autograd")
    monkeypatch.setattr(linear_mod.LinearAttention, "_chunked_cpu", boom)
    impl = build("elu", "chunked")
    q, k, v = make_qkv(seq=30, requires_grad=True)
    out = impl(q, k, v)
    out.sum().backward()
    assert rel_err(out.detach(), impl.naive(q.detach(), k.detach(), v.detach())) < 1e-4
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_elu_forward_into_matches_forward():
    phi = attention.get("linear", feature_map="elu").phi
    x = torch.randn(3, 5, 16) * 4
    x[0, 0, :4] = torch.tensor([0.0, -0.0, float("inf"), float("-inf")])
    out = torch.empty(3, 16, 5).transpose(1, 2)  # strided destination
    kw = dict(scale=1.0, positions=torch.arange(5), length=5)
    phi.forward_into(x, out, is_query=True, **kw)
    torch.testing.assert_close(out, phi(x, is_query=True, **kw), rtol=1e-6, atol=1e-7)


def test_state_validation():
    impl = build("elu", "chunked")
    q, k, v = make_qkv(seq=8)
    _, st = impl(q, k, v, return_state=True)
    with pytest.raises(ValueError, match="state.kv has shape"):
        impl(q[:1], k[:1], v[:1], state=st)
    with pytest.raises(ValueError, match="LinearState"):
        impl(q, k, v, state=st.kv)
    cos = attention.get("linear", feature_map="cosformer")
    _, st = cos(q, k, v, return_state=True)
    with pytest.raises(ValueError, match="max_len"):
        cos(q, k, v, state=st)


def test_unknown_feature_map_option_is_rejected():
    with pytest.raises(ValueError, match="n_features"):
        attention.get("linear", feature_map="elu", n_features=8)
    with pytest.raises(ValueError, match="valid names: .*performer"):
        attention.get("linear", feature_map="nope")
    assert attention.get("linear", feature_map="performer", n_features=8).describe()["n_features"] == 8


def test_performer_approximates_softmax():
    """FAVOR+ is an unbiased estimator of exp(q.k * scale): many features ~ softmax."""
    q, k, v = make_qkv(batch=1, heads=2, kv_heads=2, seq=32, d=8)
    q, k = q * 0.5, k * 0.5
    soft = attention.get("softmax")(q, k, v, causal=False)
    many = attention.get("linear", feature_map="performer", n_features=16384, form="parallel")
    few = attention.get("linear", feature_map="performer", n_features=4, form="parallel")
    err_many = rel_err(many(q, k, v, causal=False), soft)
    assert err_many < 0.03  # ~1/sqrt(m); a biased estimator plateaus (unsigned QR did, at 0.08)
    assert err_many < rel_err(few(q, k, v, causal=False), soft)


def test_taylor_kernel_is_second_order_expansion():
    impl = attention.get("linear", feature_map="taylor", form="parallel", scale=0.3)
    q, k, v = make_qkv(batch=1, heads=1, kv_heads=1, seq=5, d=4)
    w = impl.pattern(q, k, v, causal=False)
    s = (q @ k.transpose(-1, -2)) * 0.3
    kern = 1 + s + s * s / 2
    torch.testing.assert_close(w, kern / (kern.sum(-1, keepdim=True) + impl.eps))
    # and the features reproduce the kernel (the fast path's route)
    torch.testing.assert_close(impl(q, k, v, causal=False), w @ v, rtol=1e-5, atol=1e-6)


def test_cosformer_reweights_by_distance():
    impl = attention.get("linear", feature_map="cosformer", form="parallel", max_len=10)
    q = torch.ones(1, 1, 10, 2)
    k = torch.ones(1, 1, 10, 2)
    v = torch.randn(1, 1, 10, 3)
    w = impl.pattern(q, k, v, causal=True)
    row = w[0, 0, 9, :10]  # query 9: weights proportional to cos(pi/2 * (9 - j) / 10)
    expect = torch.cos(math.pi / 2 * (9 - torch.arange(10.0)) / 10)
    torch.testing.assert_close(row, expect / expect.sum(), rtol=1e-5, atol=1e-6)


def test_relu_all_zero_features_give_zero_not_nan():
    impl = attention.get("linear", feature_map="relu", form="chunked", chunk_size=4)
    q, k, v = make_qkv(seq=10)
    q = (-q.abs()).requires_grad_()
    out = impl(q, k, v)
    assert torch.isfinite(out).all() and out.abs().max() == 0
    (g,) = torch.autograd.grad(out.sum(), q)
    assert torch.isfinite(g).all()


def test_hedgehog_is_trainable_towards_softmax():
    torch.manual_seed(0)
    impl = attention.get("linear", feature_map="hedgehog", form="chunked", d_head=8, chunk_size=8)
    params = list(impl.parameters())
    assert params and all(p.requires_grad for p in params)
    q, k, v = make_qkv(batch=2, heads=2, kv_heads=2, seq=24, d=8)
    q, k = q * 2, k * 2
    target = attention.get("softmax")(q, k, v)
    opt = torch.optim.Adam(params, lr=0.05)
    losses = []
    for _ in range(30):
        loss = (impl(q, k, v) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_sized_feature_maps_reject_wrong_d_head():
    impl = attention.get("linear", feature_map="hedgehog", d_head=32)
    q, k, v = make_qkv(d=16)
    with pytest.raises(ValueError, match="d_head=32"):
        impl(q, k, v)
