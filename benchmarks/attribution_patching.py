"""Attribution patching over all heads (clean forward + corrupted forward + one backward) vs
per-head activation patching (one forward per layer over the batch repeated n_heads times), on
the same induction task in one run. Prints both times, the ratio and how well the attribution
scores rank the real patching effects (Spearman rho; Pearson r).

Usage: python benchmarks/attribution_patching.py [model] [batch] [seg_len]
(default: smollm2-135m 4 10; ``circuit-toy`` for the trained toy)."""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

import interp
from interp.circuits.attribution import node_attribution, spearman
from interp.circuits.activation import patch_heads
from interp.circuits.tasks import induction_task


def main(name: str = "smollm2-135m", batch: str = "4", seg_len: str = "10") -> None:
    torch.set_num_threads(1)
    if name == "circuit-toy":
        from interp.recipes.toy_induction import circuit_toy

        model = circuit_toy()
    else:
        model = interp.load_model(name)
    task = induction_task(model, batch=int(batch), seg_len=int(seg_len))
    node_attribution(model, task)                       # warm-up (first-forward hook wiring)
    t0 = time.perf_counter()
    na = node_attribution(model, task)
    t_attr = time.perf_counter() - t0
    t0 = time.perf_counter()
    ph = patch_heads(model, task, progress=False)
    t_patch = time.perf_counter() - t0
    effect = ph.metric - ph.attrs["corrupted"]
    print(f"{name} ({len(na)} heads, batch {batch}, seg_len {seg_len}, 1 thread): "
          f"attribution {t_attr:.2f}s, per-head patching {t_patch:.2f}s, "
          f"ratio {t_patch / t_attr:.1f}x; attribution vs patching Spearman "
          f"{spearman(na.score, effect):.3f}, Pearson {np.corrcoef(na.score, effect)[0, 1]:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
