"""Every registered implementation on CUDA equals its naive reference computed on CPU.

Marked ``cuda``: skipped, with the reason, where torch sees no CUDA device (tests/conftest.py).
Run by ``benchmarks/gpu_check.sh`` (``pytest -m cuda --device cuda``).

On CUDA the sparse implementations run through flex_attention and the causal chunked linear
form through fla when installed (:mod:`interp.attention.gpu`); these tests check outputs and
gradients (float32, and bfloat16 with looser tolerances) against the float64 CPU reference of
the same inputs, causal and bidirectional, GQA / MQA, lengths that are not multiples of the
128-token flex tiles or of the implementations' own blocks, and that the fast paths are really
taken. Every test computes its reference on the CPU itself; none compares CUDA with CUDA. Each new (shape, dtype, options) compiles a flex kernel (seconds each), so the matrix
is kept small: about 18 flex compiles in all.
"""
from __future__ import annotations

import copy

import pytest
import torch

from interp import attention
from interp.attention import gpu

from .conftest import make_qkv, rel_err

pytestmark = pytest.mark.cuda

D = 64
CUDA = torch.device("cuda")
#: options per registered name, sized so that a few hundred tokens cross many blocks
BASE_OPTIONS: dict[str, dict] = {
    "softmax": {},
    "linear": {"feature_map": "elu", "form": "chunked", "chunk_size": 32},
    "sliding_window": {"window": 48},
    "sink_window": {"n_sink": 3, "window": 40},
    "block_sparse": {"block_size": 32, "local_blocks": 1, "global_blocks": 1, "random_blocks": 2,
                     "seed": 4},
}
FLEX_NAMES = ("sliding_window", "sink_window", "block_sparse")


def configs() -> list[tuple[str, str, dict]]:
    """One configuration per registered name, plus variants: globals, every feature map."""
    out = [(name, name, dict(BASE_OPTIONS.get(name, {}))) for name in attention.names()]
    out += [
        ("sliding_window-global", "sliding_window", {"window": 32, "global_tokens": (0, 130, 290)}),
        ("block_sparse-wide", "block_sparse",
         {"block_size": 48, "local_blocks": 2, "global_blocks": 0, "random_blocks": 3, "seed": 1}),
    ]
    for fm in attention.feature_maps():
        if fm == "elu":
            continue
        extra = {"max_len": 4096} if fm == "cosformer" else {}
        out.append((f"linear-{fm}", "linear",
                    {"feature_map": fm, "form": "chunked", "chunk_size": 32, "d_head": D, **extra}))
    return out


def params(cfgs):
    return [pytest.param(name, opts, id=cid) for cid, name, opts in cfgs]


@pytest.fixture
def calls(monkeypatch):
    """Counts of the GPU fast paths taken: ``{"flex": n, "fla": n}``."""
    seen = {"flex": 0, "fla": 0}
    flex, fla = gpu.flex_forward, gpu.fla_chunked

    def counted_flex(*args, **kwargs):
        seen["flex"] += 1
        return flex(*args, **kwargs)

    def counted_fla(*args, **kwargs):
        seen["fla"] += 1
        return fla(*args, **kwargs)

    monkeypatch.setattr(gpu, "flex_forward", counted_flex)
    monkeypatch.setattr(gpu, "fla_chunked", counted_fla)
    return seen


def compare(name, opts, shape, causal, dtype, calls, grads=True):
    """Run on CUDA in ``dtype``; reference: naive on CPU in float64 from the same inputs.
    Returns (output error, {grad name: error}, the fast paths taken)."""
    impl = attention.get(name, **opts)
    q, k, v = make_qkv(**shape, dtype=dtype)
    wts = torch.randn(q.shape[:3] + (v.shape[-1],), generator=torch.Generator().manual_seed(1))
    ref_impl = copy.deepcopy(impl).double()
    qr, kr, vr = (t.double().requires_grad_(grads) for t in (q, k, v))
    ref = ref_impl.naive(qr, kr, vr, causal=causal)

    fast = copy.deepcopy(impl).to(CUDA)
    qc, kc, vc = (t.to(CUDA).requires_grad_(grads) for t in (q, k, v))
    with torch.set_grad_enabled(grads):
        out = fast(qc, kc, vc, causal=causal)
    assert out.dtype == dtype and out.device.type == "cuda"
    assert out.shape == ref.shape and torch.isfinite(out).all()
    errs = {}
    if grads:
        p_fast = [p for p in fast.parameters() if p.requires_grad]
        p_ref = [p for p in ref_impl.parameters() if p.requires_grad]
        g = torch.autograd.grad((out.float() * wts.to(CUDA)).sum(), [qc, kc, vc, *p_fast])
        gr = torch.autograd.grad((ref * wts.double()).sum(), [qr, kr, vr, *p_ref])
        names = ["q", "k", "v"] + [f"param{i}" for i in range(len(p_fast))]
        for gn, a, b in zip(names, g, gr):
            assert torch.isfinite(a).all(), gn
            errs[gn] = rel_err(a.cpu(), b)
    return rel_err(out.cpu(), ref), errs, dict(calls)


