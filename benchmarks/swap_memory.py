"""Peak memory of a smollm2-135m forward at long context: dense attention vs linear attention
swapped into all layers (issue #3: the swapped forward must peak well below dense, because
the model's own N x N attention is not computed underneath).

Each measurement runs in a fresh process (spawned), which resets its peak-RSS high-water mark
through /proc/self/clear_refs and reports VmHWM minus the resident size before the forward.

    python benchmarks/swap_memory.py [--seq 8192] [--impl linear] [--feature-map elu]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def _measure(mode: str, seq: int, opts: dict, queue) -> None:
    import torch

    import interp
    from interp.swap import swap_attention

    torch.manual_seed(0)
    model = interp.load_model("smollm2-135m")
    tokens = torch.randint(1000, 20000, (1, seq))
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")                                   # reset the high-water mark
    base = _rss_kib("VmRSS")
    t = time.perf_counter()
    with torch.no_grad():
        if mode == "dense":
            model(tokens)
        else:
            with swap_attention(model, mode, **opts):
                model(tokens)
    elapsed = time.perf_counter() - t
    queue.put((_rss_kib("VmHWM") - base, elapsed))


def run(mode: str, seq: int, opts: dict) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(mode, seq, opts, queue))
    proc.start()
    peak_kib, elapsed = queue.get()
    proc.join()
    return peak_kib / 1024, elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--impl", default="linear")
    p.add_argument("--feature-map", default="elu")
    args = p.parse_args()
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")   # RSS follows live tensors
    opts = {"feature_map": args.feature_map, "form": "chunked"} if args.impl == "linear" else {}
    dense_mb, dense_s = run("dense", args.seq, {})
    swap_mb, swap_s = run(args.impl, args.seq, opts)
    print(f"smollm2-135m forward, 1 x {args.seq} tokens, float32")
    print(f"{'dense (eager bridge)':28s} peak {dense_mb:9.0f} MiB  {dense_s:7.1f} s")
    print(f"{args.impl + ' swapped, all layers':28s} peak {swap_mb:9.0f} MiB  {swap_s:7.1f} s  "
          f"({swap_mb / dense_mb:.2f}x dense memory)")


if __name__ == "__main__":
    main()
