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

from interp.errors import UnknownName

HookFn = Callable[..., object]


@contextmanager
def attach(model, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
           bwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = ()) -> Iterator:
    """Add hooks ``(name or name-filter, fn(activation, hook))`` for the duration of the
    block; they are removed on exit, even if the block raises.

    Hooks go through TransformerLens' ``HookPoint.add_hook``, so ``fn`` sees activations in
    the documented layouts (e.g. ``hook_z`` as ``[batch, pos, head, d_head]``) and a returned
    tensor replaces the activation. ``bwd_hooks`` receive gradients the same way.

    Raises:
        UnknownName: (a ``KeyError``) a hook name that the model does not have (the message
            lists close ones).
    """
    names = set(model.hook_dict)
    for name, _ in (*fwd_hooks, *bwd_hooks):
        if isinstance(name, str) and name not in names:
            import difflib

            close = difflib.get_close_matches(name, sorted(names), n=3)
            raise UnknownName(f"model has no hook point {name!r}; close matches: {close}")
    added = []
    try:
        for direction, hooks in (("fwd", fwd_hooks), ("bwd", bwd_hooks)):
            for name, fn in hooks:
                points = ([model.hook_dict[name]] if isinstance(name, str)
                          else list({id(hp): hp for n, hp in model.hook_dict.items()
                                     if name(n)}.values()))
                for hp in points:
                    added.append((hp, direction, hp.add_hook(fn, dir=direction)))
        yield model
    finally:
        for hp, direction, handle in reversed(added):
            handle.hook.remove()
            visible = hp.fwd_hooks if direction == "fwd" else hp.bwd_hooks
            if handle in visible:
                visible.remove(handle)


def count_hooks(model: torch.nn.Module) -> int:
    """Number of forward / forward-pre / backward hooks on ``model`` and its submodules."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())
