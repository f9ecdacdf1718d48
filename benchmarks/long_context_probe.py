"""Long-context probes: time and peak memory of the blockwise probes against a plain forward.

Each case runs in a fresh process (so its peak RSS is its own) on one CPU thread and prints
seconds and the peak resident memory *above* the process's RSS after the model was loaded
(the kernel's high-water mark ``VmHWM``, reset through ``/proc/self/clear_refs`` just before
the timed call, minus the RSS then), and the peak RSS of the timed call (model included).
The toy's TransformerLens native layers keep an ``[n_ctx, n_ctx]`` bool causal mask each (8 GB
at a 64k context), which is part of the model, not of the probe. Ratios are against the plain forward of
the same model and length in the same run:

- ``forward``: ``model(tokens)`` with every layer's attention through torch SDPA
  (``swap_attention(model, "softmax")``: a flash kernel on CPU, O(n) memory) -- the cheapest
  exact forward, logits included.
- ``sink_blockwise`` / ``induction_blockwise``: ``sink_probe`` (alpha of keys 0-3, k/v norms)
  and ``pattern_scores`` (induction on a sequence repeated once, prefix matching, previous and
  duplicate token) with ``method="blockwise"``: all layers, row blocks of exact softmax,
  no [n, n] pattern, no logits.
- ``sink_pattern``: the same sink probe through ``hook_pattern`` (the model's own attention
  and its [b, h, n, n] pattern per layer); only where that fits (``--pattern-max``).

Models: a random toy (``toy``: 2 layers, d_model 64, 4 heads of 16, context 65536) at
4k/16k/32k (and 64k for the blockwise sink probe), and SmolLM2-135M at 4k and its full 8192.

    python benchmarks/long_context_probe.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
import interp
from interp.models.toy import ToyConfig, build_toy
from interp.probes.sink import sink_probe
from interp.probes.induction import pattern_scores

model_name, n, case = {model!r}, {n}, {case!r}
if model_name == "toy":
    model = build_toy(ToyConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=512,
                                n_ctx=65536, attn_only=True, seed=0))
    low = 0
else:
    model = interp.load_model(model_name)
    low = 1000
g = torch.Generator().manual_seed(0)
x = torch.randint(low, min(model.cfg.d_vocab, 30000), (1, n), generator=g)
x[0, n // 2:] = x[0, : n - n // 2]
with torch.no_grad():
    model(x[:, :16])                                   # warm up
def status_gb(key):
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith(key + ":"))
    return int(line.split()[1]) / 2**20
with open("/proc/self/clear_refs", "w") as f:      # reset the peak (VmHWM) to the current RSS
    f.write("5")
base = status_gb("VmRSS")
t0 = time.perf_counter()
with torch.no_grad():
    if case == "forward":
        with interp.swap_attention(model, "softmax"):
            model(x)
    elif case == "sink_blockwise":
        sink_probe(model, x, method="blockwise")
    elif case == "induction_blockwise":
        pattern_scores(model, x, seg_len=n // 2, offset=0, method="blockwise")
    elif case == "sink_pattern":
        sink_probe(model, x, method="pattern")
secs = time.perf_counter() - t0
peak = status_gb("VmHWM")
print(json.dumps({{"seconds": secs, "extra_gb": max(0.0, peak - base), "peak_gb": peak}}))
"""


def run_case(model: str, n: int, case: str, timeout: int = 3600) -> dict:
    code = CHILD.format(root=str(ROOT), model=model, n=n, case=case)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, env=env)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="toy at 4k/16k and smollm2 at 4k only")
    p.add_argument("--pattern-max", type=int, default=4096,
                   help="longest sequence for the pattern-hook case (default 4096)")
    args = p.parse_args(argv)
    plan = [("toy", n) for n in ((4096, 16384) if args.quick else (4096, 16384, 32768))]
    plan += [("smollm2-135m", n) for n in ((4096,) if args.quick else (4096, 8192))]
    print(f"{'model':14s} {'n':>6s} {'case':20s} {'seconds':>8s} {'x fwd':>6s} "
          f"{'extra GB':>8s} {'x fwd':>6s} {'peak RSS GB':>11s}")
    for model, n in plan:
        cases = ["forward", "sink_blockwise", "induction_blockwise"]
        if n <= args.pattern_max:
            cases.append("sink_pattern")
        ref = None
        for case in cases:
            r = run_case(model, n, case)
            if "error" in r:
                print(f"{model:14s} {n:6d} {case:20s} error: {r['error']}")
                continue
            ref = ref or r
            print(f"{model:14s} {n:6d} {case:20s} {r['seconds']:8.2f} "
                  f"{r['seconds'] / ref['seconds']:6.2f} {r['extra_gb']:8.3f} "
                  f"{r['extra_gb'] / max(ref['extra_gb'], 1e-3):6.2f} {r['peak_gb']:11.2f}",
                  flush=True)
    if not args.quick:
        r = run_case("toy", 65536, "sink_blockwise")
        print(f"{'toy':14s} {65536:6d} {'sink_blockwise':20s} "
              + (f"{r['seconds']:8.2f} {'':6s} {r['extra_gb']:8.3f} {'':6s} {r['peak_gb']:11.2f}"
                 if "error" not in r else f"error: {r['error']}"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
