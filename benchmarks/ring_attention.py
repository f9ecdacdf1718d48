"""Per-rank peak memory and time of ring attention vs dense attention, on CPU processes.

    python benchmarks/ring_attention.py                 # seq 16384, P = 1, 2, 4
    python benchmarks/ring_attention.py --quick         # seq 4096, one repeat
    python benchmarks/ring_attention.py --kv-heads 2    # GQA
    python benchmarks/ring_attention.py --explicit-dense  # also the O(N^2) explicit softmax

Every configuration runs in fresh processes started by ``interp.distributed.run_distributed``
(gloo): dense attention (causal torch SDPA, fp32) in one process, ring attention (causal,
zigzag layout, fp32) in P processes each holding ``seq / P`` tokens. P = 1 is ring attention's
single-process fallback (SDPA on the whole sequence).

How memory is measured (CPU, Linux): inside each worker, after a small warm-up call (thread
pools, lazy initialisation), the kernel's resident-set high-water mark is reset to the current
RSS by writing ``5`` to ``/proc/self/clear_refs``; the baseline RSS is read before the inputs
are allocated, and after the call the peak is ``VmHWM`` from ``/proc/self/status``.
"peak" = VmHWM - baseline: the rank's inputs (its q/k/v shard) plus everything the call
allocates (output, accumulators, key/value blocks in flight, kernel workspace). Where
``clear_refs`` is not writable the script falls back to ``resource.getrusage`` ``ru_maxrss``
(a lifetime maximum, so the number can only be trusted when the call dominates) and says so.
The script sets ``MALLOC_MMAP_THRESHOLD_=65536`` for the workers so glibc serves every tensor
bigger than 64 KiB with its own mmap and returns it to the OS on free: RSS then follows live
tensor memory (without it glibc's dynamic threshold keeps freed blocks resident in the heap).

Where a rank's peak comes from (fp32, u = batch * heads * seq/P * d_head * 4 bytes): its
q/k/v shard (3u with MHA), the float32 output accumulator (1u, returned as the output), the key
and value blocks in flight -- the one being attended (and sent on) and the next one being
received -- and one block's output before it is merged. Ring attention makes one lap per kv
head, so the blocks in flight are one kv head's: 4u / kv_heads instead of 4u (a lap over all
heads at once put MHA at 0.86 (P = 2) and 0.56 (P = 4) of dense, above the 1.3/P target).

Times are wall-clock seconds of one forward call (min over repeats), the slowest rank after a
barrier. P processes share the machine's cores: each gets ``max(1, cores // P)`` threads, the
dense process all cores, so on a 2-core machine P = 4 is oversubscribed and slower per FLOP.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import time

import torch
import torch.distributed as dist

from interp.distributed import ring_attention, run_distributed

MIB = 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak(hwm_ok: bool) -> int:
    if hwm_ok:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _inputs(cfg: dict, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    b, h, kvh, d = cfg["batch"], cfg["heads"], cfg["kv_heads"], cfg["d_head"]
    q = torch.randn(b, h, n, d, generator=g)
    k = torch.randn(b, kvh, n, d, generator=g)
    v = torch.randn(b, kvh, n, d, generator=g)
    return q, k, v


def _dense(q, k, v, explicit: bool):
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    if not explicit:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    n = q.shape[2]
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    s.masked_fill_(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, -1) @ v


def worker(rank: int, world: int, cfg: dict, mode: str) -> dict:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    n_local = cfg["seq"] // world
    barrier = dist.barrier

    def run(q, k, v):
        if mode == "ring":
            return ring_attention(q, k, v, causal=True, layout="zigzag")
        return _dense(q, k, v, explicit=mode == "explicit")

    with torch.no_grad():
        run(*_inputs(cfg, 64 * world, seed=rank))  # warm-up, small
        gc.collect()
        barrier()
        hwm_ok = _reset_peak()
        base = _rss()
        q, k, v = _inputs(cfg, n_local, seed=rank)
        before_call = _rss()
        barrier()
        t0 = time.perf_counter()
        out = run(q, k, v)
        barrier()
        times = [time.perf_counter() - t0]
        peak = _peak(hwm_ok)
        del out
        for _ in range(cfg["repeats"] - 1):
            barrier()
            t0 = time.perf_counter()
            out = run(q, k, v)
            barrier()
            times.append(time.perf_counter() - t0)
            del out
    return {
        "footprint": peak - base,
        "call": peak - before_call,
        "inputs": before_call - base,
        "seconds": min(times),
        "hwm_ok": hwm_ok,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, default=None, help="total tokens (default 16384, quick 4096)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads (no GQA)")
    ap.add_argument("--d-head", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--procs", default="1,2,4", help="comma-separated world sizes")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="seq 4096, 1 repeat")
    ap.add_argument("--explicit-dense", action="store_true", help="also explicit O(N^2) softmax")
    args = ap.parse_args()
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # inherited by the workers
    seq = args.seq or (4096 if args.quick else 16384)
    procs = [int(p) for p in args.procs.split(",")]
    for p in procs:
        if seq % (2 * p) and p > 1:
            raise SystemExit(f"--seq {seq} must be divisible by 2P = {2 * p} for the zigzag layout")
    cfg = {
        "seq": seq, "heads": args.heads, "kv_heads": args.kv_heads or args.heads,
        "d_head": args.d_head, "batch": args.batch, "repeats": 1 if args.quick else args.repeats,
    }
    print(
        f"causal attention, fp32, batch {cfg['batch']}, seq {seq}, heads {cfg['heads']}, "
        f"kv_heads {cfg['kv_heads']}, d_head {cfg['d_head']}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}"
    )
    rows = [("dense SDPA", 1, run_distributed(worker, 1, cfg, "sdpa", timeout=3600)[0])]
    if args.explicit_dense:
        rows.append(("dense explicit", 1, run_distributed(worker, 1, cfg, "explicit", timeout=3600)[0]))
    for p in procs:
        per_rank = run_distributed(worker, p, cfg, "ring", timeout=3600)
        worst = max(per_rank, key=lambda r: r["footprint"])
        rows.append((f"ring P={p}", p, {**worst, "seconds": max(r["seconds"] for r in per_rank)}))
    dense = rows[0][2]
    if not all(r[2]["hwm_ok"] for r in rows):
        print("note: /proc/self/clear_refs not writable; peaks are ru_maxrss deltas (upper bounds)")
    header = (
        f"{'method':<15}{'P':>3}{'peak MiB':>10}{'(inputs':>9}{' + call)':>9}{'time s':>9}"
        f"{'peak/dense':>12}{'target 1.3/P':>14}{'time/dense':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, p, r in rows:
        ratio = r["footprint"] / dense["footprint"]
        target = f"{1.3 / p:.3f}" if name.startswith("ring") else ""
        ok = ("  ok" if ratio <= 1.3 / p else "  MISS") if target else ""
        print(
            f"{name:<15}{p:>3}{r['footprint'] / MIB:>10.1f}{r['inputs'] / MIB:>9.1f}"
            f"{r['call'] / MIB:>9.1f}{r['seconds']:>9.2f}{ratio:>12.3f}{target:>10}{ok:<4}"
            f"{r['seconds'] / dense['seconds']:>12.2f}"
        )
    print("peak = per-rank resident high-water mark above the pre-input baseline (inputs + call);")
    print("for ring the worst rank is shown, time is the slowest rank.")


if __name__ == "__main__":
    main()
