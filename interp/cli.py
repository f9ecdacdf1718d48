"""Command line: ``interp <command> ...``.

Each command is a function registered with :func:`command`; the parser is built from that
table, so ``interp --help`` always lists exactly what exists. Errors the user can fix
(unknown model, bad file, bad config) print one line on stderr and exit with status 2;
anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


class UserError(Exception):
    """An error caused by the input; printed without a traceback, exit status 2."""


def command(name: str, help: str):
    """Register ``interp <name>``: decorate ``run(args)``; its ``.configure(parser)`` adds
    arguments."""

    def deco(fn):
        _COMMANDS[name] = (help, getattr(fn, "configure", lambda p: None), fn)
        return fn

    return deco


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
        from interp.results import atomic_write_text

        atomic_write_text(out, text)
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


def build_parser() -> argparse.ArgumentParser:
    # Command modules register themselves on import.
    from interp import commands  # noqa: F401

    parser = argparse.ArgumentParser(prog="interp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, configure, run) in sorted(_COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from interp.config import ConfigError
    from interp.models.cache import CacheError

    try:
        return int(args._run(args) or 0)
    except (UserError, ConfigError, CacheError, FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"interp {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run through the importable module so commands register in one registry.
    from interp.cli import main as _main

    sys.exit(_main())
