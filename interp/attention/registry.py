"""A small name -> class registry; every list of names is built from it, never by hand.

Two registries use it: attention implementations (``interp.attention.names()/get()``) and the
linear-attention feature maps (``interp.attention.feature_maps``). A class registers itself once
with ``@REGISTRY.register("name")``. Its options are the keyword-only parameters of its
``__init__``: :meth:`Registry.build` rejects anything else with a ``ValueError`` that lists what
is valid. A class whose ``__init__`` also takes ``**kwargs`` validates those itself (the linear
family forwards them to its feature map).

Errors are user errors (:mod:`interp.errors`, one line in the CLI): an unknown name is
:class:`NotRegistered` (an :class:`~interp.errors.UnknownName` that is also the
``ValueError`` it always was), an unknown option or an option value the class refuses is an
:class:`~interp.errors.InputError` (a ``ValueError`` too).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, TypeVar

from interp.errors import InputError, InterpError, UnknownName

T = TypeVar("T")


class NotRegistered(UnknownName, ValueError):
    """A name the registry does not know (the message lists the valid ones); a
    ``ValueError`` as well, as it always was."""


def keyword_options(cls: type) -> dict[str, Any]:
    """``{name: default}`` of the keyword-only parameters of ``cls.__init__``."""
    sig = inspect.signature(cls.__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _takes_var_kwargs(cls: type) -> bool:
    sig = inspect.signature(cls.__init__)
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


class Registry(Generic[T]):
    """Name -> class. ``kind`` is used in error messages ("attention implementation")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: register ``cls`` under ``name`` and set ``cls.name``."""

        def deco(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._classes)

    def get_class(self, name: str) -> type[T]:
        if not isinstance(name, str) or name not in self._classes:
            raise NotRegistered(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            )
        return self._classes[name]

    def options(self, name: str) -> dict[str, Any]:
        """``{option: default}`` accepted by ``name``."""
        return keyword_options(self.get_class(name))

    def build(self, name: str, *args: Any, **options: Any) -> T:
        """Instantiate ``name`` with ``args`` and ``options``.

        Raises:
            NotRegistered: an unknown ``name``.
            InputError: an unknown option, or a value the class refuses (its own
                ``ValueError``, same message).
        """
        cls = self.get_class(name)
        valid = keyword_options(cls)
        if not _takes_var_kwargs(cls):
            unknown = sorted(set(options) - set(valid))
            if unknown:
                raise InputError(
                    f"unknown option(s) {', '.join(map(repr, unknown))} for {self.kind} "
                    f"{name!r}; valid options: {', '.join(valid) or '(none)'}"
                )
        try:
            return cls(*args, **options)
        except ValueError as exc:
            if isinstance(exc, InterpError):
                raise
            raise InputError(str(exc)) from exc


#: The attention-implementation registry behind ``interp.attention.names()`` / ``get()``.
IMPLEMENTATIONS: Registry[Any] = Registry("attention implementation")
