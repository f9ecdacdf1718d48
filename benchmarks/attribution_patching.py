"""Attribution patching over all heads (2 forwards + 1 backward) vs per-head activation
patching (one forward per layer over a batch repeated n_heads times). Prints both times and
the ratio. Usage: python benchmarks/attribution_patching.py [model] (default: the circuit toy)."""
from __future__ import annotations

import sys
import time

import torch

import interp
from interp.circuits.attribution import node_attribution
from interp.circuits.patching import induction_task, patch_heads


def main(name: str = "circuit-toy") -> None:
    torch.set_num_threads(1)
    if name == "circuit-toy":
        from interp.circuits.toy import circuit_toy

        model = circuit_toy()
    else:
        model = interp.load_model(name)
    task = induction_task(model, batch=4, seg_len=10)
    t0 = time.perf_counter()
    node_attribution(model, task)
    t_attr = time.perf_counter() - t0
    t0 = time.perf_counter()
    patch_heads(model, task, progress=False)
    t_patch = time.perf_counter() - t0
    print(f"{name}: attribution {t_attr:.2f}s, per-head patching {t_patch:.2f}s, "
          f"ratio {t_patch / t_attr:.1f}x")


if __name__ == "__main__":
    main(*sys.argv[1:])
