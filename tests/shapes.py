"""Test helper: record the shape of every tensor the aten ops of a block produce, to assert
that no ``[n, n]`` tensor is built (the memory claims of swaps and long-context probes)."""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor any aten op produces (``with rec: ...``)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


def has_square(shapes, n: int) -> bool:
    """Whether any recorded shape ends in ``[n, n]``."""
    return any(len(s) >= 2 and s[-1] == n and s[-2] == n for s in shapes)
