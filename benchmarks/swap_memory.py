"""Peak memory of a smollm2-135m forward at long context: dense attention vs linear attention
swapped into all layers (issue #3: the swapped forward must peak well below dense, because
the model's own N x N attention is not computed underneath).

Each measurement runs in a fresh process (spawned). On CPU it resets its peak-RSS high-water
mark through /proc/self/clear_refs and reports VmHWM minus the resident size before the
forward; on CUDA (``--device cuda``) it reports ``torch.cuda.max_memory_allocated`` during the
forward minus what was allocated before it (the weights), and a dense forward that runs out
of GPU memory is reported as such instead of failing the run.

    python benchmarks/swap_memory.py [--seq 8192] [--impl linear] [--feature-map elu] [--device cpu]
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


def _measure(mode: str, seq: int, opts: dict, device: str, queue) -> None:
    import torch

    import interp
    from interp.swap import swap_attention

    torch.manual_seed(0)
    model = interp.load_model("smollm2-135m", device=device)
    tokens = torch.randint(1000, 20000, (1, seq)).to(device)
    cuda = tokens.is_cuda

    def forward():
        with torch.no_grad():
            if mode == "dense":
                model(tokens)
            else:
                with swap_attention(model, mode, **opts):
                    model(tokens)

    if cuda:
        if mode != "dense":  # compile / autotune the GPU kernels outside the measurement
            forward()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")                                   # reset the high-water mark
        base = _rss_kib("VmRSS")
    t = time.perf_counter()
    try:
        forward()
        if cuda:
            torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        queue.put((None, None))
        return
    elapsed = time.perf_counter() - t
    if cuda:
        queue.put(((torch.cuda.max_memory_allocated() - base) / 1024, elapsed))
    else:
        queue.put((_rss_kib("VmHWM") - base, elapsed))


def run(mode: str, seq: int, opts: dict, device: str = "cpu") -> tuple[float | None, float | None]:
    """``(peak MiB, seconds)`` of one forward in a fresh process; ``(None, None)``: out of
    GPU memory."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(mode, seq, opts, device, queue))
    proc.start()
    peak_kib, elapsed = queue.get()
    proc.join()
    return (None if peak_kib is None else peak_kib / 1024), elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--impl", default="linear")
    p.add_argument("--feature-map", default="elu")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    args = p.parse_args()
    from interp.devices import resolve_device

    device = str(resolve_device(args.device))
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")   # RSS follows live tensors
    opts = {"feature_map": args.feature_map, "form": "chunked"} if args.impl == "linear" else {}
    dense_mb, dense_s = run("dense", args.seq, {}, device)
    swap_mb, swap_s = run(args.impl, args.seq, opts, device)
    what = "CUDA peak allocated" if device.startswith("cuda") else "peak RSS"
    print(f"smollm2-135m forward, 1 x {args.seq} tokens, float32, {device} ({what} over the "
          f"weights)")
    for label, mb, sec, swapped in [("dense (eager bridge)", dense_mb, dense_s, False),
                                    (f"{args.impl} swapped, all layers", swap_mb, swap_s, True)]:
        if mb is None:
            print(f"{label:28s} out of GPU memory")
            continue
        ratio = f"  ({mb / dense_mb:.2f}x dense memory)" if swapped and dense_mb else ""
        print(f"{label:28s} peak {mb:9.0f} MiB  {sec:7.1f} s{ratio}")


if __name__ == "__main__":
    main()
