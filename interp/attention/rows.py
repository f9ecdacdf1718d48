"""Exact softmax attention computed a block of query rows at a time: O(block * n) memory.

``softmax_rows`` is the same math as ``softmax`` (and as a model's own attention under a
layer's sliding window and tanh soft-capping), but it never holds an ``[n, n]`` score or
probability matrix: queries are cut into blocks of ``R`` rows; for each block the scores
against the keys that block can see (``[0, i1)`` causal, ``(i0 - w, i1)`` in a sliding
window of ``w``, all keys for an encoder) are formed, soft-capped, masked and normalised in
one exact softmax, multiplied with the values, and dropped. Peak extra memory is
``b * h * R * span`` floats; ``R`` is at most :data:`MAX_ROWS` and fits ``max_floats``
(default 2^24 floats, 64 MB at float32) unless ``block_rows`` fixes it.

Each block's probabilities ``[b, h, R, span]`` (rows ``i0:i1`` of the attention pattern,
keys ``j0:j0 + span``; keys outside the span have probability 0) can be handed to a
callback, ``on_rows(layer, i0, j0, probs)``: that is how the long-context probes
(:mod:`interp.probes.blockwise`) reduce a pattern they never hold. Scores are computed in
float32 (float64 stays) and the result is cast back to ``q.dtype``.

GQA: query heads of one KV group are stacked into one matrix product against their shared
keys, so keys and values are never repeated.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from interp.attention.base import check_qkv, compute_dtype
from interp.attention.local import band_mask
from interp.attention.registry import IMPLEMENTATIONS
from interp.attention.softmax import SoftmaxAttention
from interp.errors import InputError

#: rows per block at most (unless ``block_rows`` says otherwise): longer blocks gain no
#: speed, and a sequence longer than this never has its ``[n, n]`` scores in memory
MAX_ROWS = 256
#: ``on_rows(layer, i0, j0, probs [b, h, rows, span])``
RowsCallback = Callable[[int, int, int, Tensor], None]


def key_span(i0: int, i1: int, n: int, causal: bool, window: int | None) -> tuple[int, int]:
    """The keys ``[j0, j1)`` that query rows ``[i0, i1)`` can see."""
    j0 = 0 if window is None else max(0, i0 - window + 1)
    if causal:
        j1 = i1
    else:
        j1 = n if window is None else min(n, i1 + window - 1)
    return j0, j1


def row_block_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float, causal: bool = True,
                        window: int | None = None, softcap: float | None = None,
                        block_rows: int | None = None, max_floats: int = 1 << 24,
                        on_rows: Callable[[int, int, Tensor], None] | None = None) -> Tensor:
    """Exact ``softmax(cap(q k^T * scale) + mask) v``, one block of query rows at a time.

    Args:
        q: ``[b, h, n, d]``; k: ``[b, hk, n, d]``; v: ``[b, hk, n, dv]`` (``h % hk == 0``).
        scale: score scale. causal: keys ``j <= i`` only.
        window: sliding window: key ``j`` visible from ``i`` only when ``i - j < window``
            (``|i - j| < window`` when not causal); None for none.
        softcap: scores become ``softcap * tanh(scores / softcap)`` before the mask.
        block_rows: rows per block (default: as many as ``max_floats`` scores allow, at most
            :data:`MAX_ROWS`, at least 1).
        on_rows: called as ``on_rows(i0, j0, probs)`` with each block's probabilities
            ``[b, h, rows, span]`` (float32/float64) for rows ``i0..`` and keys ``j0..``.

    Returns:
        ``[b, h, n, dv]`` in ``q.dtype``.
    """
    b, h, hk, n, d = check_qkv(q, k, v)
    rep = h // hk
    ct = compute_dtype(q.dtype)
    span_max = n if window is None else min(n, (1 if causal else 2) * window)
    rows = block_rows or max(1, min(n, MAX_ROWS, max_floats // max(1, b * h * span_max)))
    out = q.new_empty(b, h, n, v.shape[-1])
    pos = torch.arange(n, device=q.device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        j0, j1 = key_span(i0, i1, n, causal, window)
        r, s = i1 - i0, j1 - j0
        qb = q[:, :, i0:i1].to(ct).reshape(b, hk, rep * r, d)
        kb, vb = k[:, :, j0:j1].to(ct), v[:, :, j0:j1].to(ct)
        scores = torch.matmul(qb, kb.transpose(-1, -2)).mul_(scale)       # [b, hk, rep*r, s]
        if softcap is not None:
            scores = scores.div_(softcap).tanh_().mul_(softcap)
        scores = scores.view(b, hk, rep, r, s)
        if window is None and causal:             # only the last r keys (i0..i1) need a mask
            future = torch.ones(r, r, dtype=torch.bool, device=q.device).triu_(1)
            scores[..., s - r:].masked_fill_(future, float("-inf"))
        elif window is not None:
            allowed = band_mask(pos[i0:i1, None], pos[None, j0:j1], window, causal)  # [r, s]
            scores.masked_fill_(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)     # every row sees at least its own key
        if on_rows is not None:
            on_rows(i0, j0, probs.view(b, h, r, s))
        o = torch.matmul(probs.view(b, hk, rep * r, s), vb)               # [b, hk, rep*r, dv]
        out[:, :, i0:i1] = o.view(b, h, r, -1).to(q.dtype)
    return out


@IMPLEMENTATIONS.register("softmax_rows")
class RowBlockSoftmaxAttention(SoftmaxAttention):
    """Exact softmax attention in blocks of query rows (module docstring). Options:
    ``scale``, ``d_head``, ``block_rows`` (None: from ``max_floats``), ``max_floats``
    (scores held per block), ``on_rows`` (callback ``on_rows(layer, i0, j0, probs)``;
    ``layer`` is -1 outside a swapped model)."""

    same_math_as = "softmax"

    def __init__(self, *, scale: float | None = None, d_head: int = 64,
                 block_rows: int | None = None, max_floats: int = 1 << 24,
                 on_rows: RowsCallback | None = None) -> None:
        super().__init__(scale=scale, d_head=d_head)
        if block_rows is not None and not (isinstance(block_rows, int) and block_rows >= 1):
            raise InputError(f"block_rows must be a positive int or None, got {block_rows!r}")
        if not (isinstance(max_floats, int) and max_floats >= 1):
            raise InputError(f"max_floats must be a positive int, got {max_floats!r}")
        if on_rows is not None and not callable(on_rows):
            raise InputError(f"on_rows must be callable or None, got {on_rows!r}")
        self.block_rows = block_rows
        self.max_floats = max_floats
        self.on_rows = on_rows

    def describe(self):
        out = super().describe()
        out["on_rows"] = None if self.on_rows is None else getattr(self.on_rows, "__name__", "fn")
        return out

    def attend_layer(self, q: Tensor, k: Tensor, v: Tensor, *, layer: int, causal: bool,
                     window: int | None, softcap: float | None) -> Tensor:
        """The swapped-layer entry point (:func:`interp.families.attend.attend`): the layer's own
        window and soft-capping, and ``on_rows`` told which layer the rows belong to."""
        cb = None if self.on_rows is None else (
            lambda i0, j0, p: self.on_rows(layer, i0, j0, p))
        return row_block_attention(q, k, v, scale=self.get_scale(q.shape[-1]), causal=causal,
                                   window=window, softcap=softcap, block_rows=self.block_rows,
                                   max_floats=self.max_floats, on_rows=cb)

    def _forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
        return self.attend_layer(q, k, v, layer=-1, causal=causal, window=None, softcap=None)
