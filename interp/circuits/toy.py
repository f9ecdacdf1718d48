"""Moved: :func:`circuit_toy` (the trained toy induction model used for circuit finding) is
:func:`interp.recipes.toy_induction.circuit_toy` -- it trains with the toy induction recipe,
which sits above :mod:`interp.circuits`.

This module only forwards the old name, lazily; import from
:mod:`interp.recipes.toy_induction` instead. Remaining user to update:
``benchmarks/attribution_patching.py``.
"""
from __future__ import annotations


def __getattr__(name: str):
    if name in ("circuit_toy", "ToyInductionConfig"):
        import importlib

        return getattr(importlib.import_module("interp.recipes.toy_induction"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
