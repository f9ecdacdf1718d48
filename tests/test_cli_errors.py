"""What the CLI does with an exception (issue #23): an :class:`~interp.errors.InterpError` is one
``interp <command>: error: ...`` line and exit status 2; anything else -- a builtin
``ValueError`` or ``KeyError`` too -- is a bug: its traceback is printed and the exit status
is 1."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from interp import cli
from interp.errors import (CacheError, ConfigError, InputError, InterpError, ModelLoadError,
                           Refused, UnknownName)


@pytest.fixture
def boom(monkeypatch):
    """``interp boom --raise NAME``: a throwaway command raising the exception ``NAME``
    (removed from the command table afterwards)."""
    errors = {"runtime": RuntimeError("something broke inside"),
              "value": ValueError("a plain ValueError is a bug"),
              "key": KeyError("a plain KeyError is a bug"),
              "interp": InterpError("the input was wrong; do this instead"),
              "input": InputError("bad --thing 3; use 1 or 2"),
              "unknown": UnknownName("unknown widget 'x'; known: a, b"),
              "config": ConfigError("e.toml: [config]: unknown field(s) ['x']"),
              "model": ModelLoadError("unknown model 'nope'"),
              "refused": Refused("layer 3 soft-caps its logits; this tool cannot"),
              "cache": CacheError("no network for the first fetch of x")}

    def run(args):
        raise errors[args.raise_]

    run.configure = lambda p: p.add_argument("--raise", dest="raise_", choices=sorted(errors))
    import interp.commands  # noqa: F401  (the real commands register in the real table first)

    monkeypatch.setattr(cli, "_COMMANDS", dict(cli._COMMANDS))
    monkeypatch.setattr(cli, "_DEVICES", dict(cli._DEVICES))
    cli.command("boom", "raise an exception (test only)")(run)
    return errors


@pytest.mark.parametrize("name", ["interp", "input", "unknown", "config", "model", "refused",
                                  "cache"])
def test_interp_error_is_one_line_exit_2(name, boom, capsys):
    assert cli.main(["boom", "--raise", name]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err == f"interp boom: error: {boom[name].args[0]}\n"


@pytest.mark.parametrize("name, kind", [("runtime", RuntimeError), ("value", ValueError),
                                        ("key", KeyError)])
def test_other_exceptions_propagate(name, kind, boom, capsys):
    with pytest.raises(kind) as exc:
        cli.main(["boom", "--raise", name])
    assert exc.value is boom[name]
    assert capsys.readouterr().err == ""          # no "error:" line: a bug is not bad input


def test_a_real_command_with_a_plain_value_error_is_a_bug(monkeypatch):
    """A builtin ValueError deep inside a command (here ``interp models``) is not turned into
    an ``error:`` line any more."""
    import interp.models.registry as registry

    def broken():
        raise ValueError("bug in model_rows")

    monkeypatch.setattr(registry, "model_rows", broken)
    with pytest.raises(ValueError, match="bug in model_rows"):
        cli.main(["models"])


_SCRIPT = textwrap.dedent("""
    import sys
    from interp import cli
    from interp.errors import InputError

    def run(args):
        if args.what == "runtime":
            raise RuntimeError("something broke inside")
        raise InputError("bad --thing 3; use 1 or 2")

    run.configure = lambda p: p.add_argument("what")
    cli.command("boom", "raise an exception (test only)")(run)
    sys.exit(cli.main(sys.argv[1:]))
""")


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _SCRIPT, "boom", *argv], capture_output=True,
                          text=True, timeout=120)


def test_process_runtime_error_exit_1_with_traceback():
    proc = _run("runtime")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):")
    assert proc.stderr.rstrip().endswith("RuntimeError: something broke inside")
    assert "error:" not in proc.stderr.replace("RuntimeError:", "")


def test_process_interp_error_exit_2_one_line():
    proc = _run("input")
    assert proc.returncode == 2
    assert proc.stderr == "interp boom: error: bad --thing 3; use 1 or 2\n"
    assert proc.stdout == ""


def test_unknown_name_prints_its_message_unquoted(boom, capsys):
    """``UnknownName`` is a ``KeyError`` (whose ``str`` would quote the message)."""
    assert cli.main(["boom", "--raise", "unknown"]) == 2
    assert capsys.readouterr().err == "interp boom: error: unknown widget 'x'; known: a, b\n"
    assert str(UnknownName("x 'y'")) == "x 'y'" and isinstance(UnknownName("x"), KeyError)


def test_user_facing_errors_are_interp_errors():
    """The error classes of the modules a command reaches derive from InterpError and keep
    the builtin their callers catch."""
    from interp.attention.registry import NotRegistered
    from interp.config import ConfigError as ConfigErrorFromConfig
    from interp.models.cache import CacheError as CacheErrorFromCache
    from interp.models.toy import ToyRecipeMismatch
    from interp.paths import MissingPath, PathError

    for cls, builtin in [(PathError, ValueError), (MissingPath, FileNotFoundError),
                         (NotRegistered, KeyError), (NotRegistered, ValueError),
                         (ConfigErrorFromConfig, ValueError), (CacheErrorFromCache, RuntimeError),
                         (ToyRecipeMismatch, ValueError), (cli.UserError, InterpError)]:
        assert issubclass(cls, InterpError) and issubclass(cls, builtin), cls


def test_library_errors_reached_from_commands_are_interp_errors(tmp_path):
    """A few raises that commands reach: unknown model, device, dtype, text, attention
    implementation, hook point, a missing toy checkpoint or config file, a bad task."""
    import torch

    from interp import attention
    from interp.config import load_toml
    from interp.data import load_text
    from interp.devices import resolve_device, resolve_dtype
    from interp.models.registry import unknown_model_error
    from interp.models.toy import resolve_toy_path
    from interp.tasks import MQARConfig

    def raised(call) -> BaseException:
        try:
            call()
        except BaseException as exc:    # noqa: BLE001
            return exc
        raise AssertionError("no exception")

    cases = [lambda: resolve_dtype("float8"), lambda: resolve_device("nosuchdevice"),
             lambda: load_text("nope"), lambda: attention.get("nope"),
             lambda: attention.get("sliding_window", windw=3),
             lambda: resolve_toy_path(tmp_path / "none"), lambda: load_toml(tmp_path / "x"),
             lambda: MQARConfig(vocab_size=8, seq_len=4, num_kv_pairs=3)]
    if not torch.cuda.is_available():
        cases.append(lambda: resolve_device("cuda"))
    for call in cases:
        assert isinstance(raised(call), InterpError), raised(call)
    assert isinstance(unknown_model_error("nope"), InterpError)
