"""The protocol every attention implementation follows, and the helpers they share.

Architecture
------------
:class:`AttentionImpl` is a ``torch.nn.Module`` with one call signature for every family::

    forward(q, k, v, causal=True) -> out
        q   [batch, heads,    seq, d_head]
        k   [batch, kv_heads, seq, d_head]       heads % kv_heads == 0 (GQA)
        v   [batch, kv_heads, seq, d_head_v]
        out [batch, heads,    seq, d_head_v]     same dtype as q

GQA follows HF ``repeat_kv``: query head ``h`` reads kv head ``h // (heads // kv_heads)``.
The score scale defaults to ``1 / sqrt(d_head)`` everywhere (option ``scale=``).

Beside the fast ``forward`` every implementation has

- ``naive(q, k, v, causal=True)``: an obviously-correct, slow reference of the same math that
  builds the dense ``[seq, seq]`` matrix with an explicit mask (tests only);
- ``pattern(q, k, v, causal=True) -> [batch, heads, q_seq, k_seq]``: the effective, normalised
  attention weights (zeros outside the allowed set), for probes on short inputs;
- ``state_size(seq_len) -> int``: floats per head carried when decoding token by token;
- ``quadratic``: whether ``forward`` does O(seq^2) work / memory;
- ``describe() -> dict``: name and options, for reports.

Options are the keyword-only parameters of each subclass' ``__init__``; the registry
(:mod:`interp.attention.registry`) reads them from the signature, so there is no second list.
Two options are shared by all: ``scale`` and ``d_head`` (the head size ``state_size`` reports
for, and the size learnable feature maps are built for).

Numerics: low-precision inputs are up-cast to float32 inside the fast paths that are not torch
SDPA, and results are cast back to ``q.dtype``. Fully masked rows give zeros, never NaN
(:func:`safe_softmax`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from interp.attention.registry import keyword_options
from interp.errors import InputError

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_qkv(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, int, int, int, int]:
    """Validate shapes/dtypes/devices of ``q [b, h, n, d]``, ``k [b, hk, n, d]``, ``v [b, hk, n, dv]``.

    Returns ``(batch, heads, kv_heads, seq, d_head)``. Raises ``ValueError`` naming the problem.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise InputError(
                f"{name} must have 4 dims [batch, heads, seq, d_head], got shape {tuple(t.shape)}"
            )
        if t.dtype not in SUPPORTED_DTYPES:
            raise InputError(
                f"{name} has dtype {t.dtype}; supported: {', '.join(map(str, SUPPORTED_DTYPES))}"
            )
    if not (q.dtype == k.dtype == v.dtype):
        raise InputError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise InputError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    b, h, n, d = q.shape
    if k.shape[0] != b or v.shape[0] != b:
        raise InputError(f"batch mismatch: q {b}, k {k.shape[0]}, v {v.shape[0]}")
    hk = k.shape[1]
    if v.shape[1] != hk:
        raise InputError(f"k has {hk} heads but v has {v.shape[1]}; k and v must match")
    if hk == 0 or h % hk != 0:
        raise InputError(f"query heads ({h}) must be a multiple of kv heads ({hk})")
    if k.shape[2] != n or v.shape[2] != n:
        raise InputError(
            f"seq mismatch: q has {n} positions, k {k.shape[2]}, v {v.shape[2]}; "
            "all three must have the same length"
        )
    if k.shape[3] != d:
        raise InputError(f"d_head mismatch: q has {d}, k has {k.shape[3]}")
    if n == 0:
        raise InputError("seq must be at least 1")
    return b, h, hk, n, d


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """``[b, hk, n, d] -> [b, hk * n_rep, n, d]``; head ``h`` of the result is head ``h // n_rep``."""
    if n_rep == 1:
        return x
    return x.repeat_interleave(n_rep, dim=1)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64, everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def safe_softmax(scores: Tensor, dim: int = -1) -> Tensor:
    """Softmax along ``dim`` where ``-inf`` marks masked entries; fully masked rows give zeros
    (and zero gradients), never NaN. Any shape."""
    m = scores.detach().amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m)
    den = e.sum(dim=dim, keepdim=True)
    return e / den.clamp_min(torch.finfo(e.dtype).tiny)


