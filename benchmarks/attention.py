"""Speed and peak memory of every registered attention implementation, relative to causal SDPA.

Run by hand (never asserted in tests)::

    python benchmarks/attention.py            # seq 1k .. 16k, batch 1, 8 heads, d_head 64, fp32
    python benchmarks/attention.py --quick    # seq 1k .. 4k, fewer repeats
    python benchmarks/attention.py --device cuda --dtype bfloat16 --lengths 4096 16384 65536

For each sequence length and each implementation (built from ``interp.attention.names()``, with
the options in ``BENCH_OPTIONS``) it measures, causal, forward only, under ``torch.no_grad``:

- time: median of ``--repeats`` calls after one warm-up call (wall clock, or with
  ``--threads 1 --clock cpu`` the process CPU time, robust on a shared machine), and the ratio
  ``t(SDPA) / t(impl)`` ("x SDPA", > 1 means faster) against ``softmax`` (torch SDPA, causal)
  measured in the same run;
- FLOP/s: the algorithm's matmul FLOPs (``count_flops``: what the implementation computes,
  including masked-out entries inside computed blocks) divided by the time, and its share of this
  machine's dense matmul rate (a 2048^3 fp32 matmul, measured at start);
- peak memory: each (implementation, length) runs once in a fresh spawned Python process; the
  process resets its peak-RSS mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) after the
  inputs exist, runs the call, and reports ``VmHWM - VmRSS_before`` from ``/proc/self/status``:
  the extra resident memory the call needed at its peak (CPU; not allocator statistics). The
  child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave RSS at once (else
  glibc heap reuse/fragmentation makes repeated runs differ by 2x). Where clear_refs cannot be
  written it falls back to ``ru_maxrss`` minus the RSS before the call.

On CUDA (``--device cuda``) the same table comes from the GPU fast paths (flex_attention block
masks for the sparse implementations, fla for chunked linear attention when installed, SDPA):
time is the median of CUDA-event timings, peak memory is ``torch.cuda.max_memory_allocated``
during the call minus the memory allocated before it (inputs excluded), in-process. The FLOP
column of a flex implementation counts the 128 x 128 tiles its block mask lists. When ``fla``
imports, an extra row ``fla`` times fla's own ``chunk_linear_attn`` (normalised, elu + 1
features, float32) and the column ``x fla`` gives ``t(fla) / t(impl)`` for ``linear``.

The targets from the issue are printed as a report, not asserted. The chunked-linear rate target
is checked against torch.bmm's rate on the algorithm's own shapes, as defined and measured in
``benchmarks/linear_roofline.py`` (CPU, float32; the "% mm" column stays the 2048^3 share).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp import attention  # noqa: E402
from interp.attention import gpu  # noqa: E402

BATCH, HEADS, D_HEAD = 1, 8, 64
BASELINE = "softmax"
BENCH_OPTIONS: dict[str, dict] = {
    "softmax": {},
    "linear": {"feature_map": "elu", "form": "chunked", "chunk_size": 64},
    "sliding_window": {"window": 512},
    "sink_window": {"n_sink": 4, "window": 512},
    "block_sparse": {"block_size": 64, "local_blocks": 1, "global_blocks": 1, "random_blocks": 1},
}


def build(name: str) -> attention.AttentionImpl:
    return attention.get(name, **BENCH_OPTIONS.get(name, {}))


#: where and in which dtype the inputs live (set by main from --device / --dtype)
DEVICE, DTYPE = torch.device("cpu"), torch.float32


def inputs(n: int, seed: int = 0, device=None, dtype=None):
    g = torch.Generator().manual_seed(seed)
    out = tuple(torch.randn(BATCH, HEADS, n, D_HEAD, generator=g) for _ in range(3))
    device, dtype = device or DEVICE, dtype or DTYPE
    if device.type == "cpu" and dtype == torch.float32:
        return out
    return tuple(t.to(device, dtype) for t in out)


def uses_flex(impl) -> bool:
    probe = torch.empty(1, 1, 1, D_HEAD, device=DEVICE, dtype=DTYPE)
    return isinstance(impl, attention.base.SparseAttention) and gpu.use_flex(probe, probe)


# -- FLOPs -------------------------------------------------------------------------------------
def count_flops(impl, n: int, b: int = BATCH, h: int = HEADS, d: int = D_HEAD) -> float | None:
    """Matmul FLOPs of one causal forward (2 per multiply-add), as the implementation computes it."""
    bh = b * h
    if uses_flex(impl):  # the 128 x 128 tiles the block mask lists, each QK^T and PV
        tiles, _ = gpu.block_counts(impl, n, True, DEVICE)
        return bh * tiles * gpu.FLEX_BLOCK**2 * 4 * d
    if impl.name == "softmax":
        pairs = n * (n + 1) / 2  # causal: a fused kernel skips the upper triangle
        return bh * pairs * 4 * d
    if impl.name == "linear" and impl.form == "chunked":
        f, e, c = impl.phi.dim(d), d + 1, min(impl.chunk_size, n)
        nc = -(-n // c)
        intra = nc * c * c * (2 * f + 2 * e)  # q k^T and A v' for every chunk
        inter = nc * c * 2 * f * e + nc * c * 2 * f * e  # phi(k)^T v' per chunk, q @ state
        return bh * (intra + inter)
    if impl.name in ("sliding_window", "sink_window"):
        w = min(impl.window, n)
        bs = min(n, min(128, max(16, w)))
        nb = -(-n // bs)
        extra = getattr(impl, "n_sink", 0) + len(getattr(impl, "global_tokens", ()))
        return bh * nb * bs * (bs + w - 1 + extra) * 4 * d
    if impl.name == "block_sparse":
        bs = impl.block_size
        nb = -(-n // bs)
        k = max(len(r) for r in impl.layout(nb, True)) or 1
        glob = min(impl.global_blocks * bs, n)
        return bh * (nb * bs * k * bs * 4 * d + glob * n * 4 * d)
    return None  # unknown to this script: reported as "-"


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    if DEVICE.type == "cuda":
        size = 8192
    a = torch.randn(size, size).to(DEVICE, DTYPE)
    b = torch.randn(size, size).to(DEVICE, DTYPE)
    return 2 * size**3 / _median_time(lambda: a @ b, repeats)


# -- time and memory -----------------------------------------------------------------------
CLOCK = time.perf_counter


def _median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up (CUDA: events, synchronised)."""
    fn()
    ts = []
    if DEVICE.type == "cuda":
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            ts.append(start.elapsed_time(end) / 1e3)
        return statistics.median(ts)
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        ts.append(CLOCK() - t0)
    return statistics.median(ts)


