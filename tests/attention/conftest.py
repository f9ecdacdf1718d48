"""Shared helpers for the attention tests: configurations, inputs, error measures."""
from __future__ import annotations

import pytest
import torch

from interp import attention

@pytest.fixture(autouse=True)
def _one_thread():
    """Run these (small-tensor) tests on one thread: on a shared 2-core machine, 2 OpenMP
    threads make every op wait for a descheduled thread (10-40x slower under load)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# Small windows / blocks / chunks so that short test sequences cross block boundaries.
SMALL_OPTIONS: dict[str, dict] = {
    "softmax": {},
    "linear": {"chunk_size": 8},
    "sliding_window": {"window": 5},
    "sink_window": {"n_sink": 2, "window": 5},
    "block_sparse": {"block_size": 4, "local_blocks": 1, "global_blocks": 1, "random_blocks": 1},
}

FORMS = ("parallel", "recurrent", "chunked")
D_HEAD = 16


def linear_configs() -> list[tuple[str, str, dict]]:
    """Every feature map x every form (names built from the registries)."""
    out = []
    for fm in attention.feature_maps():
        extra = {"max_len": 256} if fm == "cosformer" else {}
        for form in FORMS:
            out.append((f"linear-{fm}-{form}", "linear",
                        {"feature_map": fm, "form": form, "chunk_size": 8, "d_head": D_HEAD, **extra}))
    return out


def all_configs() -> list[tuple[str, str, dict]]:
    """One small configuration per registered implementation, plus variants."""
    out = [(name, name, dict(SMALL_OPTIONS.get(name, {}))) for name in attention.names()]
    out += [
        ("sliding_window-global", "sliding_window", {"window": 4, "global_tokens": (0, 9, 30)}),
        ("sink_window-wide-sink", "sink_window", {"n_sink": 7, "window": 3}),
        ("block_sparse-wide", "block_sparse",
         {"block_size": 5, "local_blocks": 2, "global_blocks": 2, "random_blocks": 2, "seed": 3}),
        ("block_sparse-local-only", "block_sparse",
         {"block_size": 3, "local_blocks": 0, "global_blocks": 0, "random_blocks": 0}),
    ]
    out += linear_configs()
    out += [
        ("linear-taylor-proj-chunked", "linear",
         {"feature_map": "taylor", "feature_dim": 4, "form": "chunked", "chunk_size": 8, "d_head": D_HEAD}),
        ("linear-hedgehog-fd8-parallel", "linear",
         {"feature_map": "hedgehog", "feature_dim": 8, "form": "parallel", "d_head": D_HEAD}),
        ("linear-performer-m16-chunked", "linear",
         {"feature_map": "performer", "n_features": 16, "seed": 5, "form": "chunked", "chunk_size": 5}),
    ]
    return out


def config_params(configs):
    return [pytest.param(name, opts, id=cid) for cid, name, opts in configs]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are 0)."""
    a, b = a.double(), b.double()
    den = b.norm().item()
    num = (a - b).norm().item()
    return num / den if den > 0 else num


def make_qkv(batch=2, heads=4, kv_heads=2, seq=37, d=D_HEAD, dv=None, dtype=torch.float32,
             seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    dv = d if dv is None else dv
    q = torch.randn(batch, heads, seq, d, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, seq, d, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, seq, dv, generator=g).to(dtype)
    if requires_grad:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v