def masked_softmax_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """Dense reference: ``softmax(q k^T * scale, masked) v``.

    q ``[b, h, n, d]``, k/v ``[b, hk, n, d(v)]``, mask ``[n, n]`` bool (True = may attend).
    Returns ``(out [b, h, n, dv], weights [b, h, n, n])`` in the compute dtype.
    """
    ct = compute_dtype(q.dtype)
    h, hk = q.shape[1], k.shape[1]
    k = repeat_kv(k, h // hk).to(ct)
    v = repeat_kv(v, h // hk).to(ct)
    scores = torch.matmul(q.to(ct), k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    w = safe_softmax(scores, dim=-1)
    return torch.matmul(w, v), w


class AttentionImpl(nn.Module):
    """Base class of every registered attention implementation (see the module docstring).

    Subclasses set ``name`` (filled in by the registry) and ``quadratic``, take their options as
    keyword-only ``__init__`` parameters (always including ``scale`` and ``d_head``), and
    implement ``_forward``, ``naive`` and ``state_size``; ``pattern`` where it makes sense.
    """

    name: str = "?"
    quadratic: bool = True
    #: another registered name whose math this one computes exactly (a different execution
    #: strategy, e.g. ``softmax_rows`` for ``softmax``); sweeps over the registry skip it
    same_math_as: str | None = None

    def __init__(self, *, scale: float | None = None, d_head: int = 64) -> None:
        super().__init__()
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise InputError(f"scale must be a positive number or None, got {scale!r}")
        if not (isinstance(d_head, int) and d_head > 0):
            raise InputError(f"d_head must be a positive int, got {d_head!r}")
        self.scale = None if scale is None else float(scale)
        self.d_head = d_head

    # -- options -------------------------------------------------------------------------
    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """``{option: default}`` read from the keyword-only parameters of ``__init__``."""
        return keyword_options(cls)

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., option: value, ...}`` with the current option values."""
        out: dict[str, Any] = {"name": self.name}
        for opt in self.option_defaults():
            val = getattr(self, opt)
            out[opt] = list(val) if isinstance(val, tuple) else val
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")

    def get_scale(self, d_head: int) -> float:
        """The score scale: the ``scale`` option, else ``1 / sqrt(d_head)``."""
        return self.scale if self.scale is not None else 1.0 / math.sqrt(d_head)

    # -- the protocol --------------------------------------------------------------------
    def forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
        """q ``[b, h, n, d]``, k ``[b, hk, n, d]``, v ``[b, hk, n, dv]`` -> ``[b, h, n, dv]``."""
        check_qkv(q, k, v)
        return self._forward(q, k, v, causal=bool(causal))

    def _forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
        raise NotImplementedError

    def naive(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
        """Slow dense reference of the same math; shapes as ``forward``."""
        raise NotImplementedError

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
        """Effective attention weights ``[b, h, n, n]`` (rows sum to 1 over the allowed set)."""
        raise NotImplementedError(f"{self.name} has no attention pattern")

    def state_size(self, seq_len: int, *, d_head: int | None = None) -> int:
        """Floats per head carried when decoding ``seq_len`` tokens one at a time.

        ``d_head`` defaults to the ``d_head`` option.
        """
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------------------
    def _state_args(self, seq_len: int, d_head: int | None) -> tuple[int, int]:
        if not (isinstance(seq_len, int) and seq_len >= 1):
            raise InputError(f"seq_len must be a positive int, got {seq_len!r}")
        d = self.d_head if d_head is None else d_head
        if not (isinstance(d, int) and d >= 1):
            raise InputError(f"d_head must be a positive int, got {d!r}")
        return seq_len, d


class SparseAttention(AttentionImpl):
    """Base of the implementations that attend to a fixed set of allowed keys per query
    (sliding window, sink + window, block-sparse). Subclasses define :meth:`allowed_mask`;
    the dense reference, ``naive`` and ``pattern`` are built from it here, once."""

    quadratic = False

    def allowed_mask(self, n: int, causal: bool = True, device=None) -> Tensor:
        """``[n, n]`` bool: query ``i`` may attend key ``j`` (the layout, causal rule included)."""
        raise NotImplementedError

    def flex_mask_mod(self, n: int, causal: bool = True, device=None):
        """The same allowed set as :meth:`allowed_mask`, as a flex_attention
        ``mask_mod(b, h, q_idx, kv_idx) -> bool`` for sequences of ``n`` tokens (elementwise
        tensor ops only, so flex can vmap and compile it). Used on CUDA
        (:mod:`interp.attention.gpu`)."""
        raise NotImplementedError

    def allowed_rows(self, n: int, rows: tuple[int, int], keys: tuple[int, int],
                     causal: bool = True, device=None, mask_mod=None) -> Tensor:
        """Rows ``[i0, i1)`` x keys ``[j0, j1)`` of :meth:`allowed_mask` (bool
        ``[i1 - i0, j1 - j0]``) without building the ``[n, n]`` mask: :meth:`flex_mask_mod`
        evaluated on broadcast position grids. Pass a ``mask_mod`` already built for ``n``
        to reuse it across blocks."""
        mod = mask_mod or self.flex_mask_mod(n, causal, device)
        qi = torch.arange(rows[0], rows[1], device=device)[:, None]
        kj = torch.arange(keys[0], keys[1], device=device)[None, :]
        return torch.as_tensor(mod(None, None, qi, kj), device=device).expand(
            rows[1] - rows[0], keys[1] - keys[0])

    def mask_key(self) -> tuple:
        """Hashable summary of the options that define the allowed set (cache key of the
        flex block masks): name and every option but ``scale`` and ``d_head``."""
        opts = self.describe()
        return (opts.pop("name"),) + tuple(
            (k, tuple(v) if isinstance(v, list) else v)
            for k, v in sorted(opts.items()) if k not in ("scale", "d_head")
        )

    def _dense(self, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> tuple[Tensor, Tensor]:
        check_qkv(q, k, v)
        mask = self.allowed_mask(q.shape[2], causal, q.device)
        return masked_softmax_attention(q, k, v, mask, self.get_scale(q.shape[-1]))

    def naive(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
        return self._dense(q, k, v, causal)[0].to(q.dtype)

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
        return self._dense(q, k, v, causal)[1].to(q.dtype)  # [b, h, n, n]
