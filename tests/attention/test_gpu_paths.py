"""The GPU fast paths' plumbing, checked on CPU (interp.attention.gpu).

What runs on CUDA only -- flex_attention's compiled kernels, fla's Triton kernels -- is covered
by tests/attention/test_cuda.py. Everything those paths are built from is checked here:

- every sparse implementation's ``flex_mask_mod`` is its ``allowed_mask``, pair by pair (by
  broadcasting, and through flex's own vmap in ``create_mask``);
- the chunked block-mask builder equals torch's ``create_block_mask`` tile by tile, and the
  tiles it lists grow as O(N w), not O(N^2) (the "real block skipping");
- flex's eager reference with those block masks (forward, CPU) equals the naive reference:
  scale, GQA and the output dtype are passed right;
- the fla adapter's reshapes, GQA repeat and carried state, with a stand-in kernel written from
  fla's documented contract of ``chunk_linear_attn(normalize=False)``;
- and on CPU no GPU path is taken.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.attention import flex_attention as fa

from interp import attention
from interp.attention import gpu
from interp.attention.base import SparseAttention

from .conftest import all_configs, config_params, make_qkv, rel_err

SPARSE = [c for c in all_configs()
          if issubclass(attention.IMPLEMENTATIONS.get_class(c[1]), SparseAttention)]
CAUSAL = pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])


def test_sparse_configs_cover_every_sparse_implementation():
    names = {n for n in attention.names()
             if issubclass(attention.IMPLEMENTATIONS.get_class(n), SparseAttention)}
    assert names == {"sliding_window", "sink_window", "block_sparse"}
    assert {name for _, name, _ in SPARSE} == names


# -- mask_mod == allowed_mask ------------------------------------------------------------------
@CAUSAL
@pytest.mark.parametrize("n", [1, 7, 37, 130], ids=lambda n: f"seq{n}")
@pytest.mark.parametrize("name,opts", config_params(SPARSE))
def test_mask_mod_is_the_allowed_mask(name, opts, n, causal):
    impl = attention.get(name, **opts)
    mm = impl.flex_mask_mod(n, causal)
    want = impl.allowed_mask(n, causal)
    idx = torch.arange(n)
    assert torch.equal(gpu.eval_mask_mod(mm, idx, idx), want)
    assert torch.equal(fa.create_mask(mm, 1, 1, n, n, device="cpu")[0, 0], want)  # flex's vmap


def test_block_sparse_mask_mod_follows_the_seeded_random_blocks():
    n = 60
    a = attention.get("block_sparse", block_size=4, random_blocks=3, seed=0)
    b = attention.get("block_sparse", block_size=4, random_blocks=3, seed=1)
    idx = torch.arange(n)
    ma, mb = (gpu.eval_mask_mod(x.flex_mask_mod(n, False), idx, idx) for x in (a, b))
    assert not torch.equal(ma, mb)
    assert torch.equal(mb, b.allowed_mask(n, False))


# -- block masks -------------------------------------------------------------------------------
def _same_block_mask(mine, ref):
    assert mine.shape == ref.shape and mine.BLOCK_SIZE == ref.BLOCK_SIZE
    assert torch.equal(mine.to_dense(), ref.to_dense())
    for num, idx, rnum, ridx in [
        (mine.kv_num_blocks, mine.kv_indices, ref.kv_num_blocks, ref.kv_indices),
        (mine.full_kv_num_blocks, mine.full_kv_indices, ref.full_kv_num_blocks,
         ref.full_kv_indices),
    ]:
        assert torch.equal(num, rnum)
        for r in range(num.shape[-1]):
            c = int(num[0, 0, r])
            assert torch.equal(idx[0, 0, r, :c], ridx[0, 0, r, :c])


@CAUSAL
@pytest.mark.parametrize("n,block", [(37, 16), (130, 16), (300, 128)], ids=lambda x: str(x))
@pytest.mark.parametrize("name,opts", config_params(SPARSE))
def test_block_mask_equals_create_block_mask(name, opts, n, block, causal):
    mm = attention.get(name, **opts).flex_mask_mod(n, causal)
    ref = fa.create_block_mask(mm, None, None, n, n, device="cpu", BLOCK_SIZE=block)
    _same_block_mask(gpu.build_block_mask(mm, n, "cpu", block=block), ref)


def test_block_mask_built_in_chunks(monkeypatch):
    monkeypatch.setattr(gpu, "_MASK_CHUNK", 16 * 16 * 100)  # 1 query block per step
    impl = attention.get("sliding_window", window=9, global_tokens=(3, 50))
    mm = impl.flex_mask_mod(150, True)
    ref = fa.create_block_mask(mm, None, None, 150, 150, device="cpu", BLOCK_SIZE=16)
    _same_block_mask(gpu.build_block_mask(mm, 150, "cpu", block=16), ref)


@pytest.mark.parametrize("name,opts,per_row", [
    ("sliding_window", {"window": 512}, 5),      # (i - 512, i] touches <= 5 tiles of 128
    ("sink_window", {"n_sink": 4, "window": 512}, 6),
    ("block_sparse", {"block_size": 64}, 8),     # 4 blocks of 64 -> <= 8 tiles
], ids=["sliding_window", "sink_window", "block_sparse"])
def test_flex_work_is_linear_in_n(name, opts, per_row):
    """The block mask lists O(N w) tiles: flex skips the rest (dense would be nblk^2)."""
    impl = attention.get(name, **opts)
    done = {}
    for n in (2048, 4096):
        done[n], dense = gpu.block_counts(impl, n, True)
        nblk = n // gpu.FLEX_BLOCK
        assert done[n] <= per_row * nblk + 2 * nblk, (n, done[n])  # + global rows' tiles
        assert done[n] < dense / 3
    assert done[4096] <= 2 * done[2048] + 64


def test_block_masks_are_cached_per_options():
    a = attention.get("sliding_window", window=7)
    b = attention.get("sliding_window", window=7)
    c = attention.get("sliding_window", window=8)
    assert gpu.block_mask_for(a, 50, True, "cpu") is gpu.block_mask_for(b, 50, True, "cpu")
    assert gpu.block_mask_for(a, 50, True, "cpu") is not gpu.block_mask_for(c, 50, True, "cpu")
    assert gpu.block_mask_for(a, 50, True, "cpu") is not gpu.block_mask_for(a, 50, False, "cpu")
    assert a.mask_key() != c.mask_key()
    assert attention.get("sliding_window", window=7, scale=0.3).mask_key() == a.mask_key()


# -- flex forward (eager reference on CPU) -----------------------------------------------------
FLEX_SHAPES = [
    pytest.param(dict(batch=2, heads=4, kv_heads=2, seq=37, d=16), id="gqa2-seq37"),
    pytest.param(dict(batch=1, heads=2, kv_heads=2, seq=130, d=16, dv=32), id="mha-seq130-dv32"),
]


@pytest.fixture
def eager_flex(monkeypatch):
    """flex_attention's unfused reference without dynamo (forward only; fast on CPU)."""
    monkeypatch.setattr(fa, "_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG", True, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@CAUSAL
@pytest.mark.parametrize("shape", FLEX_SHAPES)
@pytest.mark.parametrize("name,opts", config_params(SPARSE))
def test_flex_path_equals_naive(eager_flex, name, opts, shape, causal):
    impl = attention.get(name, **opts)
    q, k, v = make_qkv(**shape)
    out = gpu.flex_forward(impl, q, k, v, causal, compiled=False)
    assert out.shape == q.shape[:3] + (v.shape[-1],) and out.dtype == q.dtype
    assert rel_err(out, impl.naive(q, k, v, causal=causal)) < 1e-5


def test_flex_path_uses_the_scale_option(eager_flex):
    impl = attention.get("sink_window", n_sink=1, window=3, scale=0.9)
    q, k, v = make_qkv(seq=20)
    out = gpu.flex_forward(impl, q, k, v, True, compiled=False)
    assert rel_err(out, impl.naive(q, k, v)) < 1e-5
    assert rel_err(out, attention.get("sink_window", n_sink=1, window=3).naive(q, k, v)) > 1e-2


# -- fla adapter, with a stand-in kernel ----------------------------------------------------------
def fake_chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                           normalize=True):
    """fla's documented contract (q/k ``[B, T, H, K]``, v ``[B, T, H, V]``, state
    ``[B, H, K, V]`` in float32): ``o_t = scale * q_t (h0 + sum_{s<=t} k_s v_s^T)``."""
    assert not normalize and q.shape == k.shape and v.shape[:3] == q.shape[:3]
    assert q.shape[1] >= q.shape[2], "fla 0.3/0.4 reject seq < heads"
    assert v.shape[-1] % 16 == 0, "fla 0.6's backward refuses value widths not a multiple of 16"
    b, t, h, kd = q.shape
    s = q.new_zeros(b, h, kd, v.shape[-1]) if initial_state is None else initial_state
    assert s.dtype == torch.float32 and s.shape == (b, h, kd, v.shape[-1])
    outs = []
    for i in range(t):
        s = s + k[:, i, :, :, None] * v[:, i, :, None, :]
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, i], s))
    return torch.stack(outs, dim=1), (s if output_final_state else None)


