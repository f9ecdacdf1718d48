"""Linear attention in three forms: parallel, recurrent, chunked.

Math
----
With a feature map ``phi`` (:mod:`interp.attention.feature_maps`) and ``v' = [v, 1]``::

    num_i = sum_{j in J(i)} (phi(q_i) . phi(k_j)) v'_j  = phi(q_i) S_i,   S_i = sum_{j in J(i)} phi(k_j) v'_j^T
    out_i = num_i[:dv] / (num_i[dv] + eps)

``J(i) = {j <= i}`` when causal, all positions (global sums) otherwise. The last column of the
state ``S [feature_dim, d_head_v + 1]`` is the normaliser ``sum_j phi(k_j)``, so numerator and
denominator come out of one matmul. Everything is accumulated in float32 (float64 stays
float64); ``eps`` keeps rows with an all-zero kernel finite (they give 0).

Forms (one signature, same result)
----------------------------------
- ``parallel``: the masked ``[n, n]`` kernel matrix (quadratic time and memory).
- ``recurrent``: token by token, carrying ``S`` (O(n) time, a Python loop: for tests and
  decoding, not for speed).
- ``chunked``: the sequence is cut into chunks of ``chunk_size``; inside a chunk the masked
  ``[C, C]`` kernel (all chunks in one batched matmul), across chunks the state: the per-chunk
  ``phi(k)^T v'`` is summed with an exclusive cumsum over chunks. Causal calls on the CPU run
  over segments of a few hundred tokens (``_SEGMENT_FLOATS``), carrying the state from one
  segment to the next exactly like a split-and-resume call, so the working set stays in cache.
  Without autograd each segment is a few batched matmuls written with ``out=`` into buffers
  allocated once per call (``LinearAttention._chunked_cpu``; ``benchmarks/linear_roofline.py``
  measures it against torch.bmm on the same shapes); with autograd, allocating ops only. Time
  O(n C f + n f dv), memory O(n C + (n / C) f dv) (per segment without autograd).

All forms take ``state=`` (a :class:`LinearState` from an earlier call) and
``return_state=True`` returns ``(out, state)``: a sequence split in two and resumed gives the same
output as one call. Positions continue from ``state.pos`` (cosFormer needs them).

On CUDA with the optional ``fla`` package (``interp[gpu]``: fla-core) the causal
chunked form runs fla's ``chunk_linear_attn`` kernel on the same features and ``v'``
(:mod:`interp.attention.gpu`); without it, the torch chunked form in one pass.

GQA: the state and key features are per kv head (feature maps are shared by all heads); query
features are grouped ``[b, kv_heads, group, n, f]`` against them, so nothing is repeated.
Decoding state per head: ``feature_dim * d_head + feature_dim`` floats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.attention import gpu
from interp.attention.base import AttentionImpl, check_qkv, compute_dtype, repeat_kv
from interp.attention.feature_maps import FEATURE_MAPS, FeatureMap
from interp.attention.registry import IMPLEMENTATIONS, keyword_options
from interp.attention.softmax import dense_mask
from interp.errors import InputError

FORMS = ("parallel", "recurrent", "chunked")
#: causal chunked calls run over segments of about this many q floats (b * h * seg * d)
_SEGMENT_FLOATS = 1 << 18


@dataclass
class LinearState:
    """Carried linear-attention state.

    ``kv [batch, kv_heads, feature_dim, d_head_v + 1]``: ``sum_j phi(k_j) v_j^T`` with the
    normaliser ``sum_j phi(k_j)`` as its last column; ``pos``: tokens consumed so far.
    """

    kv: Tensor
    pos: int


@IMPLEMENTATIONS.register("linear")
class LinearAttention(AttentionImpl):
    """Kernelised linear attention. Options: ``feature_map`` (see ``FEATURE_MAPS.names()``),
    ``form`` (parallel / recurrent / chunked), ``chunk_size``, ``eps``, ``scale``, ``d_head``, and
    the chosen feature map's own options (e.g. ``n_features`` for performer)."""

    def __init__(
        self,
        *,
        feature_map: str = "elu",
        form: str = "chunked",
        chunk_size: int = 64,
        eps: float = 1e-6,
        scale: float | None = None,
        d_head: int = 64,
        **feature_options: Any,
    ) -> None:
        super().__init__(scale=scale, d_head=d_head)
        if form not in FORMS:
            raise InputError(f"unknown form {form!r} for 'linear'; valid forms: {', '.join(FORMS)}")
        if not (isinstance(chunk_size, int) and chunk_size >= 1):
            raise InputError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise InputError(f"eps must be a positive number, got {eps!r}")
        cls = FEATURE_MAPS.get_class(feature_map)
        valid = keyword_options(cls)
        unknown = sorted(set(feature_options) - set(valid))
        if unknown:
            own = [o for o in self.option_defaults()]
            raise InputError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for 'linear' with "
                f"feature_map={feature_map!r}; valid options: {', '.join(own + list(valid))}"
            )
        self.feature_map = feature_map
        self.form = form
        self.chunk_size = chunk_size
        self.eps = float(eps)
        self.phi: FeatureMap = cls(d_head, **feature_options)
        self.quadratic = form == "parallel"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.phi.describe()}

    # -- features ------------------------------------------------------------------------
    def _features(self, q: Tensor, k: Tensor, pos: int, length: int) -> tuple[Tensor, Tensor]:
        """q ``[b, h, n, d]``, k ``[b, hk, n, d]`` -> ``phi(q) [b, hk, g, n, f]``, ``phi(k) [b, hk, n, f]``."""
        b, h, n, d = q.shape
        hk = k.shape[1]
        self.phi.check_d_head(d)
        ct = compute_dtype(q.dtype)
        positions = torch.arange(pos, pos + n, device=q.device)
        kw = dict(scale=self.get_scale(d), positions=positions, length=length)
        fq = self.phi(q.to(ct), is_query=True, **kw)
        fk = self.phi(k.to(ct), is_query=False, **kw)
        return fq.reshape(b, hk, h // hk, n, -1), fk

    # -- forward -------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        causal: bool = True,
        *,
        state: LinearState | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, LinearState]:
        """q ``[b, h, n, d]``, k ``[b, hk, n, d]``, v ``[b, hk, n, dv]`` -> out ``[b, h, n, dv]``
        (and the new :class:`LinearState` when ``return_state``)."""
        b, h, hk, n, d = check_qkv(q, k, v)
        dv = v.shape[-1]
        pos = 0
        if state is not None:
            if not isinstance(state, LinearState):
                raise InputError(f"state must be a LinearState, got {type(state).__name__}")
            f = self.phi.dim(d)
            if tuple(state.kv.shape) != (b, hk, f, dv + 1):
                raise InputError(
                    f"state.kv has shape {tuple(state.kv.shape)}, expected {(b, hk, f, dv + 1)} "
                    "[batch, kv_heads, feature_dim, d_head_v + 1]"
                )
            if self.phi.needs_fixed_length:
                raise InputError(
                    f"feature_map={self.feature_map!r} depends on the total length; pass "
                    "max_len=... to resume from a state"
                )
            pos = state.pos
        s0 = None if state is None else state.kv.to(compute_dtype(q.dtype))
        if self.form == "chunked" and causal and q.device.type == "cpu":
            # segments of a few hundred tokens keep the working set in the CPU cache; the
            # state is carried from one to the next exactly as in a split-and-resume call
            # (on a GPU one pass is faster: the torch form, or fla's kernel, see _run)
            seg_form = self._chunked_segments if self._grad(q, k, v) else self._chunked_cpu
            out, s_new = seg_form(q, k, v, s0, pos, pos + n)
        else:
            out, s_new = self._run(q, k, v, bool(causal), s0, pos, pos + n)
            out = out.reshape(b, h, n, dv).to(q.dtype)
        if return_state:
            return out, LinearState(kv=s_new, pos=pos + n)
        return out

    def _chunked_segments(self, q, k, v, s0, pos, length):
        """Causal chunked form on the CPU with autograd: each segment one pass of :func:`_chunked`
        (allocating ops only), the state carried as in a split-and-resume call. Same arguments
        and return as :meth:`_chunked_cpu`; the benchmark times it as the previous CPU path."""
        b, h, n, d = q.shape
        seg = max(self.chunk_size, (_SEGMENT_FLOATS // max(1, b * h * d)))
        seg = seg // self.chunk_size * self.chunk_size
        outs = []
        for st in range(0, n, seg):
            sl = slice(st, st + seg)
            o, s0 = self._run(q[:, :, sl], k[:, :, sl], v[:, :, sl], True, s0, pos + st, length)
            outs.append(o)
        out = torch.cat(outs, dim=3) if len(outs) > 1 else outs[0]
        return out.reshape(b, h, n, v.shape[-1]).to(q.dtype), s0

    def _run(self, q, k, v, causal, s0, pos, length):
        """One pass of the configured form over positions ``pos .. pos + n``.

        Returns ``(out [b, hk, g, n, dv], state [b, hk, f, dv + 1])`` in the compute dtype.
        """
        dv = v.shape[-1]
        fq, fk = self._features(q, k, pos, length)
        ct = fq.dtype
        v1 = F.pad(v.to(ct), (0, 1), value=1.0)  # v' = [v, 1]: [b, hk, n, dv + 1]
        run = {"parallel": _parallel, "recurrent": _recurrent, "chunked": _chunked}[self.form]
        if run is _chunked and causal and gpu.use_fla(fq, v1):
            run = gpu.fla_chunked  # CUDA + fla installed: its Triton kernel, same quantity
        num, s_new = run(fq, fk, v1, s0, causal, self.chunk_size)  # [b, hk, g, n, dv+1]
        return num[..., :dv] / (num[..., dv:] + self.eps), s_new

    def _grad(self, q: Tensor, k: Tensor, v: Tensor) -> bool:
        """Whether this call records autograd (then no in-place work on reused buffers)."""
        if not torch.is_grad_enabled():
            return False
        return (q.requires_grad or k.requires_grad or v.requires_grad
                or any(p.requires_grad for p in self.phi.parameters()))

    def _chunked_cpu(self, q, k, v, s0, pos, length):
        """Causal chunked form on the CPU without autograd, in segments of whole chunks.

        Each segment (``_SEGMENT_FLOATS``: a few hundred tokens of every head, so the working set
        stays in cache) is a handful of batched matmuls over all its chunks and heads, written
        with ``out=`` into buffers allocated once per call::

            A   = tril(phi(q_c) phi(k_c)^T)          [b*hk*nc, g*C, C]  one bmm, tril_ in place
            KV  = phi(k_c)^T v'_c                    [b*hk*nc, f, e]    one bmm
            S_c = S + sum_{c' < c} KV_c'             exclusive scan over the segment's chunks
            num = A v'_c + phi(q_c) S_c              one bmm + one baddbmm_
            out = num[:, :dv] / (num[:, dv] + eps)   written into the output's strided view

        ``v' = [v, 1]`` (its ones column is set once per call), so the normaliser comes out of the
        same matmuls. Queries of the ``g`` heads sharing a kv head are stacked in a chunk
        (``g*C`` rows against one key chunk). Features are written straight into the buffers
        (``FeatureMap.forward_into``). A tail of ``n mod C`` tokens resumes from the carried
        state through :meth:`_run`, exactly like a split-and-resume call. Returns
        ``(out [b, h, n, dv] in q's dtype, state [b, hk, f, dv + 1])``.
        """
        b, h, n, d = q.shape
        hk, dv = k.shape[1], v.shape[-1]
        g, bb, e = h // hk, b * hk, dv + 1
        self.phi.check_d_head(d)
        ct = compute_dtype(q.dtype)
        f = self.phi.dim(d)
        c = self.chunk_size
        main = n // c * c  # whole chunks; the rest resumes from the state
        dev = q.device
        out = torch.empty(b, h, n, dv, dtype=q.dtype, device=dev)
        s = torch.zeros(bb, f, e, dtype=ct, device=dev)
        if s0 is not None:
            s.copy_(s0.reshape(bb, f, e))
        if main:
            seg = max(c, _SEGMENT_FLOATS // max(1, b * h * d)) // c * c
            seg = min(seg, main)
            ncs = seg // c
            kw = dict(scale=self.get_scale(d), length=length)
            positions = torch.arange(pos, pos + main, device=dev)

            def buffer(*shape):  # flat storage: a shorter last segment takes a contiguous prefix
                return torch.empty(bb * ncs * math.prod(shape), dtype=ct, device=dev)

            bufs = [buffer(g * c, f), buffer(c, f), buffer(c, e), buffer(g * c, c),
                    buffer(f, e), buffer(f, e), buffer(g * c, e)]
            bufs[2].view(bb * ncs, c, e)[..., dv] = 1.0  # v' = [v, 1] (any prefix keeps it)
            views = {}

            def segment_views(nc):
                """[bb * nc, rows, cols] views of the buffers for a segment of nc chunks."""
                if nc not in views:
                    views[nc] = [buf[: bb * nc * (buf.numel() // (bb * ncs))].view(bb * nc, r, cl)
                                 for buf, (r, cl) in zip(bufs, [(g * c, f), (c, f), (c, e),
                                                                (g * c, c), (f, e), (f, e),
                                                                (g * c, e)])]
                return views[nc]

            for st in range(0, main, seg):
                L = min(seg, main - st)
                nc = L // c
                sl = slice(st, st + L)
                # phi(q) [bb*nc, g*c, f] (a kv head's g query heads stacked per chunk),
                # phi(k) [bb*nc, c, f], v' [bb*nc, c, e], A [bb*nc, g*c, c], per-chunk
                # phi(k)^T v' and the state before each chunk [bb*nc, f, e], num [bb*nc, g*c, e]
                fq, fk, v1, a, kv, sb, num = segment_views(nc)
                qs, ks = q[:, :, sl].to(ct), k[:, :, sl].to(ct)  # views when already ct
                kw["positions"] = positions[sl]
                if g == 1:  # [b, h, L, f] in sequence order
                    self.phi.forward_into(qs, fq.view(b, h, L, f), is_query=True, **kw)
                else:
                    fq.view(b, hk, nc, g, c, f).copy_(
                        _to_chunks(self.phi(qs, is_query=True, **kw), hk, nc, c))
                self.phi.forward_into(ks, fk.view(b, hk, L, f), is_query=False, **kw)
                v1.view(b, hk, nc, c, e)[..., :dv].copy_(v[:, :, sl].unflatten(2, (nc, c)))
                torch.bmm(fq, fk.transpose(1, 2), out=a)
                a.view(bb * nc * g, c, c).tril_()
                torch.bmm(fk.transpose(1, 2), v1, out=kv)
                # exclusive scan over the chunks: one add each (torch.cumsum along this
                # non-innermost dim is a scalar loop, ~2x slower here)
                kv4, sb4 = kv.view(bb, nc, f, e), sb.view(bb, nc, f, e)
                sb4[:, 0].copy_(s)
                for j in range(1, nc):
                    torch.add(sb4[:, j - 1], kv4[:, j - 1], out=sb4[:, j])
                torch.add(sb4[:, nc - 1], kv4[:, nc - 1], out=s)
                torch.bmm(a, v1, out=num)
                num.baddbmm_(fq, sb)
                num6 = num.view(b, hk, nc, g, c, e)
                torch.div(num6[..., :dv], num6[..., dv:].add_(self.eps),
                          out=_to_chunks(out[:, :, sl], hk, nc, c))
        s = s.view(b, hk, f, e)
        if main < n:
            o, s = self._run(q[:, :, main:], k[:, :, main:], v[:, :, main:], True, s, pos + main,
                             length)
            out[:, :, main:] = o.reshape(b, h, n - main, dv)
        return out, s

    # -- references ----------------------------------------------------------------------
    def _dense_weights(self, q: Tensor, k: Tensor, causal: bool) -> Tensor:
        """Unnormalised masked kernel ``[b, h, n, n]`` from the kernel's definition."""
        b, h, hk, n, d = check_qkv(q, k, k)
        self.phi.check_d_head(d)
        ct = compute_dtype(q.dtype)
        positions = torch.arange(n, device=q.device)
        kern = self.phi.kernel(
            q.to(ct), repeat_kv(k, h // hk).to(ct),
            scale=self.get_scale(d), positions=positions, length=n,
        )
        return kern * dense_mask(n, causal, q.device)

    def naive(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
        check_qkv(q, k, v)
        w = self._dense_weights(q, k, causal)
        vv = repeat_kv(v, q.shape[1] // k.shape[1]).to(w.dtype)
        out = torch.matmul(w, vv) / (w.sum(-1, keepdim=True) + self.eps)
        return out.to(q.dtype)

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
        check_qkv(q, k, v)
        w = self._dense_weights(q, k, causal)
        return (w / (w.sum(-1, keepdim=True) + self.eps)).to(q.dtype)  # [b, h, n, n]

    def state_size(self, seq_len: int, *, d_head: int | None = None) -> int:
        _, d = self._state_args(seq_len, d_head)
        f = self.phi.dim(d)
        return f * d + f


def _to_chunks(x: Tensor, hk: int, nc: int, c: int) -> Tensor:
    """View ``x [b, hk * g, nc * c, .]`` as ``[b, hk, nc, g, c, .]`` (no copy)."""
    return x.unflatten(2, (nc, c)).unflatten(1, (hk, -1)).transpose(2, 3)


# -- the three forms: fq [b, hk, g, n, f], fk [b, hk, n, f], v1 [b, hk, n, e], s0 [b, hk, f, e] --
# Each returns (num [b, hk, g, n, e], new state [b, hk, f, e]).


def _parallel(fq, fk, v1, s0, causal, chunk_size):
    a = torch.matmul(fq, fk.unsqueeze(2).transpose(-1, -2))  # [b, hk, g, n, n]
    if causal:
        a = torch.tril(a)
    num = torch.matmul(a, v1.unsqueeze(2))
    s_new = torch.matmul(fk.transpose(-1, -2), v1)  # [b, hk, f, e]
    if s0 is not None:
        num = num + torch.matmul(fq, s0.unsqueeze(2))
        s_new = s_new + s0
    return num, s_new


def _recurrent(fq, fk, v1, s0, causal, chunk_size):
    b, hk, g, n, f = fq.shape
    e = v1.shape[-1]
    s = fq.new_zeros(b, hk, f, e) if s0 is None else s0
    if not causal:
        for t in range(n):
            s = s + fk[:, :, t, :, None] * v1[:, :, t, None, :]
        return torch.matmul(fq, s.unsqueeze(2)), s
    outs = []
    for t in range(n):
        s = s + fk[:, :, t, :, None] * v1[:, :, t, None, :]  # [b, hk, f, e]
        outs.append(torch.matmul(fq[:, :, :, t, None, :], s.unsqueeze(2)))  # [b, hk, g, 1, e]
    return torch.cat(outs, dim=3), s


def _chunked(fq, fk, v1, s0, causal, chunk_size):
    b, hk, g, n, f = fq.shape
    e = v1.shape[-1]
    if not causal:
        s = torch.matmul(fk.transpose(-1, -2), v1)
        if s0 is not None:
            s = s + s0
        return torch.matmul(fq, s.unsqueeze(2)), s
    c = min(chunk_size, n)
    nc = -(-n // c)
    pad = nc * c - n
    if pad:  # zero features / values: padded keys add nothing, padded queries are dropped
        fq = F.pad(fq, (0, 0, 0, pad))
        fk = F.pad(fk, (0, 0, 0, pad))
        v1 = F.pad(v1, (0, 0, 0, pad))
    bb = b * hk
    # queries of the g heads sharing a kv head sit together in a chunk: [bb, nc, g*c, f]
    qc = fq.reshape(b, hk, g, nc, c, f).transpose(2, 3).reshape(bb, nc, g * c, f)
    kc = fk.reshape(bb, nc, c, f)
    vc = v1.reshape(bb, nc, c, e)
    # intra-chunk: masked [c, c] kernels of all chunks in one batched matmul
    a = torch.matmul(qc, kc.transpose(-1, -2))  # [bb, nc, g*c, c]
    a = a.view(bb, nc, g, c, c).tril_().view(bb, nc, g * c, c)
    num = torch.matmul(a, vc)  # [bb, nc, g*c, e]
    # inter-chunk: state before each chunk = s0 + exclusive cumsum of per-chunk phi(k)^T v'
    kv = torch.matmul(kc.transpose(-1, -2), vc)  # [bb, nc, f, e]
    s_init = kv.new_zeros(bb, 1, f, e) if s0 is None else s0.reshape(bb, 1, f, e)
    before = torch.cat([s_init, s_init + torch.cumsum(kv[:, :-1], dim=1)], dim=1)
    s_new = (before[:, -1] + kv[:, -1]).view(b, hk, f, e)
    num = num.view(bb * nc, g * c, e).baddbmm_(qc.reshape(bb * nc, g * c, f),
                                               before.view(bb * nc, f, e))
    num = num.view(b, hk, nc, g, c, e).transpose(2, 3).reshape(b, hk, g, nc * c, e)
    return num[:, :, :, :n], s_new
