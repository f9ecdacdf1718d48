"""Softmax attention: ``softmax(q k^T * scale + mask) v``.

Fast path: ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, GQA through
``enable_gqa``; memory O(N) on backends with a flash kernel, compute O(N^2)).
Reference: the dense ``[seq, seq]`` score matrix with an explicit boolean mask.
Decoding state: the KV cache, ``2 * seq_len * d_head`` floats per head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.attention.base import AttentionImpl, check_qkv, masked_softmax_attention
from interp.attention.registry import IMPLEMENTATIONS


def dense_mask(n: int, causal: bool, device: torch.device | str | None = None) -> Tensor:
    """``[n, n]`` bool, True where query ``i`` may attend key ``j`` (``j <= i`` when causal)."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    return (j <= i) if causal else torch.ones(n, n, dtype=torch.bool, device=device)


@IMPLEMENTATIONS.register("softmax")
class SoftmaxAttention(AttentionImpl):
    """Full softmax attention (torch SDPA). Options: ``scale``, ``d_head`` (for state_size)."""

    quadratic = True

    def __init__(self, *, scale: float | None = None, d_head: int = 64) -> None:
        super().__init__(scale=scale, d_head=d_head)

    def _forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
        # [b, h, n, d] x [b, hk, n, d] -> [b, h, n, dv]
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, scale=self.get_scale(q.shape[-1]),
            enable_gqa=q.shape[1] != k.shape[1],
        )

    def naive(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
        check_qkv(q, k, v)
        mask = dense_mask(q.shape[2], causal, q.device)
        out, _ = masked_softmax_attention(q, k, v, mask, self.get_scale(q.shape[-1]))
        return out.to(q.dtype)

    def pattern(self, q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
        check_qkv(q, k, v)
        mask = dense_mask(q.shape[2], causal, q.device)
        _, w = masked_softmax_attention(q, k, v, mask, self.get_scale(q.shape[-1]))
        return w.to(q.dtype)  # [b, h, n, n]

    def state_size(self, seq_len: int, *, d_head: int | None = None) -> int:
        n, d = self._state_args(seq_len, d_head)
        return 2 * n * d