@pytest.fixture
def fake_fla(monkeypatch):
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return fake_chunk_linear_attn(*args, **kwargs)

    monkeypatch.setattr(gpu, "fla_linear_attn", lambda: counted)
    monkeypatch.setattr(gpu, "use_fla", lambda fq, v1: fq.shape[3] >= fq.shape[1] * fq.shape[2])
    return calls


@pytest.mark.parametrize("feature_map", ["elu", "performer", "hedgehog"])
def test_fla_adapter_equals_naive(fake_fla, feature_map):
    impl = attention.get("linear", feature_map=feature_map, form="chunked", chunk_size=8,
                         d_head=16)
    q, k, v = make_qkv(batch=2, heads=4, kv_heads=2, seq=29, dv=8, requires_grad=True)
    out = impl(q, k, v, causal=True)
    ref = impl.naive(q, k, v, causal=True)
    assert fake_fla and rel_err(out, ref) < 1e-5
    params = [p for p in impl.parameters() if p.requires_grad]
    g = torch.autograd.grad(out.sum(), [q, k, v, *params])
    gr = torch.autograd.grad(ref.sum(), [q, k, v, *params])
    assert all(rel_err(a, b) < 1e-4 for a, b in zip(g, gr))


def test_fla_gets_a_padded_value_width_and_slices_it_back(fake_fla):
    """d_head 16 makes v' = [v, 1] 17 wide (odd): the kernel sees 32 columns (the fake asserts a
    multiple of 16), and the output and state equal the unpadded naive form."""
    impl = attention.get("linear", feature_map="elu", form="chunked", d_head=16)
    q, k, v = make_qkv(batch=1, heads=2, kv_heads=2, seq=24, d=16, dv=16)
    out, state = impl(q, k, v, causal=True, return_state=True)
    assert fake_fla and rel_err(out, impl.naive(q, k, v, causal=True)) < 1e-5
    assert state.kv.shape[-1] == 17                 # the state keeps the true width


