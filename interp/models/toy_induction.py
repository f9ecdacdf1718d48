"""Moved: the toy induction recipe is :mod:`interp.recipes.toy_induction` (it evaluates with
probes and circuits, which sit above :mod:`interp.models`).

This module only forwards the old names, lazily (importing it imports nothing above
``interp.models``); import from :mod:`interp.recipes.toy_induction` instead. Remaining users
to update: ``interp/commands/train.py``, ``tests/conftest.py``, ``README.md``.
"""
from __future__ import annotations

_NAMES = ("BOS", "ToyInductionConfig", "induction_batch", "eval_tokens", "induction_metrics",
          "default_dir", "train_toy_induction", "recipe", "ensure_toy_induction")


def __getattr__(name: str):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module("interp.recipes.toy_induction"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(_NAMES)
