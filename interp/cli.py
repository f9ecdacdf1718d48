"""Command line: ``interp <command> ...``.

Each command is a function registered with :func:`command`; the parser is built from that
table, so ``interp --help`` always lists exactly what exists.

Errors: what the user can fix (unknown model, bad file, bad config, a device this machine
lacks, an empty prompt) is an :class:`~interp.errors.InterpError`, printed as one
``interp <command>: error: ...`` line on stderr with exit status 2 (argparse's own errors exit
2 too). Any other exception -- a builtin ``ValueError`` or ``KeyError`` included -- is a bug:
:func:`main` lets it propagate, so it prints its traceback and Python exits with status 1.
Code reachable from a command therefore raises an ``InterpError`` subclass for bad input
(:mod:`interp.errors`; files through :mod:`interp.paths`). A failed rank of ``interp run
--nproc`` (:class:`~interp.distributed.DistributedError`) is not one: ``interp run`` prints
it whole and exits with status 1.

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

Start-up cost: ``interp --help``, ``interp models`` and argument errors import neither torch
nor pandas (nor anything that does). Building the parser imports every command module, so a
command module imports only the standard library and this module at its top, and its
arguments function reads what ``--help`` shows (choices, defaults) with
:func:`source_literal` when the module defining it imports torch; ``run`` functions import
what they need. ``tests/test_cli_start.py`` checks this, ``benchmarks/cli_start.py`` times it.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Callable, Sequence

from interp.errors import InterpError

_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}
#: commands with ``--device/--dtype``: name -> ``"model"`` or ``"override"``
_DEVICES: dict[str, str] = {}


class UserError(InterpError):
    """A command's own check of its arguments failed (``--nproc 0``, an empty text file);
    printed without a traceback, exit status 2."""


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
    dtype_names = source_literal("interp.devices", "DTYPE_NAMES")
    g = p.add_argument_group("device")
    if override:
        g.add_argument("--device", default=None,
                       help="run on this device, replacing the config's `device` (auto, cpu, "
                            "cuda, cuda:N)")
        g.add_argument("--dtype", default=None, metavar="{" + ",".join(dtype_names) + "}",
                       help="replace the config's `dtype`")
    else:
        g.add_argument("--device", default="auto",
                       help="auto (default: cuda when available, else cpu), cpu, cuda, cuda:N")
        g.add_argument("--dtype", default="float32", metavar="{" + ",".join(dtype_names) + "}",
                       help="dtype of loaded models; for trained ones the compute dtype "
                            "(mixed precision, float32 weights). Default float32")


def _resolve_devices(args) -> None:
    """Check ``--device``/``--dtype`` (:class:`~interp.errors.InputError` naming the
    problem); for ``devices="model"`` commands replace them by ``torch.device`` /
    ``torch.dtype``."""
    how = _DEVICES.get(args.command)
    if how is None or (args.device is None and args.dtype is None):
        return                           # nothing to resolve: no torch import
    from interp.config import dtype_name
    from interp.devices import resolve_device, resolve_dtype

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


def source_literal(module: str, name: str) -> Any:
    """The value of ``name`` in ``module`` -- a constant (``"MODES"``) or a class attribute
    (``"ToyInductionConfig.steps"``) -- for choices and defaults that ``--help`` shows.

    When ``module`` is not imported yet the value is read from its source without importing
    it (nor its parent packages), so building the parser stays free of torch; this takes a
    plain literal assigned once. Anything else (a computed value, a module outside
    ``interp``) imports ``module`` and returns its attribute, so the answer is always the
    module's own value, only slower.
    """
    if module not in sys.modules:
        try:
            return _literal_in_source(module, name.split("."))
        except LookupError:
            pass
    from importlib import import_module

    value: Any = import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value


def _module_file(module: str):
    """The source file of ``interp.<...>`` module ``module``, found without importing it."""
    from pathlib import Path

    parts = module.split(".")
    if parts[0] != "interp":
        raise LookupError(f"{module} is not part of interp")
    base = Path(__file__).resolve().parent.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    raise LookupError(f"no source file for {module}")


def _literal_in_source(module: str, path: Sequence[str]) -> Any:
    """``path`` (``[name]`` or ``[class, attribute]``) as written in ``module``'s source.

    Raises LookupError unless the name is bound exactly once in its scope (functions and
    nested blocks included), by a plain assignment in the scope's body, to a literal.
    """
    import ast

    scope: ast.Module | ast.ClassDef = ast.parse(_module_file(module).read_text(encoding="utf-8"))
    *classes, name = path
    for cls in classes:
        found = [n for n in scope.body if isinstance(n, ast.ClassDef) and n.name == cls]
        if len(found) != 1:
            raise LookupError(f"class {cls} is not defined once in {module}")
        scope = found[0]
    bindings = [n for n in ast.walk(scope)
                if isinstance(n, ast.Name) and n.id == name and not isinstance(n.ctx, ast.Load)]
    values = [n.value for n in scope.body
              if (isinstance(n, ast.Assign) and len(n.targets) == 1 and n.targets[0] in bindings)
              or (isinstance(n, ast.AnnAssign) and n.target in bindings and n.value is not None)]
    if len(bindings) != 1 or len(values) != 1:
        raise LookupError(f"{'.'.join(path)} is not assigned once in {module}")
    try:
        return ast.literal_eval(values[0])
    except (ValueError, TypeError, SyntaxError):
        raise LookupError(f"{'.'.join(path)} in {module} is not a literal") from None


def _emit(text: str, out: str | None) -> None:
    """Write ``text`` to the file ``out`` (atomically; "wrote ..." on stderr) or to stdout."""
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


def print_table(df, fmt: str, out: str | None) -> None:
    """A DataFrame as ``fmt`` (``table``, ``csv`` or ``json`` records) to ``out`` or stdout."""
    import pandas as pd

    if fmt == "csv":
        text = df.to_csv(index=False)
    elif fmt == "json":
        text = df.to_json(orient="records", indent=2)
    else:
        with pd.option_context("display.max_rows", 200, "display.width", 200,
                               "display.max_columns", 20):
            text = df.to_string(index=False) + "\n"
    _emit(text, out)


def format_rows(rows: Sequence[dict], columns: Sequence[str], fmt: str) -> str:
    """Rows of ``str`` / ``int`` / ``bool`` / None values as :func:`print_table` prints the
    same rows as a DataFrame, without importing pandas (for ``interp models``).

    Same text as pandas for such columns; one difference: a number column with a missing
    value stays integers (pandas turns it into floats, ``134515008.0`` and ``NaN``). Missing
    is empty in CSV, ``null`` in JSON and ``-`` in the table.
    """
    table = [[row[c] for c in columns] for row in rows]
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in values] for values in table])
        return buf.getvalue()
    if fmt == "json":
        import json

        text = json.dumps([dict(zip(columns, values)) for values in table], indent=2,
                          separators=(",", ":"))
        return text.replace("/", "\\/")     # pandas' layout: "key":value, "/" escaped
    return _text_table(table, columns)


def _text_table(table: list[list], columns: Sequence[str]) -> str:
    """Right-aligned columns separated by one space, as ``DataFrame.to_string(index=False)``
    (which gives the header of a number or bool column one more leading space)."""
    cells = [["-" if v is None else str(v) for v in values] for values in table]
    lines = [[] for _ in range(len(cells) + 1)]
    for i, name in enumerate(columns):
        column = [values[i] for values in table]
        numeric = any(v is not None for v in column) and all(
            v is None or isinstance(v, (int, float)) for v in column)
        header = " " + name if numeric else name
        width = max([len(header), *(len(c[i]) for c in cells)])
        for line, text in zip(lines, [header, *(c[i] for c in cells)]):
            line.append(text.rjust(width))
    return "".join(" ".join(line) + "\n" for line in lines)


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")


@command("models", "list the models interp can load (name, kind, params, cached)")
@arguments(_models_args)
def cmd_models(args) -> int:
    """The registry's listing (:func:`interp.models.registry.model_rows`, what
    ``list_models()`` holds), printed without torch or pandas."""
    from interp.models.registry import MODEL_COLUMNS, model_rows

    _emit(format_rows(model_rows(), MODEL_COLUMNS, args.format), None)
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


@contextlib.contextmanager
def _probe_warnings(command_name: str):
    """Run ``interp <command_name>`` inside: a probe's
    :class:`~interp.probes.common.ProbeWarning` is one ``interp <command>: warning: ...`` line
    on stderr, every time; on leaving, the warning filters and handler are restored.

    Only a command registered with ``devices=`` makes tensors and so can run a probe; for the
    others :mod:`interp.probes.common` (which imports torch) is not imported.
    """
    import warnings

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"interp {command_name}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():      # restores the filters and showwarning
        if command_name in _DEVICES:
            from interp.probes.common import ProbeWarning

            # a probe's "these scores mean little" warnings: one line each, every time
            warnings.simplefilter("always", ProbeWarning)
            warnings.showwarning = _only(ProbeWarning, show_warning)
        yield


def _error_line(exc: InterpError) -> str:
    """The one line :func:`main` prints for an :class:`~interp.errors.InterpError` (its
    message; a ``KeyError`` subclass's own text, not its quoted repr)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def build_parser() -> argparse.ArgumentParser:
    """The ``interp`` parser: one subcommand per registered command (imports no torch)."""
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
    """Run ``interp`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status: 0,
    2 for an :class:`~interp.errors.InterpError` (one ``error:`` line), 130 when
    interrupted. Argument errors exit 2 through argparse (``SystemExit``); any other
    exception propagates with its traceback."""
    from interp.progress import line_mode

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # stderr not a terminal (a log, a pipe): progress bars give one line per update,
        # never sharing a line with a stage line or an error
        with line_mode(), _probe_warnings(args.command):
            _resolve_devices(args)
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except InterpError as exc:          # what the user can fix; anything else is a bug
        print(f"interp {args.command}: error: {_error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run through the importable module so commands register in one registry.
    from interp.cli import main as _main

    sys.exit(_main())
