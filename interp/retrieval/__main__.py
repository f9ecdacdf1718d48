"""``python -m interp.retrieval EXPERIMENT.toml OUT_DIR [--quick]``: run a retrieval sweep."""
from __future__ import annotations

import argparse
import sys

from interp.config import ConfigError
from interp.retrieval.sweep import load_experiment, run_retrieval_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp.retrieval", description=__doc__)
    parser.add_argument("experiment", help="experiment TOML (kind = 'retrieval_sweep')")
    parser.add_argument("out_dir", help="output folder; finished points there are skipped")
    parser.add_argument("--quick", action="store_true", help="run the quick variant")
    args = parser.parse_args(argv)
    try:
        cfg = load_experiment(args.experiment)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = run_retrieval_sweep(cfg, args.out_dir, quick=args.quick)
    cols = ["impl", "d_model", "num_kv_pairs", "state_size", "accuracy", "eff_rank",
            "row_entropy", "seconds"]
    print(table[cols].to_string(index=False))
    print(f"wrote {args.out_dir}/retrieval.csv, accuracy_vs_state.html, run.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
