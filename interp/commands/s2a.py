"""``interp s2a``: the System 2 Attention comparison (original / S2A rewrite / oracle) as a
command; writes the three-way table and the per-layer distractor-attention figure."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interp.cli import arguments, command, print_table


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--limit", type=int, default=0, help="first N questions (0 = all)")
    p.add_argument("--data", default="", help="JSONL question file (default data/s2a/)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write s2a_table.csv, s2a_examples.csv, s2a_per_layer.csv and "
                        "distractor_attention_per_layer.html here")
    p.add_argument("--generate-with", choices=["hf", "bridge"], default="hf")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")


@command("s2a", "System 2 Attention: accuracy and attention on distractors, three conditions",
         devices="model")
@arguments(_args)
def cmd_s2a(args) -> int:
    from interp.paths import check_input_file, check_output_dir

    if args.data:                                  # files first: no model load for a typo
        check_input_file(args.data, "question file")
    if args.out:
        check_output_dir(args.out, "results")
    from tqdm.auto import tqdm

    from interp.config import dtype_name
    from interp.experiment_kinds.s2a import S2AConfig, run_comparison
    from interp.s2a import layer_figure

    cfg = S2AConfig(model=args.model, data=args.data, limit=args.limit,
                    generate_with=args.generate_with, threads=args.threads,
                    device=str(args.device), dtype=dtype_name(args.dtype))
    res = run_comparison(cfg, args.limit, progress=lambda it, desc=None, total=None: tqdm(
        it, desc=desc, total=total, file=sys.stderr), device=args.device, dtype=args.dtype)
    if args.out:
        from interp.results import write_table
        from interp.viz.figures import save_figure

        from interp.paths import PathError, file_error

        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_table(res.table, out / "s2a_table.csv")
            write_table(res.per_example, out / "s2a_examples.csv")
            write_table(res.per_layer, out / "s2a_per_layer.csv")
            save_figure(layer_figure(res.per_layer), out / "distractor_attention_per_layer.html")
        except OSError as exc:
            raise PathError(file_error(out, exc, "results", write=True)) from None
        print(f"wrote {out}/", file=sys.stderr)
    print_table(res.table, args.format, None)
    return 0