def test_fla_unavailable_reason_is_kept():
    if gpu.fla_linear_attn() is not None:
        assert gpu.fla_unavailable_reason() is None
    else:          # here: fla not installed; the reason names the import error, not "None"
        assert "fla" in gpu.fla_unavailable_reason()


def test_fla_adapter_carries_the_state(fake_fla):
    impl = attention.get("linear", feature_map="elu", form="chunked", d_head=16)
    q, k, v = make_qkv(batch=1, heads=4, kv_heads=1, seq=40)
    whole, s_whole = impl(q, k, v, return_state=True)
    first, s = impl(q[:, :, :25], k[:, :, :25], v[:, :, :25], return_state=True)
    second, s_end = impl(q[:, :, 25:], k[:, :, 25:], v[:, :, 25:], state=s, return_state=True)
    assert len(fake_fla) == 3
    assert rel_err(torch.cat([first, second], dim=2), whole) < 1e-5
    assert rel_err(s_end.kv, s_whole.kv) < 1e-5 and s_end.pos == 40


# -- CPU takes no GPU path ---------------------------------------------------------------------
def test_cpu_never_takes_a_gpu_path(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("GPU path taken on CPU")

    monkeypatch.setattr(gpu, "flex_forward", boom)
    monkeypatch.setattr(gpu, "fla_chunked", boom)
    q, k, v = make_qkv(seq=70, d=64)
    assert not gpu.use_flex(q, v)
    for name in attention.names():
        attention.get(name)(q, k, v, causal=True)
    attention.get("linear", form="chunked")(q, k, v, causal=True)
