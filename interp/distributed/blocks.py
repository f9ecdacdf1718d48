"""Per-block attention kernels used by ring attention (pure tensor ops, no communication).

Architecture
------------
Ring attention never sees the whole key sequence at once: each rank attends its local
queries to one key/value *block* at a time and merges the partial results. This module
holds the three tensor-level pieces it needs:

- :func:`block_forward` -- attention of a query block to a key block, returning the block
  output **and** its log-sum-exp (``lse``) so partial results can be merged exactly.
- :func:`merge_block` -- the online-softmax merge in log-sum-exp form (Liu et al. 2023)::

      out = out - sigmoid(lse_b - lse) * (out - out_b)
      lse = lse - logsigmoid(lse - lse_b)

- :func:`block_backward` -- FlashAttention-style gradient of one block, recomputing the
  probabilities ``exp(q k^T * scale - lse)`` from the *global* (fully merged) ``lse`` and using
  the global output in ``delta = rowsum(dout * out)``. Summing it over all blocks gives the
  exact gradients of the full attention.

Masks
-----
A block pair is either ``"full"`` (every query sees every key) or ``"causal"``: query ``i``
sees key ``j`` iff ``j <= i`` with both blocks starting at the same sequence position
(top-left aligned; the key block may be shorter than the query block when padded keys were
trimmed off the end). Ring attention only ever needs these two kinds (see ``ring.py``).

Implementations
---------------
``"explicit"`` is the obvious reference: materialise the ``[q_len, k_len]`` scores in float32,
any device, GQA by viewing the query heads as ``[kv_heads, group]``. ``"fused"`` calls torch's
CPU flash-attention kernel (``aten._scaled_dot_product_flash_attention_for_cpu`` and its
backward), which returns the log-sum-exp and needs only O(q_len) extra memory; GQA keys are
expanded to the query heads for it. ``"auto"`` picks ``"fused"`` on CPU for float32/bfloat16
and ``"explicit"`` otherwise. Both return float32 results (float64 for float64 inputs); the
tests compare them.

Shapes: q ``[batch, heads, q_len, d_head]``, k/v ``[batch, kv_heads, k_len, d_head]``,
out ``[batch, heads, q_len, d_head]`` (float32), lse ``[batch, heads, q_len]`` (float32).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from interp.errors import InputError

MaskKind = Literal["full", "causal"]
BlockImpl = Literal["auto", "fused", "explicit"]

_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float64)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32, or float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.to(acc_dtype(x.dtype))


def _has_fused_cpu() -> bool:
    return hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


def resolve_impl(impl: BlockImpl, q: torch.Tensor) -> Literal["fused", "explicit"]:
    """Choose the block kernel for tensors like ``q``."""
    if impl == "explicit":
        return "explicit"
    fused_ok = q.device.type == "cpu" and q.dtype in _FUSED_DTYPES and _has_fused_cpu()
    if impl == "fused":
        if not fused_ok:
            raise InputError(
                f"block_impl='fused' needs CPU tensors of dtype {_FUSED_DTYPES} and a torch with "
                f"the CPU flash-attention op; got {q.device} {q.dtype}. Use 'auto' or 'explicit'."
            )
        return "fused"
    if impl != "auto":
        raise InputError(f"unknown block_impl {impl!r}; expected 'auto', 'fused' or 'explicit'")
    return "fused" if fused_ok else "explicit"


def _causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """Boolean ``[q_len, k_len]``: True where query i may see key j (j <= i)."""
    qi = torch.arange(q_len, device=device)[:, None]
    kj = torch.arange(k_len, device=device)[None, :]
    return kj <= qi


def _expand_kv(x: torch.Tensor, group: int) -> torch.Tensor:
    """``[b, kv_heads, s, d]`` -> ``[b, kv_heads * group, s, d]`` (query head h uses kv h // group)."""
    return x if group == 1 else x.repeat_interleave(group, dim=1)


def _reduce_kv_grad(g: torch.Tensor, group: int) -> torch.Tensor:
    """Inverse of :func:`_expand_kv` for gradients: sum the query heads sharing a kv head."""
    if group == 1:
        return g
    b, h, s, d = g.shape
    return g.reshape(b, h // group, group, s, d).sum(dim=2)


# ----------------------------------------------------------------------------- explicit


def _explicit_scores(q, k, scale, mask: MaskKind):
    """fp32 scores ``[b, kvh, g, q_len, k_len]`` with the mask applied as -inf."""
    b, h, lq, d = q.shape
    kvh = k.shape[1]
    qg = _acc(q).reshape(b, kvh, h // kvh, lq, d)
    s = torch.matmul(qg, _acc(k).unsqueeze(2).transpose(-1, -2)) * scale
    if mask == "causal":
        s = s.masked_fill(~_causal_mask(lq, k.shape[2], q.device), float("-inf"))
    return s


def _explicit_forward(q, k, v, mask, scale):
    b, h, lq, d = q.shape
    s = _explicit_scores(q, k, scale, mask)  # [b, kvh, g, lq, lk]
    lse = torch.logsumexp(s, dim=-1)  # [b, kvh, g, lq]
    p = torch.exp(s - lse.unsqueeze(-1))
    out = torch.matmul(p, _acc(v).unsqueeze(2))  # [b, kvh, g, lq, d]
    return out.reshape(b, h, lq, -1), lse.reshape(b, h, lq)


def _explicit_backward(dout, q, k, v, out, lse, mask, scale):
    b, h, lq, d = q.shape
    kvh = k.shape[1]
    g = h // kvh
    s = _explicit_scores(q, k, scale, mask)
    p = torch.exp(s - _acc(lse).reshape(b, kvh, g, lq, 1))  # [b, kvh, g, lq, lk]
    do = _acc(dout).reshape(b, kvh, g, lq, -1)
    delta = (do * _acc(out).reshape(b, kvh, g, lq, -1)).sum(-1, keepdim=True)
    vf = _acc(v).unsqueeze(2)
    dv = torch.matmul(p.transpose(-1, -2), do).sum(2)  # [b, kvh, lk, dv]
    dp = torch.matmul(do, vf.transpose(-1, -2))
    ds = p * (dp - delta) * scale
    dq = torch.matmul(ds, _acc(k).unsqueeze(2)).reshape(b, h, lq, d)
    dk = torch.matmul(ds.transpose(-1, -2), _acc(q).reshape(b, kvh, g, lq, d)).sum(2)
    return dq, dk, dv


# ----------------------------------------------------------------------------- fused (CPU)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """The CPU flash kernel takes any strides with a contiguous last dim: copy only if needed."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _fused_forward(q, k, v, mask, scale):
    group = q.shape[1] // k.shape[1]
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        _rows(q),
        _rows(_expand_kv(k, group)),
        _rows(_expand_kv(v, group)),
        0.0,
        mask == "causal",
        scale=scale,
    )
    return _acc(out), _acc(lse)


def _fused_backward(dout, q, k, v, out, lse, mask, scale):
    group = q.shape[1] // k.shape[1]
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        _rows(dout.to(q.dtype)),
        _rows(q),
        _rows(_expand_kv(k, group)),
        _rows(_expand_kv(v, group)),
        _rows(out.to(q.dtype)),
        _rows(_acc(lse)),
        0.0,
        mask == "causal",
        scale=scale,
    )
    return _acc(dq), _reduce_kv_grad(_acc(dk), group), _reduce_kv_grad(_acc(dv), group)


# ----------------------------------------------------------------------------- public


def block_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: MaskKind,
    scale: float,
    impl: BlockImpl = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of one query block to one key block.

    Returns ``out`` ``[b, heads, q_len, d_head]`` and ``lse`` ``[b, heads, q_len]``, both float32.
    Every query row must see at least one key (true for ``"full"`` and top-left ``"causal"``).
    """
    if resolve_impl(impl, q) == "fused":
        return _fused_forward(q, k, v, mask, scale)
    return _explicit_forward(q, k, v, mask, scale)


def block_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    mask: MaskKind,
    scale: float,
    impl: BlockImpl = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This block's share of ``(dq, dk, dv)`` (float32), given the *global* ``out`` and ``lse``.

    ``dq`` is ``[b, heads, q_len, d_head]``; ``dk``/``dv`` are ``[b, kv_heads, k_len, d_head]``.
    """
    if resolve_impl(impl, q) == "fused":
        return _fused_backward(dout, q, k, v, out, lse, mask, scale)
    return _explicit_backward(dout, q, k, v, out, lse, mask, scale)


def merge_block(
    out: torch.Tensor, lse: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> None:
    """Merge a block result into the running ``(out, lse)`` in place (all float32)::

        out = out - sigmoid(lse_b - lse) * (out - out_b)
        lse = lse - logsigmoid(lse - lse_b)

    ``out`` ``[b, h, n, d]``, ``lse`` ``[b, h, n]``; both may be views (slices) of larger
    accumulators. The running values must already hold a block (finite ``lse``). ``out_b`` is
    used as scratch space (overwritten) so the merge allocates no ``[b, h, n, d]`` temporaries.
    """
    weight = torch.sigmoid(lse_b - lse).unsqueeze(-1)  # [b, h, n, 1]
    out.add_(out_b.sub_(out).mul_(weight))  # out + w * (out_b - out)
    lse.sub_(F.logsigmoid(lse - lse_b))
