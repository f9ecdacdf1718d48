"""``interp run EXPERIMENT_FILE``: validate an experiment file, run it with progress, and
write its run directory (run.json, tables, figures, one self-contained report.html).

``--nproc N`` runs it sharded over N local processes (same results as one process; see
:mod:`interp.experiments`). Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the
command joins torchrun's process group instead of starting processes itself::

    torchrun --nproc-per-node 2 -m interp run experiments/retrieval_mqar.toml

``--device`` / ``--dtype`` replace the config's ``device`` / ``dtype`` fields (every kind has
them; default ``auto`` = CUDA when available, and float32); ``run.json`` records the device and
dtype the run really used.
"""
from __future__ import annotations

import argparse
import sys
from interp.cli import UserError, arguments, command


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", metavar="EXPERIMENT_FILE",
                   help="TOML file with a top-level kind = \"...\" and a [config] table "
                        "(e.g. experiments/quickstart.toml)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory (default results/<experiment file stem>)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller, faster version of the experiment")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="run on N local processes; sweep points (and kinds' per-item work) "
                        "are split over them, results are the same as with one process")
    p.add_argument("--backend", choices=["gloo", "nccl"], default="gloo",
                   help="torch.distributed backend of a sharded run (default gloo; nccl only "
                        "for kinds that exchange CUDA tensors, one GPU per process)")
    p.add_argument("--list-kinds", action="store_true",
                   help="list the registered experiment kinds and their config fields, then exit")


def _toml_string(text: str) -> str:
    """A TOML basic string (escapes what TOML requires: quote, backslash, control chars)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value) -> str | None:
    """``value`` as a TOML value, or None where TOML has none (``None``)."""
    import enum
    import math
    from pathlib import PurePath

    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _toml_value(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (str, PurePath)):
        return _toml_string(str(value))
    if isinstance(value, dict):
        items = [(k, _toml_value(v)) for k, v in value.items()]
        return "{" + ", ".join(f"{_toml_string(str(k))} = {v}" for k, v in items
                               if v is not None) + "}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_toml_value(v) for v in value]
        if any(v is None for v in items):
            return None
        return "[" + ", ".join(items) + "]"
    return _toml_string(str(value))


def _list_kinds() -> None:
    """Every kind as a TOML table of its config fields and defaults (the whole output parses
    with ``tomllib``): copy a table's lines under ``[config]`` of an experiment file with
    ``kind = "<name>"``. Required fields and fields without a default are comments."""
    import dataclasses

    from interp.config import to_dict
    from interp.experiments import get_kind, kinds

    print("# experiment kinds and their [config] fields with defaults; an experiment file is")
    print('# kind = "<name>" and a [config] table with the fields to change')
    for name in kinds():
        kind = get_kind(name)
        print(f"\n# {name}: {kind.doc.splitlines()[0] if kind.doc else ''}")
        print(f"[{name if name.replace('_', '').replace('-', '').isalnum() else _toml_string(name)}]")
        # the shared device/dtype fields (interp.config.DeviceConfig) last
        for f in sorted(dataclasses.fields(kind.config_cls),
                        key=lambda f: f.name in ("device", "dtype")):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                print(f"# {f.name} = ...  (required)")
                continue
            text = _toml_value(to_dict(default))     # nested dataclasses -> tables
            if text is None:
                print(f"# {f.name} = ...  (default: none)")
            else:
                print(f"{f.name} = {text}")


@command("run", "run an experiment file (kind + [config]) and write its report.html",
         devices="override")
@arguments(_run_args)
def cmd_run(args) -> int:
    if args.list_kinds:
        _list_kinds()
        return 0
    if not args.experiment:
        raise UserError("give an experiment file, e.g. interp run experiments/quickstart.toml "
                        "(--list-kinds shows the kinds)")
    from interp.paths import check_input_file, check_output_dir

    path = check_input_file(args.experiment, "experiment file")
    if args.nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {args.nproc}")
    if args.out:
        check_output_dir(args.out, "the run directory")
    from interp.distributed import DistributedError
    from interp.distributed.shard import is_main, process_group_from_env
    from interp.experiments import run_experiment

    with process_group_from_env(args.backend) as under_torchrun:
        if under_torchrun and args.nproc > 1:
            raise UserError("--nproc starts its own processes; under torchrun leave it out "
                            "(torchrun's --nproc-per-node sets the number)")
        try:
            out = run_experiment(path, out_dir=args.out, quick=args.quick,
                                 progress=not args.no_progress, nproc=args.nproc,
                                 backend=args.backend, device=args.device, dtype=args.dtype)
        except DistributedError as exc:
            print(f"interp run: error: {exc}", file=sys.stderr)
            print("interp run: the finished sweep points are kept; run the same command "
                  "again to resume", file=sys.stderr)
            return 1
        if not is_main():
            return 0
    print(f"report: {out / 'report.html'}")
    print(f"run directory: {out}", file=sys.stderr)
    return 0
