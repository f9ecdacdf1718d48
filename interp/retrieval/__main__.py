"""``python -m interp.retrieval EXPERIMENT.toml OUT_DIR [--quick]``: run a retrieval sweep
(the ``retrieval_sweep`` experiment kind, the same as ``interp run EXPERIMENT.toml --out
OUT_DIR``)."""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from interp.config import ConfigError
from interp.retrieval.sweep import load_experiment


def main(argv: list[str] | None = None) -> int:
    from interp.experiments import run_experiment

    parser = argparse.ArgumentParser(prog="python -m interp.retrieval", description=__doc__)
    parser.add_argument("experiment", help="experiment TOML (kind = 'retrieval_sweep')")
    parser.add_argument("out_dir", help="output folder; finished points there are skipped")
    parser.add_argument("--quick", action="store_true", help="run the quick variant")
    args = parser.parse_args(argv)
    try:
        load_experiment(args.experiment)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        out = run_experiment(args.experiment, out_dir=args.out_dir, quick=args.quick)
    except ConfigError as exc:      # e.g. the folder holds another experiment's points
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = pd.read_csv(out / "retrieval.csv")
    cols = ["impl", "d_model", "num_kv_pairs", "state_size", "accuracy", "eff_rank",
            "row_entropy", "seconds"]
    print(table[cols].to_string(index=False))
    print(f"wrote {out}/retrieval.csv, report.html, figures/, run.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
