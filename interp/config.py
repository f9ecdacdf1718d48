"""Strict configs: dataclasses built from dicts or TOML files, unknown fields are errors.

Every experiment, toy model and task in interp is described by a frozen dataclass. This
module turns plain data (a dict, a TOML file) into those dataclasses and refuses anything
it does not understand, so a typo such as ``train_power_a`` for ``power_a`` is an error
instead of a silently ignored setting (the Zoology trap named in STYLE.md).

- :func:`from_dict` -- build a dataclass (nested dataclasses, lists, tuples, optionals and
  literal choices included) from a mapping, checking names and basic types.
- :func:`load_toml` -- read a TOML file into a dict with a clear error for a missing file.
- :func:`read_experiment` -- the checked top level of an experiment file (``kind``, ``title``,
  ``description``, ``seed``, ``[config]``), for the experiment runner and for library
  functions that read one kind's files without the runner.
- :func:`to_dict` -- the inverse, for writing a run's config next to its results.
- :class:`DeviceConfig` -- the ``device`` / ``dtype`` fields every experiment kind's config
  inherits (checked by :meth:`DeviceConfig.resolve_devices` when a run starts);
  :func:`dtype_name` -- the config spelling of a torch dtype.
"""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import (Any, Callable, Literal, Mapping, TypeVar, Union, get_args, get_origin,
                    get_type_hints)

from interp.errors import ConfigError, InputError
from interp.paths import MissingPath, read_text_file

T = TypeVar("T")
K = TypeVar("K")
#: the top-level fields of an experiment file (a kind's settings go in its ``[config]`` table)
EXPERIMENT_FIELDS = ("kind", "title", "description", "seed", "config")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file. Raises :class:`~interp.paths.MissingPath` (a ``FileNotFoundError``)
    naming the path if it is missing, :class:`~interp.paths.PathError` if it cannot be read as
    UTF-8 text, and :class:`ConfigError` (with the file name) if it does not parse."""
    path = Path(path)
    if not path.is_file():
        raise MissingPath(f"config file not found: {path}")
    text = read_text_file(path, "config file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def read_experiment(source: str | Path | Mapping[str, Any], resolve_kind: Callable[[str], K],
                    known_kinds: Callable[[], list[str]]
                    ) -> tuple[K, dict[str, Any], dict[str, Any], str]:
    """The top level of an experiment (a TOML path or the same data as a dict), checked: only
    :data:`EXPERIMENT_FIELDS`; a string ``kind`` that ``resolve_kind`` accepts (it raises
    :class:`ConfigError` otherwise; ``known_kinds()`` is listed when ``kind`` is missing); an
    integer ``seed`` (default 0); string ``title`` / ``description``. The ``[config]`` table
    is returned as it is (the caller builds the kind's dataclass from it).

    Returns:
        ``(resolve_kind(kind), spec, config_table, where)``: ``spec`` holds ``kind``,
        ``title``, ``description`` and ``seed``; ``where`` is how messages name the source
        (the file, or ``"experiment"`` for a dict).

    Raises:
        MissingPath: the file is missing. ConfigError: anything else (names the field).
    """
    where = "experiment"
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        data = load_toml(source)
        where = str(source)
    unknown = sorted(set(data) - set(EXPERIMENT_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown top-level field(s) {unknown}; valid fields are "
                          f"{list(EXPERIMENT_FIELDS)} (kind settings go in the [config] table)")
    if "kind" not in data:
        raise ConfigError(f"{where}: missing top-level field 'kind'; known kinds: "
                          f"{known_kinds()}")
    if not isinstance(data["kind"], str):
        raise ConfigError(f"{where}: 'kind' must be a string, got {data['kind']!r}")
    try:
        kind = resolve_kind(data["kind"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: 'seed' must be an integer, got {seed!r}")
    for key in ("title", "description"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{where}: {key!r} must be a string")
    spec = {"kind": data["kind"], "title": data.get("title"),
            "description": data.get("description"), "seed": seed}
    return kind, spec, data.get("config", {}), where


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert containers/dataclasses."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            items = [_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else list(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table/dict, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown and missing fields.

    Args:
        cls: a dataclass type.
        data: field values; nested dataclass fields take nested mappings.
        where: prefix for error messages (e.g. the file name).

    Raises:
        ConfigError: unknown field (the message lists the valid ones), missing required
            field, or a value of the wrong type.
    """
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {unknown}; valid fields are {sorted(fields)}"
        )
    hints = get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints.get(name, Any), f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required field {name!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested) -> plain dict/list data suitable for JSON or TOML."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def require_at_least(obj: Any, names: tuple[str, ...] | list[str], minimum: int | float) -> None:
    """Raise :class:`ConfigError` (a ``ValueError``) ``"<name> must be >= <minimum>, got
    <value>"`` for the first of the fields ``names`` of ``obj`` below ``minimum`` (for
    ``__post_init__`` checks)."""
    for name in names:
        value = getattr(obj, name)
        if value < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {value}")



@dataclasses.dataclass(frozen=True)
class DeviceConfig:
    """The ``device`` and ``dtype`` fields of every experiment kind's config (inherit it:
    ``@dataclass(frozen=True) class MyConfig(DeviceConfig): ...``).

    Both are keyword-only, so subclasses keep their own positional field order, and both are
    plain names resolved by :mod:`interp.devices` when a run starts, not when the file is
    read: a config written for a GPU machine still loads (and lists) on a CPU-only one.

    Attributes:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``; where models are loaded or built and batches made.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``: the dtype pretrained models are
            loaded in; for models the kind trains, the autocast compute dtype (weights and
            optimiser state stay float32).
    """

    device: str = dataclasses.field(default="auto", kw_only=True)
    dtype: str = dataclasses.field(default="float32", kw_only=True)

    def resolve_devices(self, where: str | None = None):
        """``(torch.device, torch.dtype)`` of :attr:`device` / :attr:`dtype`.

        Raises:
            ConfigError: ``"<where>.device: ..."`` for an unknown device or one this machine
                lacks (the message names it, e.g. no CUDA), ``"<where>.dtype: ..."`` for an
                unknown dtype name.
        """
        from interp.devices import DTYPE_NAMES, resolve_device, resolve_dtype

        where = where or type(self).__name__
        try:
            device = resolve_device(self.device)
        except ValueError as exc:
            raise ConfigError(f"{where}.device: {exc}") from None
        if self.dtype not in DTYPE_NAMES:
            raise ConfigError(f"{where}.dtype: {self.dtype!r} is not one of "
                              f"{list(DTYPE_NAMES)}")
        return device, resolve_dtype(self.dtype)


def dtype_name(dtype) -> str:
    """The config spelling (one of :data:`interp.devices.DTYPE_NAMES`) of a ``torch.dtype``
    or any name :func:`interp.devices.resolve_dtype` accepts (``"bf16"`` -> ``"bfloat16"``)."""
    from interp.devices import DTYPE_NAMES, resolve_dtype

    dt = resolve_dtype(dtype)
    for name in DTYPE_NAMES:
        if resolve_dtype(name) == dt:
            return name
    raise InputError(f"dtype {dtype!r} has no name in {list(DTYPE_NAMES)}")