def expect_paths(name, opts, causal, taken, shape):
    d_ok = shape.get("d", D) >= 16 and shape.get("dv", shape.get("d", D)) >= 16
    if name in FLEX_NAMES:
        assert taken["flex"] >= 1 if d_ok else taken["flex"] == 0, taken
    else:
        assert taken["flex"] == 0, taken
    if taken["fla"]:
        assert name == "linear" and causal and opts.get("form", "chunked") == "chunked"


GQA = dict(batch=2, heads=4, kv_heads=2, seq=300, d=D)  # 300: not a multiple of 128, 32, 48
MQA = dict(batch=1, heads=4, kv_heads=1, d=D)


def float32_cases():
    """Every configuration causal and bidirectional, except the sparse variants: causal only
    (each flex case compiles a forward and a backward kernel)."""
    out = []
    for cid, name, opts in configs():
        for causal in (True, False):
            if not causal and name in FLEX_NAMES and cid != name:
                continue
            out.append(pytest.param(name, opts, causal,
                                    id=f"{cid}-{'causal' if causal else 'bidir'}"))
    return out


@pytest.mark.parametrize("name,opts,causal", float32_cases())
def test_float32_outputs_and_grads(name, opts, causal, calls):
    err, gerr, taken = compare(name, opts, GQA, causal, torch.float32, calls)
    expect_paths(name, opts, causal, taken, GQA)
    tol = 5e-3 if taken["fla"] else 1e-4  # fla: TF32 tensor-core dots on float32
    assert err < tol, (err, taken)
    assert all(e < 2 * tol for e in gerr.values()), (gerr, taken)


@pytest.mark.parametrize("name,opts", params(
    [(n, n, dict(BASE_OPTIONS.get(n, {}))) for n in attention.names()]))
def test_bfloat16_outputs_and_grads(name, opts, calls):
    err, gerr, taken = compare(name, opts, GQA, True, torch.bfloat16, calls)
    expect_paths(name, opts, True, taken, GQA)
    assert err < 2e-2, err
    assert all(e < 5e-2 for e in gerr.values()), gerr


def length_cases():
    """Lengths 1, 129 (one past a flex tile) and 1000 for every name, except that the sparse
    ones (a compile each) take 1 and 1000 only where the case is new to them."""
    flex_lengths = {"sliding_window": (1, 129, 1000), "sink_window": (129,),
                    "block_sparse": (129, 1000)}
    return [pytest.param(name, seq, id=f"{name}-seq{seq}") for name in attention.names()
            for seq in flex_lengths.get(name, (1, 129, 1000))]


@pytest.mark.parametrize("name,seq", length_cases())
def test_lengths_mqa_forward(name, seq, calls):
    shape = dict(MQA, seq=seq)
    err, _, taken = compare(name, BASE_OPTIONS.get(name, {}), shape, True, torch.float32, calls,
                            grads=False)
    expect_paths(name, BASE_OPTIONS.get(name, {}), True, taken, shape)
    assert err < (5e-3 if taken["fla"] else 1e-4), (err, taken)


def test_long_sequence_sliding_window(calls):
    """5000 tokens: a block mask of 40 x 40 tiles, of which flex computes a band."""
    shape = dict(batch=1, heads=2, kv_heads=1, seq=5000, d=D)
    opts = {"window": 256, "global_tokens": (7,)}
    err, _, taken = compare("sliding_window", opts, shape, True, torch.float32, calls, grads=False)
    assert taken["flex"] == 1 and err < 1e-4, (err, taken)
    done, dense = gpu.block_counts(attention.get("sliding_window", **opts), 5000, True, CUDA)
    assert done < dense / 4


@pytest.mark.parametrize("name", FLEX_NAMES)
def test_torch_path_where_flex_cannot(name, calls):
    """float64 and head sizes < 16 stay on the torch blocked path, on CUDA."""
    opts = BASE_OPTIONS[name]
    for dtype, shape in [(torch.float64, dict(MQA, seq=200)),
                         (torch.float32, dict(MQA, seq=200, d=8))]:
        err, _, taken = compare(name, opts, shape, True, dtype, calls, grads=False)
        assert taken["flex"] == 0 and err < 1e-4, (dtype, shape, err)


