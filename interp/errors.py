"""One error hierarchy for what a user can fix.

Architecture
------------
:class:`InterpError` is the base of every error caused by the input rather than by a bug:
an unknown model or attention name, a malformed config, a missing cache file, a prompt too
short for a probe, a feature a tool refuses to approximate. The CLI prints an
``InterpError`` as one ``error:`` line and exits with status 2; any other exception is a bug
and keeps its traceback (exit status 1).

Each subclass also derives from the builtin its callers already catch, so
``except ValueError`` (or ``NotImplementedError``, ``KeyError``, ...) keeps working:

=====================  ==========================  ================================================
class                  also a                      raised for
=====================  ==========================  ================================================
:class:`InputError`    ``ValueError``              bad arguments, shapes, token ids, prompts
:class:`ConfigError`   ``ValueError``              a malformed experiment config (unknown field,
                                                   wrong type)
:class:`ModelLoadError` ``ValueError``             a model spec that cannot be turned into a model
:class:`UnknownName`   ``KeyError``                an unknown registry name (model, attention
                                                   implementation, hook point, experiment kind)
:class:`Refused`       ``NotImplementedError``     a layer feature or model a tool cannot
                                                   reproduce exactly (named in the message)
:class:`CacheError`    ``RuntimeError``            a model cache that cannot be filled or read
=====================  ==========================  ================================================

This module imports nothing but the standard library (the CLI imports it before torch).
"""
from __future__ import annotations


class InterpError(Exception):
    """An error the user can fix; its message says what was wrong and what to do."""


class InputError(InterpError, ValueError):
    """Bad input: an argument, shape, token id or prompt a function cannot take."""


class ConfigError(InterpError, ValueError):
    """A malformed experiment config (unknown field, wrong type, bad value)."""


class ModelLoadError(InterpError, ValueError):
    """A model spec that could not be turned into a model (the message says why and what to
    do)."""


class UnknownName(InterpError, KeyError):
    """A name no registry knows (model, attention implementation, hook point, kind).

    ``str()`` is the message itself (a plain ``KeyError`` would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Refused(InterpError, NotImplementedError):
    """A tool refuses a model or layer feature it cannot reproduce exactly, rather than
    computing something different from the model (the message names the feature and why)."""


class CacheError(InterpError, RuntimeError):
    """A model cache that cannot be filled or read (missing package, hash mismatch, no
    network for a first fetch)."""
