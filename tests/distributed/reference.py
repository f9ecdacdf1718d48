"""Dense single-process attention in float64, written out explicitly (independent of
``interp.distributed``), with its gradients by autograd."""
from __future__ import annotations

import math

import torch


def dense_attention(q, k, v, causal: bool, scale: float | None = None):
    """q ``[b, h, n, d]``, k/v ``[b, kv_h, n, d]`` -> ``[b, h, n, d]`` (GQA by repeating kv heads)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-1, -2) * scale  # [b, h, n, n]
    if causal:
        n = q.shape[2]
        keep = torch.ones(n, n, dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def dense_with_grads(q, k, v, dout, causal: bool):
    """``[out, dq, dk, dv]`` of :func:`dense_attention` in float64."""
    q, k, v = (x.detach().double().requires_grad_() for x in (q, k, v))
    out = dense_attention(q, k, v, causal)
    out.backward(dout.double())
    return [out.detach(), q.grad, k.grad, v.grad]
