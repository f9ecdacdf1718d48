"""GPU fast paths behind the registry names: flex_attention block masks and fla kernels.

Architecture
------------
Nothing here changes *what* an implementation computes, only *how* on a CUDA device. Each
implementation's fast ``forward`` asks one question before its CPU code:

- ``sliding_window``, ``sink_window``, ``block_sparse`` (:class:`~interp.attention.base.
  SparseAttention`): :func:`use_flex` -- a CUDA tensor in float16/bfloat16/float32 with head
  sizes >= 16 (flex's Triton kernels need that) and a torch whose
  ``torch.nn.attention.flex_attention`` is complete. Then :func:`flex_forward` runs
  ``flex_attention`` with a :class:`BlockMask` built from the implementation's
  ``flex_mask_mod`` -- the same allowed set as its ``allowed_mask``, written as a
  ``mask_mod(b, h, q_idx, kv_idx)`` (tested index by index against ``allowed_mask`` on CPU).
  The kernel visits only the 128 x 128 tiles the block mask lists, so a window of ``w`` costs
  O(N w) work (plus O(N) per global token or sink); tiles cut by the mask evaluate ``mask_mod`` per element, so the result is exact.
  GQA goes through ``enable_gqa=True``; the scale is the implementation's; the output has
  ``q.dtype`` (flex accumulates in float32).
- ``linear`` (chunked form, causal): :func:`use_fla` -- a CUDA float32 feature tensor, the
  ``fla`` package (``pip install interp[gpu]``: fla-core, ops only), a feature dim <= 256
  (what fla's own tests cover) and at least as many tokens as heads (fla 0.3/0.4 reject
  ``seq < heads`` as a probable layout mistake). Then :func:`fla_chunked` replaces the torch
  ``_chunked`` form: fla's ``chunk_linear_attn(normalize=False, scale=1)`` on the
  feature-mapped ``phi(q)``, ``phi(k)`` and ``v' = [v, 1]`` returns exactly our numerator
  ``phi(q_i) S_i`` *and* (last column) the denominator ``phi(q_i) . sum_{j<=i} phi(k_j)``, plus
  the carried state; the caller divides by ``den + eps`` as on CPU. (fla's ``normalize=True``
  is not used: its epsilon is fixed at 1e-10 where ours is the ``eps`` option, and before
  fla 0.5 it ignores the initial state's normaliser.) fla computes float32 inputs with TF32
  tensor-core dots (relative error ~1e-3).
- ``softmax``: torch SDPA already dispatches to the flash / memory-efficient CUDA kernels.

On CPU every fast path stays as it was: :func:`use_flex` and :func:`use_fla` return False.
(One device rule lives in ``linear.py``: the loop over segments of a few hundred tokens, a CPU
cache optimisation, runs on CPU only; elsewhere the causal chunked form runs in one pass.)

Caching and compilation
-----------------------
``flex_attention`` is compiled once (``torch.compile(dynamic=False)``): dynamo keeps one entry
per (shape, dtype, mask options), so each is compiled the first time it is met. Its default
limit of 8 entries per function would make the 9th silently fall back to flex's *unfused*
eager implementation, which materialises the dense N x N scores; calls here raise that limit
to :data:`RECOMPILE_LIMIT`. Block masks are cached per (implementation options, length,
causal, device) (:data:`_BLOCK_MASK_CACHE` entries, oldest dropped first), so the layers of a
swapped model share one. :func:`build_block_mask` evaluates the ``mask_mod`` on a few query
blocks at a time (never an N x N tensor; torch's ``create_block_mask`` evaluates the whole
grid at once unless compiled) and gives the same :class:`BlockMask` as ``create_block_mask``
(tested on CPU).
"""
from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.errors import InputError

#: flex_attention's tile (and block-mask block) size
FLEX_BLOCK = 128
#: dynamo cache entries allowed for the compiled flex_attention (torch's default is 8)
RECOMPILE_LIMIT = 256
#: block masks kept (oldest dropped first)
_BLOCK_MASK_CACHE = 32
#: mask elements evaluated per step of :func:`build_block_mask`
_MASK_CHUNK = 1 << 25
#: dtypes flex_attention's CUDA kernels take
FLEX_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: largest feature dim sent to fla
FLA_MAX_FEATURES = 256

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


# -- availability ----------------------------------------------------------------------------
@functools.cache
def flex_module() -> Any | None:
    """``torch.nn.attention.flex_attention`` when it has everything used here, else None."""
    try:
        from torch.nn.attention import flex_attention as fa
    except ImportError:
        return None
    needed = ("flex_attention", "create_block_mask", "BlockMask")
    if not all(hasattr(fa, name) for name in needed):
        return None
    if "seq_lengths" not in inspect.signature(fa.BlockMask.from_kv_blocks).parameters:
        return None
    return fa


