"""interp: mechanistic interpretability of attention.

Public entry points (imported lazily so ``import interp`` stays fast):

- :func:`interp.list_models` / :func:`interp.load_model` -- the model registry
  (pretrained models from registry packages, toy models from configs) and any HF model by
  hub id, folder or GGUF file; :func:`interp.wrap` hooks an HF model you already have.
- :func:`interp.describe_layers` -- what each attention layer does (scale, window, softcap,
  q/k norm, rotary), as every swap and hand-recomputing probe reads it.
- :mod:`interp.attention` -- registry of attention implementations.
- :func:`interp.swap_attention` -- put an implementation into a hooked model.
- :func:`interp.generate` -- batched greedy generation with a KV cache, hooks firing per step.
- :mod:`interp.probes` -- induction, sink, retrieval, distraction, locality probes.

Laziness (PEP 562): ``import interp`` imports neither torch nor any submodule. A name of
``_LAZY`` is looked up in its module on every access (so a patched ``registry.load_model``
is what ``interp.load_model`` returns), and a subpackage or module of ``interp``
(``interp.viz``, ``interp.probes``, ...) is imported on first attribute access, so
``import interp; interp.viz.setup_notebook()`` works without ``import interp.viz``.
"""
from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: public name -> (module, attribute), resolved on access
_LAZY = {
    "list_models": ("interp.models.registry", "list_models"),
    "load_model": ("interp.models.registry", "load_model"),
    "swap_attention": ("interp.swap", "swap_attention"),
    "wrap": ("interp.models.loading", "wrap"),
    "describe_layers": ("interp.families", "describe_layers"),
    "generate": ("interp.decoding", "generate"),
}


@cache
def _submodules() -> frozenset[str]:
    """Names of the modules and subpackages directly inside ``interp`` (none imported)."""
    import pkgutil

    return frozenset(m.name for m in pkgutil.iter_modules(__path__))


def __getattr__(name: str) -> Any:
    """A public name of ``_LAZY`` or a submodule, imported on first use."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    if not name.startswith("_") and name in _submodules():
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'interp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_submodules()})


__all__ = ["__version__", *_LAZY]