def time_call(impl, n: int, repeats: int) -> float:
    q, k, v = inputs(n)
    with torch.no_grad():
        return _median_time(lambda: impl(q, k, v, causal=True), repeats)


def fla_call(n: int):
    """fla's own chunk_linear_attn on elu + 1 features (float32, normalised), ready to time."""
    q, k, v = inputs(n, dtype=torch.float32)
    phi = attention.get("linear", feature_map="elu").phi
    scale = 1.0 / D_HEAD**0.5
    with torch.no_grad():
        kw = dict(scale=scale, positions=None, length=n)
        fq = phi(q, is_query=True, **kw).transpose(1, 2).contiguous()  # [b, n, h, f]
        fk = phi(k, is_query=False, **kw).transpose(1, 2).contiguous()
        vv = v.transpose(1, 2).contiguous()
    return lambda: gpu.fla_linear_attn()(fq, fk, vv, scale=1.0, normalize=True)


def fla_time(n: int, repeats: int) -> float:
    with torch.no_grad():
        return _median_time(fla_call(n), repeats)


def cuda_peak(fn) -> float:
    """Extra CUDA memory allocated at the peak of ``fn()`` (what existed before excluded)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        fn()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - before)


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def _peak_child(name: str, n: int, threads: int, dtype: torch.dtype, conn) -> None:
    torch.set_num_threads(threads)
    impl = build(name)
    q, k, v = inputs(n, dtype=dtype)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
        with torch.no_grad():
            impl(q, k, v, causal=True)
        peak = _status_kb("VmHWM")
    except OSError:  # no clear_refs: high-water mark since start
        before = _status_kb("VmRSS")
        with torch.no_grad():
            impl(q, k, v, causal=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send((peak - before) * 1024)
    conn.close()


_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def peak_memory(name: str, n: int, threads: int) -> float:
    """Extra peak resident bytes of one causal forward: in a fresh process on CPU, the CUDA
    allocator's peak on CUDA."""
    if DEVICE.type == "cuda":
        impl = build(name).to(DEVICE)
        q, k, v = inputs(n)
        with torch.no_grad():
            impl(q, k, v, causal=True)  # compile / autotune outside the measurement
        return cuda_peak(lambda: impl(q, k, v, causal=True))
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_peak_child, args=(name, n, threads, DTYPE, child))
    # glibc: serve every allocation >= 64 KiB by mmap and give it back on free, so RSS follows
    # the live tensors instead of heap fragmentation (read by the fresh interpreter at start)
    saved = {k: os.environ.get(k) for k in _MALLOC_ENV}
    os.environ.update(_MALLOC_ENV)
    try:
        proc.start()
    finally:
        for k, val in saved.items():
            if val is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = val
    child.close()
    val = parent.recv()
    proc.join()
    return float(val)


