"""``interp train toy-induction``: train the toy induction model (and its 1-layer control)."""
from __future__ import annotations

import argparse
import sys

from interp.cli import arguments, command, print_table, source_literal


def _default(field: str):
    """The default of a ToyInductionConfig field, read without importing the recipe (torch)."""
    return source_literal("interp.recipes.toy_induction", f"ToyInductionConfig.{field}")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", choices=["toy-induction"], help="what to train")
    p.add_argument("--config", help="TOML file with ToyInductionConfig fields (strict)")
    p.add_argument("--steps", type=int, help=f"default {_default('steps')}")
    p.add_argument("--name", help=f"checkpoint name (default {_default('name')})")
    p.add_argument("--out", help="checkpoint folder (default <cache>/toy/<name>)")
    p.add_argument("--no-control", action="store_true", help="skip the 1-layer control")
    p.add_argument("--seed", type=int)


@command("train", "train a toy model with progress (checkpoints + history.csv)",
         devices="model")
@arguments(_args)
def cmd_train(args) -> int:
    from interp.paths import check_input_file, check_output_dir

    if args.config:                                # files first: no training for a typo
        check_input_file(args.config, "config file")
    if args.out:
        check_output_dir(args.out, "the checkpoint folder")
    from interp.config import from_dict, load_toml
    from interp.recipes.toy_induction import ToyInductionConfig, default_dir, train_toy_induction

    data = load_toml(args.config) if args.config else {}
    for key, value in (("steps", args.steps), ("name", args.name), ("seed", args.seed)):
        if value is not None:
            data[key] = value
    if args.no_control:
        data["control"] = False
    cfg = from_dict(ToyInductionConfig, data, where=args.config or "toy-induction")
    history = train_toy_induction(cfg, out_dir=args.out, device=args.device, dtype=args.dtype)
    evals = history.dropna(subset=["induction"])
    last = evals.groupby("model").tail(1)
    print_table(last[["model", "step", "loss", "induction", "previous_token", "repeated_loss",
                      "icl_score"]].round(4), "table", None)
    where = args.out or default_dir(cfg.name)
    print(f"saved to {where}; load with interp.load_model('toy:{where}')", file=sys.stderr)
    return 0
