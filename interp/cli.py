"""Command line: ``interp <command> ...``.

Each command is a function registered with :func:`command`; the parser is built from that
table, so ``interp --help`` always lists exactly what exists. Errors the user can fix
(unknown model, bad file, bad config, a device this machine lacks, an empty prompt) print
one line on stderr and exit with status 2; anything else is a bug and shows its traceback.
Commands check the files they read and write (:mod:`interp.paths`) before loading any
model, so a bad ``--out`` costs nothing. A probe's :class:`~interp.probes.common.ProbeWarning`
(valid input whose scores mean little, e.g. induction on a prompt with no repeated token) is
one ``interp <command>: warning: ...`` line on stderr.

Devices: a command registered with ``devices="model"`` (it loads or builds a model) gets
``--device`` (default ``auto``: CUDA when available, else CPU) and ``--dtype`` (default
float32) from :func:`add_device_arguments`, the one place they are defined; :func:`main`
resolves both through :mod:`interp.devices` before the command runs, so ``args.device`` is a
``torch.device`` and ``args.dtype`` a ``torch.dtype``. ``devices="override"`` (``interp run``)
adds the same options with no default: given, they replace the experiment config's
``device`` / ``dtype`` (checked the same way, passed on as names).
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}
#: commands with ``--device/--dtype``: name -> ``"model"`` or ``"override"``
_DEVICES: dict[str, str] = {}


class UserError(Exception):
    """An error caused by the input; printed without a traceback, exit status 2."""


def command(name: str, help: str, devices: str | None = None):
    """Register ``interp <name>``: decorate ``run(args)``; its ``.configure(parser)`` adds
    arguments.

    Args:
        devices: ``"model"`` for a command that loads, builds or trains a model (gets
            ``--device``/``--dtype``, resolved before ``run``), ``"override"`` for one that
            passes them on as names (``interp run``), None for one that makes no tensors.
    """
    if devices not in (None, "model", "override"):
        raise ValueError(f"devices must be None, 'model' or 'override', got {devices!r}")

    def deco(fn):
        _COMMANDS[name] = (help, getattr(fn, "configure", lambda p: None), fn)
        if devices:
            _DEVICES[name] = devices
        else:
            _DEVICES.pop(name, None)
        return fn

    return deco


def add_device_arguments(p: argparse.ArgumentParser, override: bool = False) -> None:
    """``--device`` and ``--dtype`` (the only definition; :func:`build_parser` adds them to
    every command registered with ``devices=``). Values are checked by :func:`main`, not
    by argparse, so a bad one is one clear line and exit status 2."""
    from interp.devices import DTYPE_NAMES

    g = p.add_argument_group("device")
    if override:
        g.add_argument("--device", default=None,
                       help="run on this device, replacing the config's `device` (auto, cpu, "
                            "cuda, cuda:N)")
        g.add_argument("--dtype", default=None, metavar="{" + ",".join(DTYPE_NAMES) + "}",
                       help="replace the config's `dtype`")
    else:
        g.add_argument("--device", default="auto",
                       help="auto (default: cuda when available, else cpu), cpu, cuda, cuda:N")
        g.add_argument("--dtype", default="float32", metavar="{" + ",".join(DTYPE_NAMES) + "}",
                       help="dtype of loaded models; for trained ones the compute dtype "
                            "(mixed precision, float32 weights). Default float32")


def _resolve_devices(args) -> None:
    """Check ``--device``/``--dtype`` (ValueError with one line naming the problem); for
    ``devices="model"`` commands replace them by ``torch.device`` / ``torch.dtype``."""
    from interp.config import dtype_name
    from interp.devices import resolve_device, resolve_dtype

    how = _DEVICES.get(args.command)
    if how is None:
        return
    device = None if args.device is None else resolve_device(args.device)
    dtype = None if args.dtype is None else resolve_dtype(args.dtype)
    if how == "model":
        args.device, args.dtype = device, dtype
    elif dtype is not None:
        args.dtype = dtype_name(dtype)


def arguments(fn: Callable[[argparse.ArgumentParser], None]):
    """Decorate a command's ``run(args)`` with ``fn(parser)`` that adds its arguments.
    Put it below ``@command``."""

    def deco(run):
        run.configure = fn
        return run

    return deco


def write_table(df, fmt: str, out: str | None) -> None:
    import pandas as pd

    if fmt == "csv":
        text = df.to_csv(index=False)
    elif fmt == "json":
        text = df.to_json(orient="records", indent=2)
    else:
        with pd.option_context("display.max_rows", 200, "display.width", 200,
                               "display.max_columns", 20):
            text = df.to_string(index=False) + "\n"
    if out:
        from interp.paths import PathError, file_error
        from interp.results import atomic_write_text

        try:
            atomic_write_text(out, text)
        except OSError as exc:          # named by the user's path, never the temporary file
            raise PathError(file_error(out, exc, "results", write=True)) from None
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")


@command("models", "list the models interp can load (name, kind, params, cached)")
@arguments(_models_args)
def cmd_models(args) -> int:
    from interp.models.registry import list_models

    write_table(list_models(), args.format, None)
    return 0


def _only(category, show):
    """``warnings.showwarning`` that prints ``category`` warnings with ``show`` and hands the
    rest to the previous handler."""
    import warnings

    before = warnings.showwarning

    def handler(message, cat, filename, lineno, file=None, line=None):
        if issubclass(cat, category):
            show(message, cat, filename, lineno, file, line)
        else:
            before(message, cat, filename, lineno, file, line)

    return handler


def build_parser() -> argparse.ArgumentParser:
    # Command modules register themselves on import.
    from interp import commands  # noqa: F401

    parser = argparse.ArgumentParser(prog="interp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, configure, run) in sorted(_COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        if name in _DEVICES:
            add_device_arguments(p, override=_DEVICES[name] == "override")
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from interp.config import ConfigError
    from interp.models.cache import CacheError

    import warnings

    from interp.paths import file_error
    from interp.probes.common import ProbeWarning

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"interp {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():      # restores the filters and showwarning
            # a probe's "these scores mean little" warnings: one line each, every time
            warnings.simplefilter("always", ProbeWarning)
            warnings.showwarning = _only(ProbeWarning, show_warning)
            _resolve_devices(args)
            return int(args._run(args) or 0)
    except (UserError, ConfigError, CacheError, FileNotFoundError, ValueError, KeyError) as exc:
        if isinstance(exc, KeyError) and exc.args:
            msg = exc.args[0]
        elif isinstance(exc, FileNotFoundError) and exc.filename:
            msg = file_error(exc.filename, exc)
        else:
            msg = str(exc)
        print(f"interp {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run through the importable module so commands register in one registry.
    from interp.cli import main as _main

    sys.exit(_main())
