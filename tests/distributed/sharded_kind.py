"""A tiny experiment kind for the sharded-run tests (registered on import; the ranks import
this module because the kind's function lives here).

Each sweep point and mapped item draws from the global torch RNG, so equal tables across
process counts show that seeding does not depend on the rank. Each rank notes the points it
computed in ``computed.rank<r>.txt`` (a test-only side file). ``INTERP_TEST_FAIL=<rank>:<k>``
makes that rank raise after computing ``k`` points (an env var, so the config -- and thus the
resumability check -- stays the same)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd
import torch

from interp.experiments import RunContext, experiment

KIND = "test_sharded"


@dataclass(frozen=True)
class ShardedConfig:
    n_points: int = 7
    n_items: int = 5


def _square_plus_noise(x: int) -> dict:
    return {"x": x, "y": x * x + float(torch.randn(()))}


@experiment(KIND, ShardedConfig)
def run_sharded(cfg: ShardedConfig, ctx: RunContext) -> None:
    """Sweep + map + a draw after both; for tests."""
    fail = os.environ.get("INTERP_TEST_FAIL")
    fail_rank, fail_after = map(int, fail.split(":")) if fail else (-1, -1)
    sweep = ctx.sweep("points")
    points = [{"i": i} for i in range(cfg.n_points)]
    for k, point in enumerate(sweep.pending(points)):
        if ctx.rank == fail_rank and k >= fail_after:
            raise RuntimeError(f"deliberate failure on rank {ctx.rank}")
        with open(ctx.out_dir / f"computed.rank{ctx.rank}.txt", "a") as fh:
            fh.write(f"{point['i']}\n")
        sweep.record(point, {"value": point["i"] + float(torch.rand(()))})
    ctx.add_table("points", sweep.table())
    ctx.add_table("mapped", pd.DataFrame(ctx.map(_square_plus_noise, range(cfg.n_items),
                                                 name="square")))
    ctx.add_table("after", pd.DataFrame({"draw": [float(torch.rand(()))]}))
