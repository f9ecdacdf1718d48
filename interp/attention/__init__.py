"""Attention implementations, one registry.

>>> from interp import attention
>>> attention.names()
['softmax', 'linear', 'sliding_window', 'sink_window', 'block_sparse', 'softmax_rows']
>>> impl = attention.get("linear", feature_map="elu", form="chunked")
>>> out = impl(q, k, v, causal=True)   # q [b, h, n, d], k/v [b, kv_heads, n, d]  # doctest: +SKIP

Modules (ops only: nothing here imports models or analysis code):

- ``base``: :class:`AttentionImpl` (the protocol: ``forward``, ``naive``, ``pattern``,
  ``state_size``, ``quadratic``, ``describe``), shape checks, safe softmax.
- ``registry``: the name -> class registry (options read from ``__init__`` signatures).
- ``softmax``: torch SDPA. ``linear`` + ``feature_maps``: linear attention, 3 forms, 6 maps.
- ``rows``: exact softmax a block of query rows at a time (O(block n) memory, the layer's
  window and soft-capping, a per-block callback for long-context probes).
- ``local``: sliding window (+ global tokens) and sink + window. ``block_sparse``: BigBird.
- ``gpu``: the CUDA fast paths behind the same names (flex_attention block masks for the sparse
  ones, fla's kernel for causal chunked linear attention with ``interp[gpu]``); CPU paths are
  untouched.
"""
from __future__ import annotations

from typing import Any

# Importing a module registers its implementations; this order is the order of names().
from interp.attention import softmax as _softmax  # noqa: F401, I001
from interp.attention import linear as _linear  # noqa: F401
from interp.attention import local as _local  # noqa: F401
from interp.attention import block_sparse as _block_sparse  # noqa: F401
from interp.attention import rows as _rows  # noqa: F401
from interp.attention.base import AttentionImpl, check_qkv, repeat_kv, safe_softmax
from interp.attention.feature_maps import FEATURE_MAPS
from interp.attention.linear import LinearState
from interp.attention.registry import IMPLEMENTATIONS


def names() -> list[str]:
    """Registered implementation names (built from the registry)."""
    return IMPLEMENTATIONS.names()


def get(name: str, **options: Any) -> AttentionImpl:
    """Build implementation ``name`` with ``options``.

    Raises ``ValueError`` for an unknown name or option (the message lists the valid ones).
    """
    return IMPLEMENTATIONS.build(name, **options)


def get_class(name: str) -> type[AttentionImpl]:
    """The class registered as ``name`` (ValueError listing the valid names otherwise)."""
    return IMPLEMENTATIONS.get_class(name)


def options(name: str) -> dict[str, Any]:
    """``{option: default}`` of implementation ``name`` (linear also takes its feature map's)."""
    return IMPLEMENTATIONS.options(name)


def feature_maps() -> list[str]:
    """Registered linear-attention feature map names."""
    return FEATURE_MAPS.names()


__all__ = [
    "AttentionImpl",
    "LinearState",
    "check_qkv",
    "feature_maps",
    "get",
    "get_class",
    "names",
    "options",
    "repeat_kv",
    "safe_softmax",
]
