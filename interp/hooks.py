"""The one hook mechanism every probe uses.

``attach(model, [(hook_name, fn), ...])`` is a context manager that adds forward hooks to
a TransformerLens bridge and removes exactly those hooks on exit, also when the forward
raises. Probes register only the hook points they need and reduce activations inside the
hook functions (they never cache the whole model). ``count_hooks(model)`` counts the
forward hooks currently registered on any module (tests use it to prove nothing leaked).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

HookFn = Callable[..., object]


def hook_names(model) -> list[str]:
    """All hook point names of ``model`` (e.g. ``blocks.0.attn.hook_pattern``)."""
    return sorted(model.hook_dict)


@contextmanager
def attach(model, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]]) -> Iterator:
    """Add ``fwd_hooks`` (``(name or name-filter, fn(tensor, hook))``) for the duration of
    the block; they are removed on exit, even if the block raises.

    Raises:
        KeyError: a hook name that the model does not have (the message lists close ones).
    """
    names = set(model.hook_dict)
    for name, _ in fwd_hooks:
        if isinstance(name, str) and name not in names:
            import difflib

            close = difflib.get_close_matches(name, sorted(names), n=3)
            raise KeyError(f"model has no hook point {name!r}; close matches: {close}")
    handles = []
    try:
        for name, fn in fwd_hooks:
            points = ([model.hook_dict[name]] if isinstance(name, str)
                      else [hp for n, hp in model.hook_dict.items() if name(n)])
            for hp in points:
                handles.append(hp.register_forward_hook(_wrap(fn, hp)))
        yield model
    finally:
        for h in handles:
            h.remove()


def _wrap(fn: HookFn, hook_point) -> Callable:
    def hook(module, inputs, output):
        result = fn(output, hook_point)
        return result if result is not None else None

    return hook


def count_hooks(model: torch.nn.Module) -> int:
    """Number of forward / forward-pre hooks on ``model`` and all its submodules."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