def test_flex_is_taken_for_every_sparse_name(calls):
    """Each sparse name goes through flex on CUDA, and its output equals the float64 CPU
    naive reference of the same inputs."""
    q, k, v = make_qkv(**dict(MQA, seq=129))
    qc, kc, vc = (t.to(CUDA) for t in (q, k, v))
    with torch.no_grad():
        for i, name in enumerate(FLEX_NAMES, start=1):
            impl = attention.get(name, **BASE_OPTIONS[name])
            out = impl(qc, kc, vc)
            assert calls["flex"] == i, name
            ref = impl.naive(q.double(), k.double(), v.double())
            assert rel_err(out.cpu(), ref) < 1e-4, name


def _need_fla():
    if gpu.fla_linear_attn() is None:
        pytest.skip(f"fla (fla-core) cannot be used: {gpu.fla_unavailable_reason()}; "
                    "pip install 'interp[gpu]'")


def test_fla_is_taken_when_installed(calls):
    """fla runs the causal chunked form only; every call equals the float64 CPU naive
    reference (d_head 64: v' = [v, 1] is 65 wide, padded for the kernel)."""
    _need_fla()
    q, k, v = make_qkv(**dict(MQA, seq=129))
    qc, kc, vc = (t.to(CUDA) for t in (q, k, v))
    q64, k64, v64 = (t.double() for t in (q, k, v))
    cases = [(attention.get("linear", **BASE_OPTIONS["linear"]), True, 1),
             (attention.get("linear", **BASE_OPTIONS["linear"]), False, 1),   # not causal: torch
             (attention.get("linear", feature_map="taylor", d_head=D), True, 1)]  # f > 256: torch
    with torch.no_grad():
        for impl, causal, fla_calls in cases:
            out = impl.to(CUDA)(qc, kc, vc, causal=causal)
            assert calls["fla"] == fla_calls, (impl.describe(), causal)
            ref = copy.deepcopy(impl).cpu().double().naive(q64, k64, v64, causal=causal)
            assert rel_err(out.cpu(), ref) < 5e-3, (impl.describe(), causal)  # fla: TF32 dots


def _linear_reference(fq, fk, v1, s0):
    """The causal chunked contract of ``fla_chunked`` written out (float64, CPU): numerator
    ``phi(q_i) (s0 + sum_{j<=i} phi(k_j) v'_j^T)`` for every query head of a group, and the
    final state."""
    states = s0[:, :, None] + (fk[..., :, None] * v1[..., None, :]).cumsum(dim=2)
    return torch.einsum("bhgnf,bhnfe->bhgne", fq, states), states[:, :, -1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_fla_padded_width_equals_unpadded_reference(dtype, monkeypatch):
    """``fla_chunked`` with a value width of 65 (``d + 1`` for d_head 64, odd): the kernel
    sees 80 columns, and the output, the carried state and the gradients -- in bfloat16 too,
    where fla 0.6's backward refuses odd widths -- equal the unpadded float64 CPU reference."""
    _need_fla()
    kernel, widths = gpu.fla_linear_attn(), []

    def recording(q, k, v, **kwargs):
        widths.append(v.shape[-1])
        return kernel(q, k, v, **kwargs)

    monkeypatch.setattr(gpu, "fla_linear_attn", lambda: recording)
    b, hk, g, n, f, e = 1, 2, 2, 200, 32, 65
    gen = torch.Generator().manual_seed(0)
    leaves = [0.2 * torch.rand(b, hk, g, n, f, generator=gen),     # positive, like phi(q)
              0.2 * torch.rand(b, hk, n, f, generator=gen),
              torch.randn(b, hk, n, e, generator=gen),
              0.1 * torch.randn(b, hk, f, e, generator=gen)]       # carried state s0
    w_num = torch.randn(b, hk, g, n, e, generator=gen)
    w_state = torch.randn(b, hk, f, e, generator=gen)
    ref_in = [t.double().requires_grad_() for t in leaves]
    num_ref, s_ref = _linear_reference(*ref_in)
    ref_grads = torch.autograd.grad((num_ref * w_num.double()).sum()
                                    + (s_ref * w_state.double()).sum(), ref_in)

    cuda_in = [t.to(CUDA, dtype).requires_grad_() for t in leaves]
    num, s_new = gpu.fla_chunked(*cuda_in, causal=True, chunk_size=64)
    assert widths == [80]
    assert num.shape == num_ref.shape and s_new.shape == s_ref.shape
    grads = torch.autograd.grad((num.float() * w_num.to(CUDA)).sum()
                                + (s_new.float() * w_state.to(CUDA)).sum(), cuda_in)
    tol = 5e-3 if dtype == torch.float32 else 3e-2
    assert rel_err(num.cpu(), num_ref) < tol
    assert rel_err(s_new.cpu(), s_ref) < tol
    for name, got, want in zip(["q", "k", "v", "s0"], grads, ref_grads):
        assert torch.isfinite(got).all(), name
        assert rel_err(got.cpu(), want) < 2 * tol, name