#: fla kernels are given value widths padded to a multiple of this (fla 0.6's backward refuses
#: odd widths in 16-bit, citing a Triton miscompile; its own tests only use V = K)
FLA_WIDTH_MULTIPLE = 16


@functools.cache
def _fla_import() -> tuple[Callable | None, str | None]:
    try:
        from fla.ops.linear_attn import chunk_linear_attn
    except Exception as exc:  # not installed, or installed without a working triton
        return None, f"{type(exc).__name__}: {exc}"
    return chunk_linear_attn, None


def fla_linear_attn() -> Callable | None:
    """fla's ``chunk_linear_attn`` (package fla-core), or None if it cannot be
    imported (:func:`fla_unavailable_reason` says why)."""
    return _fla_import()[0]


def fla_unavailable_reason() -> str | None:
    """Why fla's kernel cannot be used (the import error, e.g. not installed or a broken
    triton), or None when it imports."""
    return _fla_import()[1]


def use_flex(q: Tensor, v: Tensor) -> bool:
    """Whether a sparse-softmax forward on ``q [b, h, n, d]``, ``v [b, hk, n, dv]`` runs
    through flex_attention: CUDA, a flex dtype, ``d, dv >= 16``, flex available."""
    return (
        q.is_cuda
        and q.dtype in FLEX_DTYPES
        and q.shape[-1] >= 16
        and v.shape[-1] >= 16
        and flex_module() is not None
    )


def use_fla(fq: Tensor, v1: Tensor) -> bool:
    """Whether the causal chunked linear form on ``fq [b, hk, g, n, f]``, ``v1 [b, hk, n, e]``
    runs through fla: CUDA, float32 features, ``f <= FLA_MAX_FEATURES``, ``n >= heads``,
    fla installed."""
    b, hk, g, n, f = fq.shape
    return (
        fq.is_cuda
        and fq.dtype == torch.float32
        and f <= FLA_MAX_FEATURES
        and n >= hk * g
        and fla_linear_attn() is not None
    )


