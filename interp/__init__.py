"""interp: mechanistic interpretability of attention.

Public entry points (imported lazily so ``import interp`` stays fast):

- :func:`interp.list_models` / :func:`interp.load_model` -- the model registry
  (pretrained models from registry packages, toy models from configs) and any HF model by
  hub id, folder or GGUF file; :func:`interp.wrap` hooks an HF model you already have.
- :func:`interp.describe_layers` -- what each attention layer does (scale, window, softcap,
  q/k norm, rotary), as every swap and hand-recomputing probe reads it.
- :mod:`interp.attention` -- registry of attention implementations.
- :func:`interp.swap_attention` -- put an implementation into a hooked model.
- :mod:`interp.probes` -- induction, sink, retrieval, distraction, locality probes.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "list_models": ("interp.models.registry", "list_models"),
    "load_model": ("interp.models.registry", "load_model"),
    "swap_attention": ("interp.swap", "swap_attention"),
    "wrap": ("interp.models.loading", "wrap"),
    "describe_layers": ("interp.models.arch", "describe_layers"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'interp' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