# -- report ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="seq 1k, 2k, 4k and 2 repeats")
    ap.add_argument("--lengths", "--seqs", dest="seqs", type=int, nargs="+",
                    help="sequence lengths (default 1k..16k)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="input dtype (default float32)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per point (default 3)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's choice). On a shared machine use 1: "
                         "with 2 OpenMP threads and another busy process every op waits for a "
                         "descheduled thread")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter; cpu: process CPU time (with --threads 1 this "
                         "ignores time the process spent descheduled on a loaded machine)")
    ap.add_argument("--names", nargs="+", choices=attention.names(), default=attention.names(),
                    help="implementations (default: every registered one)")
    args = ap.parse_args(argv)
    global DEVICE, DTYPE
    from interp.devices import resolve_device, resolve_dtype

    DEVICE, DTYPE = resolve_device(args.device), resolve_dtype(args.dtype)
    if DEVICE.type != "cpu" and args.clock == "cpu":
        ap.error("--clock cpu is for --device cpu (CUDA times come from CUDA events)")
    seqs = args.seqs or ([1024, 2048, 4096] if args.quick else [1024, 2048, 4096, 8192, 16384])
    repeats = args.repeats or (2 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if torch.get_num_threads() != 1:
            ap.error("--clock cpu needs --threads 1 (process CPU time sums all threads)")
        global CLOCK
        CLOCK = time.process_time
    threads = torch.get_num_threads()
    names = [BASELINE] + [n for n in args.names if n != BASELINE]
    impls = {name: build(name).to(DEVICE) for name in names}
    with_fla = DEVICE.type == "cuda" and gpu.fla_linear_attn() is not None

    rate = matmul_rate()
    where = (f"{torch.cuda.get_device_name(DEVICE)}, CUDA events" if DEVICE.type == "cuda"
             else f"{threads} threads, {args.clock} clock")
    print(f"torch {torch.__version__}, {DEVICE}: {where}; batch {BATCH}, heads {HEADS}, "
          f"d_head {D_HEAD}, {args.dtype}, causal, forward under no_grad")
    print(f"matmul rate ({'8192' if DEVICE.type == 'cuda' else '2048'}^3 {args.dtype}): "
          f"{rate / 1e9:.1f} GFLOP/s")
    for name, impl in impls.items():
        path = ("flex_attention" if uses_flex(impl) else
                "fla" if name == "linear" and with_fla and DEVICE.type == "cuda" else "torch")
        print(f"  {name}: {impl.describe()}  [{path if DEVICE.type == 'cuda' else 'cpu'}]")
    if DEVICE.type == "cuda" and not with_fla:
        print("  (fla not installed: no fla row; pip install 'interp[gpu]')")
    print()

    rows = []
    for n in seqs:
        base_t = time_call(impls[BASELINE], n, repeats)
        base_m = None if args.no_memory else peak_memory(BASELINE, n, threads)
        for name, impl in impls.items():
            t = base_t if name == BASELINE else time_call(impl, n, repeats)
            mem = None if args.no_memory else (
                base_m if name == BASELINE else peak_memory(name, n, threads))
            fl = count_flops(impl, n)
            rows.append(dict(name=name, n=n, t=t, speed=base_t / t, flops=fl,
                             rate=None if fl is None else fl / t, mem=mem,
                             mem_ratio=None if mem is None or not base_m else mem / base_m))
            print(_row(rows[-1], rate) if len(rows) > 1 else _header() + "\n" + _row(rows[-1], rate),
                  flush=True)
        if with_fla:
            t = fla_time(n, repeats)
            mem = None if args.no_memory else cuda_peak(fla_call(n))
            rows.append(dict(name="fla", n=n, t=t, speed=base_t / t, flops=None, rate=None,
                             mem=mem,
                             mem_ratio=None if mem is None or not base_m else mem / base_m))
            lin = next((r for r in rows if r["name"] == "linear" and r["n"] == n), None)
            if lin:
                lin["x_fla"] = t / lin["t"]
            print(_row(rows[-1], rate), flush=True)
            if lin:
                print(f"{'  linear vs fla':<16}{n:>7}  x fla {lin['x_fla']:.2f} "
                      "(t(fla) / t(linear); > 1: ours faster)", flush=True)
    print()
    roof = None
    if "linear" in impls and impls["linear"].form == "chunked" and DEVICE.type == "cpu" \
            and DTYPE == torch.float32:
        roof = _linear_roofline(impls["linear"], max(seqs), repeats)
    _targets(rows, rate, roof)
    return 0


def _linear_roofline(impl, n: int, repeats: int) -> tuple[float, float]:
    """(FLOPs, bmm roofline in FLOP/s) of chunked linear at seq ``n`` as
    ``benchmarks/linear_roofline.py`` defines them: the four products of the chunked algorithm
    with D-wide operands, and torch.bmm's rate on them as one batch each (same clock)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "linear_roofline", Path(__file__).with_name("linear_roofline.py"))
    lr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lr)
    c = min(impl.chunk_size, n)
    fn, fl = lr.roofline_calls(n, c, b=BATCH, h=HEADS, d=D_HEAD)
    return lr.flops(n // c * c, c, b=BATCH, h=HEADS, d=D_HEAD), fl / _median_time(fn, repeats)


def _header() -> str:
    return (f"{'implementation':<16}{'seq':>7}{'time ms':>10}{'x SDPA':>8}{'GFLOP':>9}"
            f"{'GFLOP/s':>9}{'% mm':>7}{'peak MB':>9}{'mem/SDPA':>9}")


def _row(r: dict, rate: float) -> str:
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    return (f"{r['name']:<16}{r['n']:>7}{r['t'] * 1e3:>10.1f}{r['speed']:>8.2f}"
            f"{fmt(None if r['flops'] is None else r['flops'] / 1e9, '.2f'):>9}"
            f"{fmt(None if r['rate'] is None else r['rate'] / 1e9, '.1f'):>9}"
            f"{fmt(None if r['rate'] is None else 100 * r['rate'] / rate, '.0f'):>7}"
            f"{fmt(None if r['mem'] is None else r['mem'] / 2**20, '.1f'):>9}"
            f"{fmt(r['mem_ratio'], '.2f'):>9}")


def _targets(rows: list[dict], rate: float, roof: tuple[float, float] | None = None) -> None:
    by = {(r["name"], r["n"]): r for r in rows}
    top = max(r["n"] for r in rows)
    print(f"targets from the issue (reported, not asserted), at seq {top}:")
    lin = by.get(("linear", top))
    if lin:
        print(f"  chunked linear >= 15x faster than causal SDPA: {lin['speed']:.1f}x "
              f"[{'met' if lin['speed'] >= 15 else 'NOT met'}]")
        share = lin["rate"] / rate
        if roof is None:
            print(f"  chunked linear >= 60% of the matmul rate: {100 * share:.0f}% of the 2048^3 "
                  f"rate [{'met' if share >= 0.6 else 'NOT met'}]")
        else:  # the reference: bmm on the algorithm's own shapes (linear_roofline.py)
            fl, roof_rate = roof
            r_share = fl / lin["t"] / roof_rate
            print(f"  chunked linear >= 60% of the matmul rate: {100 * r_share:.0f}% of the bmm "
                  f"roofline of its shapes ({roof_rate / 1e9:.1f} GFLOP/s, "
                  f"benchmarks/linear_roofline.py) [{'met' if r_share >= 0.6 else 'NOT met'}]; "
                  f"{100 * share:.0f}% of the 2048^3 rate (the '% mm' column)")
    sw = by.get(("sliding_window", top))
    if sw:
        print(f"  sliding window (w=512) >= 3x faster than SDPA: {sw['speed']:.1f}x "
              f"[{'met' if sw['speed'] >= 3 else 'NOT met'}]")
        quarter = by.get(("sliding_window", top // 4))
        if quarter:
            ratio = sw["t"] / quarter["t"]
            print(f"  sliding window t({top})/t({top // 4}) <= 4.5: {ratio:.2f} "
                  f"[{'met' if ratio <= 4.5 else 'NOT met'}]")
    if rows[0]["mem"] is not None:
        ns = sorted({r["n"] for r in rows})
        print(f"  peak memory growth of the O(N) forms, MB at seq {', '.join(map(str, ns))} "
              "(linear in N: doubles with N):")
        for name in sorted({r["name"] for r in rows} - {"fla"}):
            if attention.get(name, **BENCH_OPTIONS.get(name, {})).quadratic:
                continue
            mems = [by[(name, n)]["mem"] / 2**20 for n in ns]
            print(f"    {name:<16}" + "  ".join(f"{m:8.1f}" for m in mems))


if __name__ == "__main__":
    raise SystemExit(main())