# -- block masks -----------------------------------------------------------------------------
def eval_mask_mod(mask_mod: MaskMod, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    """``mask_mod`` on every pair of ``q_idx [nq]`` x ``kv_idx [nk]`` by broadcasting (the
    mask mods here are elementwise, so this equals flex's vmap): ``[nq, nk]`` bool."""
    zero = torch.zeros((), dtype=torch.long, device=q_idx.device)
    out = mask_mod(zero, zero, q_idx[:, None], kv_idx[None, :])
    return out.expand(q_idx.numel(), kv_idx.numel()).to(torch.bool)


def _ordered(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """``[nq, nk]`` bool -> (count per row ``[1, 1, nq]``, indices of the True columns first,
    ascending ``[1, 1, nq, nk]``), int32 -- the layout ``BlockMask.from_kv_blocks`` takes."""
    dense = blocks.to(torch.int32)
    num = dense.sum(dim=-1)
    idx = torch.argsort(dense, dim=-1, descending=True, stable=True)
    return num.to(torch.int32)[None, None], idx.to(torch.int32)[None, None]


def build_block_mask(mask_mod: MaskMod, n: int, device: torch.device | str | None = None,
                     block: int = FLEX_BLOCK):
    """The :class:`BlockMask` of ``mask_mod`` for ``n`` queries and keys (batch and heads
    broadcast), equal to ``create_block_mask(mask_mod, None, None, n, n, device, block)``.

    The mask is evaluated ``_MASK_CHUNK`` elements at a time: memory O(chunk + (n/block)^2).
    A tile is *full* when every pair in it is allowed (the kernel then skips ``mask_mod``),
    *partial* when some are; out-of-range pairs count as not allowed.
    """
    fa = flex_module()
    if fa is None:
        raise RuntimeError(f"torch {torch.__version__} has no usable flex_attention")
    nblk = -(-n // block)
    pad = nblk * block - n
    kv = torch.arange(n, device=device)
    step = max(1, _MASK_CHUNK // (block * nblk * block))  # query blocks per chunk
    partial, full = [], []
    for r0 in range(0, nblk, step):
        r1 = min(nblk, r0 + step)
        q = torch.arange(r0 * block, min(r1 * block, n), device=device)
        m = eval_mask_mod(mask_mod, q, kv)  # [rows, n]
        m = F.pad(m, (0, pad, 0, (r1 - r0) * block - q.numel()))
        s = m.view(r1 - r0, block, nblk, block).sum(dim=(1, 3))  # allowed pairs per tile
        full.append(s == block * block)
        partial.append((s > 0) & (s < block * block))
    kv_num, kv_idx = _ordered(torch.cat(partial))
    full_num, full_idx = _ordered(torch.cat(full))
    return fa.BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod,
        seq_lengths=(n, n),
    )


_block_masks: OrderedDict[tuple, Any] = OrderedDict()


def block_mask_for(impl, n: int, causal: bool, device: torch.device | str):
    """The cached :class:`BlockMask` of ``impl.flex_mask_mod(n, causal, device)``."""
    device = torch.device(device)
    key = (impl.mask_key(), n, bool(causal), str(device))
    if key in _block_masks:
        return _block_masks[key]
    bm = build_block_mask(impl.flex_mask_mod(n, causal, device), n, device)
    _block_masks[key] = bm
    while len(_block_masks) > _BLOCK_MASK_CACHE:
        _block_masks.popitem(last=False)
    return bm


def block_counts(impl, n: int, causal: bool, device: torch.device | str = "cpu",
                 ) -> tuple[int, int]:
    """``(tiles computed, tiles of the dense grid)`` of ``impl``'s block mask: the work flex
    does, against dense attention (``nblk^2``)."""
    bm = block_mask_for(impl, n, causal, device)
    done = int(bm.kv_num_blocks.sum())
    if bm.full_kv_num_blocks is not None:
        done += int(bm.full_kv_num_blocks.sum())
    nblk = -(-n // FLEX_BLOCK)
    return done, nblk * nblk


# -- flex forward ----------------------------------------------------------------------------
@functools.cache
def _compiled_flex() -> Callable:
    return torch.compile(flex_module().flex_attention, dynamic=False)


def _recompile_limit():
    """Context: dynamo may keep up to ``RECOMPILE_LIMIT`` compiled entries per function."""
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    return cfg.patch(**{name: max(RECOMPILE_LIMIT, getattr(cfg, name))})


def flex_forward(impl, q: Tensor, k: Tensor, v: Tensor, causal: bool, *,
                 compiled: bool = True) -> Tensor:
    """``impl``'s attention through flex_attention. q ``[b, h, n, d]``, k ``[b, hk, n, d]``,
    v ``[b, hk, n, dv]`` -> ``[b, h, n, dv]`` in ``q.dtype``.

    ``compiled=False`` runs flex's eager reference (dense scores; forward only on CPU): for
    tests of the mask plumbing on machines without CUDA.
    """
    n = q.shape[2]
    bm = block_mask_for(impl, n, causal, q.device)
    kw = dict(block_mask=bm, scale=impl.get_scale(q.shape[-1]), enable_gqa=q.shape[1] != k.shape[1])
    if not compiled:
        return flex_module().flex_attention(q, k, v, **kw)
    with _recompile_limit():
        return _compiled_flex()(q, k, v, **kw)


# -- fla forward -----------------------------------------------------------------------------
def fla_chunked(fq: Tensor, fk: Tensor, v1: Tensor, s0: Tensor | None, causal: bool,
                chunk_size: int) -> tuple[Tensor, Tensor]:
    """Causal chunked linear attention through fla, same contract as ``linear._chunked``:
    fq ``[b, hk, g, n, f]``, fk ``[b, hk, n, f]``, v1 ``[b, hk, n, e]`` (``v' = [v, 1]``), s0
    ``[b, hk, f, e]`` or None -> (num ``[b, hk, g, n, e]``, state ``[b, hk, f, e]``).

    fla takes ``[batch, seq, heads, dim]`` with as many k/v heads as q heads, so the kv heads
    are repeated ``g`` times (the state copies are identical; the first is returned).
    ``chunk_size`` is fla's own (64). The value width ``e`` (``d + 1``: odd for every even
    head size) is padded with zero columns to a multiple of :data:`FLA_WIDTH_MULTIPLE` for the
    kernel and sliced back (exact: value columns do not mix).
    """
    if not causal:
        raise InputError("fla_chunked is the causal form")
    b, hk, g, n, f = fq.shape
    e = v1.shape[-1]
    h = hk * g
    q_ = fq.reshape(b, h, n, f).transpose(1, 2).contiguous()  # [b, n, h, f]
    k_ = fk.repeat_interleave(g, dim=1).transpose(1, 2).contiguous()
    v_ = v1.repeat_interleave(g, dim=1).transpose(1, 2).contiguous()  # [b, n, h, e]
    h0 = None if s0 is None else s0.repeat_interleave(g, dim=1).float().contiguous()
    pad = -e % FLA_WIDTH_MULTIPLE        # zero value columns: each output column depends only
    if pad:                              # on its own value column, so slicing back is exact
        v_ = F.pad(v_, (0, pad))
        h0 = None if h0 is None else F.pad(h0, (0, pad)).contiguous()
    o, ht = fla_linear_attn()(q_, k_, v_, scale=1.0, initial_state=h0,
                              output_final_state=True, normalize=False)
    num = o[..., :e].transpose(1, 2).reshape(b, hk, g, n, e).to(fq.dtype)
    s_new = ht[..., :e].reshape(b, hk, g, f, e)[:, :, 0].to(fq.dtype)
    return num, s_new
