"""Local softmax attention: sliding window (+ Longformer global tokens) and sink + window.

Allowed sets (query ``i``, key ``j``; with ``causal=True`` additionally ``j <= i``):

- ``sliding_window``: ``|i - j| < window`` -- i.e. keys ``(i - w, i]`` when causal, and the
  symmetric band ``(i - w, i + w)`` (``2w - 1`` keys) when bidirectional. (Longformer instead
  splits ``w`` as ``w/2`` per side; we keep one meaning of ``window`` in both directions, so the
  causal window is the left half of the bidirectional one.) Positions in ``global_tokens``
  attend to every key and are attended by every query (Longformer), still subject to causality.
- ``sink_window`` (StreamingLLM): keys ``[0, n_sink)`` plus the window ``|i - j| < window``.

Computation and memory
----------------------
Never a dense ``[n, n]`` matrix. Queries are cut into blocks of ``B`` positions; block ``t``
needs keys ``[tB - w + 1, tB + B - 1]`` (causal) or up to ``tB + B + w - 2`` (bidirectional):
a contiguous span of ``B + w - 1`` (``B + 2w - 2``) keys, read as an ``unfold`` view of the
zero-padded keys. Scores are ``[blocks, B, span]``, i.e. O(n (w + B)) memory and time. Extra
keys (globals, sinks; ``G`` of them) add ``[n, G]`` scores that join the same softmax; a key
already inside the band is masked there so nothing is counted twice. Global query rows are
recomputed densely against all keys: ``[G, n]``. Query blocks are processed in segments of
about ``_SEGMENT_FLOATS`` scores, so without autograd only one segment's scores exist at a time
(the working set stays in cache; with autograd the saved probabilities are O(n (w + B))).
Masked entries get the dtype's most negative finite value: every real query row has at least
its own position, so only padding rows can be fully masked, and those are dropped (finite, never
NaN, also in the backward). Inputs are computed in float32 (float64 stays) and the result is
cast back to ``q.dtype``.

On CUDA (float16/bfloat16/float32, head sizes >= 16) both implementations run through
``flex_attention`` instead, with a block mask built from ``flex_mask_mod`` -- the allowed set
of ``allowed_mask`` -- so only the tiles the band, globals and sinks touch are computed
(:mod:`interp.attention.gpu`).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.attention import gpu
from interp.attention.base import (
    SparseAttention,
    check_qkv,
    compute_dtype,
    masked_softmax_attention,
)
from interp.attention.registry import IMPLEMENTATIONS
from interp.errors import InputError

#: scores computed per step of the query-block loop (b * h * blocks * block * span)
_SEGMENT_FLOATS = 1 << 20


def band_mask(qpos: Tensor, kpos: Tensor, window: int, causal: bool) -> Tensor:
    """Bool, broadcast of ``qpos`` and ``kpos``: True where ``|i - j| < window`` (and ``j <= i``)."""
    diff = qpos - kpos
    if causal:
        return (diff >= 0) & (diff < window)
    return diff.abs() < window


def local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    causal: bool,
    scale: float,
    extra_keys: Sequence[int] = (),
    global_queries: Sequence[int] = (),
    block: int | None = None,
) -> Tensor:
    """Blocked band attention.

    q ``[b, h, n, d]``, k ``[b, hk, n, d]``, v ``[b, hk, n, dv]`` -> ``[b, h, n, dv]`` (compute
    dtype). ``extra_keys``: positions every query may attend (outside its band); ``global_queries``:
    positions whose rows attend every key. Positions ``>= n`` are ignored.
    """
    b, h, hk, n, d = check_qkv(q, k, v)
    g, dv = h // hk, v.shape[-1]
    ct = compute_dtype(q.dtype)
    dev = q.device
    q, k, v = q.to(ct), k.to(ct), v.to(ct)
    w = min(window, n)
    bs = min(n, block or min(128, max(16, w)))
    nb = -(-n // bs)
    back = nb * bs - n
    left = w - 1
    right = 0 if causal else w - 1
    span = bs + left + right

    # queries grouped per kv head and block: [b, hk, nb, g*bs, d]
    qg = q.reshape(b, hk, g, n, d)
    qg = F.pad(qg, (0, 0, 0, back)) if back else qg
    qb = qg.reshape(b, hk, g, nb, bs, d).transpose(2, 3).reshape(b, hk, nb, g * bs, d)
    kp = F.pad(k, (0, 0, left, back + right))
    vp = F.pad(v, (0, 0, left, back + right))
    kw = kp.unfold(2, span, bs)  # [b, hk, nb, d, span] view
    vw = vp.unfold(2, span, bs).transpose(-1, -2)  # [b, hk, nb, span, dv] view

    a = torch.arange(bs, device=dev)
    c = torch.arange(span, device=dev)
    blk = torch.arange(nb, device=dev)[:, None] * bs
    kpos = blk + c[None, :] - left  # [nb, span]
    qpos = blk + a[None, :]  # [nb, bs]
    allowed = band_mask(qpos[:, :, None], kpos[:, None, :], w, causal)
    allowed &= ((kpos >= 0) & (kpos < n))[:, None, :]  # [nb, bs, span]

    ex = torch.tensor(sorted({int(p) for p in extra_keys if 0 <= int(p) < n}), dtype=torch.long)
    ex = ex.to(dev)
    n_ex = ex.numel()
    if n_ex:  # extra keys join every row's softmax unless already inside the band
        ke = k[:, :, ex].unsqueeze(2).transpose(-1, -2)  # [b, hk, 1, d, G]
        ve = v[:, :, ex].unsqueeze(2)  # [b, hk, 1, G, dv]
        ok = ~band_mask(qpos[:, :, None], ex, w, causal)  # [nb, bs, G]
        if causal:
            ok &= ex <= qpos[:, :, None]
        allowed = torch.cat([allowed, ok], dim=-1)  # [nb, bs, span + G]
    blocked = ~allowed[:, None]  # [nb, 1, bs, span + G]
    neg = torch.finfo(ct).min  # finite: only padding rows can be fully masked (they are dropped)

    # query blocks in segments of ~_SEGMENT_FLOATS scores: the working set stays in cache
    per = max(1, _SEGMENT_FLOATS // (b * h * bs * (span + n_ex)))
    outs = []
    for t0 in range(0, nb, per):
        t1 = min(nb, t0 + per)
        m = t1 - t0
        qs = qb[:, :, t0:t1] * scale
        s = torch.matmul(qs, kw[:, :, t0:t1])  # [b, hk, m, g*bs, span]
        if n_ex:
            s = torch.cat([s, torch.matmul(qs, ke)], dim=-1)
        s = s.view(b, hk, m, g, bs, span + n_ex).masked_fill_(blocked[t0:t1], neg)
        p = torch.softmax(s, dim=-1).view(b, hk, m, g * bs, span + n_ex)
        o = torch.matmul(p[..., :span], vw[:, :, t0:t1])  # [b, hk, m, g*bs, dv]
        if n_ex:
            o = o + torch.matmul(p[..., span:], ve)
        outs.append(o)
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]  # [b, hk, nb, g*bs, dv]
    out = out.view(b, hk, nb, g, bs, dv).transpose(2, 3).reshape(b, h, nb * bs, dv)[:, :, :n]

    gq = torch.tensor(sorted({int(p) for p in global_queries if 0 <= int(p) < n}), dtype=torch.long)
    gq = gq.to(dev)
    if gq.numel():  # global rows attend every (allowed) key: [b, h, G, n]
        mask = (torch.arange(n, device=dev)[None, :] <= gq[:, None]) if causal else None
        if mask is None:
            mask = torch.ones(gq.numel(), n, dtype=torch.bool, device=dev)
        rows, _ = masked_softmax_attention(q[:, :, gq], k, v, mask, scale)
        out = out.index_copy(2, gq, rows)
    return out


def _positions(name: str, value: Iterable[int] | None) -> tuple[int, ...]:
    vals = tuple(value or ())
    if not all(isinstance(p, int) and p >= 0 for p in vals):
        raise InputError(f"{name} must be non-negative int positions, got {value!r}")
    return tuple(sorted(set(vals)))


def _check_window(window: int) -> None:
    if not (isinstance(window, int) and window >= 1):
        raise InputError(f"window must be a positive int, got {window!r}")


@IMPLEMENTATIONS.register("sliding_window")
class SlidingWindowAttention(SparseAttention):
    """Band attention ``|i - j| < window`` plus Longformer ``global_tokens``."""

    def __init__(
        self,
        *,
        window: int = 256,
        global_tokens: Sequence[int] = (),
        scale: float | None = None,
        d_head: int = 64,
    ) -> None:
        super().__init__(scale=scale, d_head=d_head)
        _check_window(window)
        self.window = window
        self.global_tokens = _positions("global_tokens", global_tokens)

    def _forward(self, q, k, v, causal):
        if gpu.use_flex(q, v):  # CUDA: flex_attention block mask (interp.attention.gpu)
            return gpu.flex_forward(self, q, k, v, causal)
        out = local_attention(
            q, k, v, window=self.window, causal=causal, scale=self.get_scale(q.shape[-1]),
            extra_keys=self.global_tokens, global_queries=self.global_tokens,
        )
        return out.to(q.dtype)

    def allowed_mask(self, n, causal=True, device=None):
        i = torch.arange(n, device=device)[:, None]
        j = torch.arange(n, device=device)[None, :]
        glob = torch.zeros(n, dtype=torch.bool, device=device)
        glob[[p for p in self.global_tokens if p < n]] = True
        allowed = (i - j).abs() < self.window
        allowed = allowed | glob[:, None] | glob[None, :]
        return allowed & (j <= i) if causal else allowed

    def flex_mask_mod(self, n, causal=True, device=None):
        w = self.window
        inside = [p for p in self.global_tokens if p < n]
        glob = torch.zeros(n, dtype=torch.bool, device=device)  # [n]: global positions
        glob[inside] = True

        def mask_mod(b, h, q_idx, kv_idx):
            allowed = (q_idx - kv_idx).abs() < w
            if inside:
                allowed = allowed | glob[q_idx] | glob[kv_idx]
            return allowed & (kv_idx <= q_idx) if causal else allowed

        return mask_mod

    def state_size(self, seq_len: int, *, d_head: int | None = None) -> int:
        n, d = self._state_args(seq_len, d_head)
        return 2 * d * min(n, self.window + len(self.global_tokens))


@IMPLEMENTATIONS.register("sink_window")
class SinkWindowAttention(SparseAttention):
    """StreamingLLM: keys ``[0, n_sink)`` plus the window ``|i - j| < window``."""

    def __init__(
        self, *, n_sink: int = 4, window: int = 256, scale: float | None = None, d_head: int = 64
    ) -> None:
        super().__init__(scale=scale, d_head=d_head)
        _check_window(window)
        if not (isinstance(n_sink, int) and n_sink >= 0):
            raise InputError(f"n_sink must be a non-negative int, got {n_sink!r}")
        self.n_sink = n_sink
        self.window = window

    def _forward(self, q, k, v, causal):
        if gpu.use_flex(q, v):  # CUDA: flex_attention block mask (interp.attention.gpu)
            return gpu.flex_forward(self, q, k, v, causal)
        out = local_attention(
            q, k, v, window=self.window, causal=causal, scale=self.get_scale(q.shape[-1]),
            extra_keys=range(min(self.n_sink, q.shape[2])),
        )
        return out.to(q.dtype)

    def allowed_mask(self, n, causal=True, device=None):
        i = torch.arange(n, device=device)[:, None]
        j = torch.arange(n, device=device)[None, :]
        allowed = ((i - j).abs() < self.window) | (j < self.n_sink)
        return allowed & (j <= i) if causal else allowed

    def flex_mask_mod(self, n, causal=True, device=None):
        w, n_sink = self.window, self.n_sink

        def mask_mod(b, h, q_idx, kv_idx):
            allowed = ((q_idx - kv_idx).abs() < w) | (kv_idx < n_sink)
            return allowed & (kv_idx <= q_idx) if causal else allowed

        return mask_mod

    def state_size(self, seq_len: int, *, d_head: int | None = None) -> int:
        n, d = self._state_args(seq_len, d_head)
        return 2 * d * min(n, self.n_sink + self.window)
