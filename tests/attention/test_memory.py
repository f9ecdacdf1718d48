"""The O(N) forms never materialise an N x N tensor (forward or backward).

Method: a ``TorchDispatchMode`` sees every aten op that runs (including autograd's backward
ops) and records the largest tensor any op produces. That is independent of the allocator, of
the OS and of the machine's other load. It cannot see scratch buffers inside a single fused
kernel, but the O(N) forms are written with plain aten ops, so any N x N intermediate would be an
op output. The detector itself is checked on the dense reference.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from interp import attention

from .conftest import make_qkv

LINEAR_NAMES = [n for n in attention.names() if not attention.get(n).quadratic]


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.max_numel = 0
        self.op = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.numel() > self.max_numel:
                self.max_numel, self.op = t.numel(), str(func)
        return out


def largest(fn):
    with LargestTensor() as mode:
        fn()
    return mode.max_numel, mode.op


def test_detector_sees_the_dense_matrix():
    n = 512
    q, k, v = make_qkv(batch=1, heads=1, kv_heads=1, seq=n, d=8)
    numel, _ = largest(lambda: attention.get("sliding_window", window=16).naive(q, k, v))
    assert numel >= n * n


def test_quadratic_flag_matches_the_registry():
    assert set(LINEAR_NAMES) == {"linear", "sliding_window", "sink_window", "block_sparse"}
    assert attention.get("linear", form="parallel").quadratic
    assert not attention.get("linear", form="recurrent").quadratic


def largest_fwd_bwd(impl, n, causal=True):
    q, k, v = make_qkv(batch=1, heads=2, kv_heads=1, seq=n, d=16, requires_grad=True)

    def run():
        out = impl(q, k, v, causal=causal)
        out.sum().backward()

    return largest(run)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("name", LINEAR_NAMES)
def test_no_n_by_n_tensor_at_16k(name, causal):
    n = 16384
    impl = attention.get(name)
    numel, op = largest_fwd_bwd(impl, n, causal)
    # the largest tensor is a band / block of scores: O(N * window), far below N * N
    assert numel < n * n // 8, (numel, op)
    # and it grows linearly: doubling N at most doubles the largest tensor
    half, _ = largest_fwd_bwd(impl, n // 2, causal)
    assert numel <= 2 * half + 1024, (numel, half, op)
