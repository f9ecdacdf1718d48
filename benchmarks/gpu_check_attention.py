"""Stage 2 of ``benchmarks/gpu_check.sh``: every registered attention implementation against
SDPA (and against fla where it applies) at 4k / 16k / 64k tokens, in bfloat16 and float32.

One table row per (length, dtype, implementation), printed as soon as it is measured (a stage
cut off by its time limit keeps what it printed): the path it took on CUDA (flex_attention,
fla, SDPA or torch), the median time of ``--repeats`` causal forwards under ``no_grad`` (CUDA
events, after one warm-up call that also compiles), ``x SDPA`` = t(softmax) / t(impl), the
FLOP rate where ``benchmarks/attention.py`` can count it, and the extra CUDA memory at the
peak of one call (``torch.cuda.max_memory_allocated`` minus what existed before; inputs
excluded). The ``fla`` row times fla's own ``chunk_linear_attn`` (normalised, elu + 1
features, same dtype) and the ``linear`` row's ``x fla`` is t(fla) / t(linear). Inputs:
batch 1, 8 heads, d_head 64 (``benchmarks/attention.py``'s shape and options), random, seeded.
Lengths run outer and dtypes inner, so a cut-off loses the longest length first.

Without CUDA: builds every implementation, runs each once on CPU at 128 tokens against its
naive reference (a smoke check of the same code), then prints the skip line.

    python benchmarks/gpu_check_attention.py [--lengths 4096 16384 65536]
        [--dtypes bfloat16 float32] [--repeats 3] [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import time

import gpu_check_common as common
import torch

from interp import attention
from interp.attention import gpu


def load_bench():
    """``benchmarks/attention.py`` as a module (its options, FLOP count and CUDA timers)."""
    path = common.ROOT / "benchmarks" / "attention.py"
    spec = importlib.util.spec_from_file_location("interp_bench_attention", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_smoke(bench, names: list[str]) -> None:
    """Each implementation once on CPU (128 tokens, float32) against its naive reference."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 128, bench.D_HEAD, generator=g) for _ in range(3))
    for name in names:
        impl = bench.build(name)
        with torch.no_grad():
            err = (impl(q, k, v, causal=True) - impl.naive(q, k, v, causal=True)).abs().max()
        if not err < 1e-4:
            raise AssertionError(f"{name}: CPU forward differs from its naive reference by {err}")
        print(f"  cpu smoke {name:<15} max |fast - naive| {float(err):.1e}", flush=True)


def path_of(bench, impl, dtype) -> str:
    if impl.name == "softmax":
        return "sdpa"
    if bench.uses_flex(impl):
        return "flex"
    probe = torch.empty(1, 1, 1, 1, 1, device="cuda", dtype=dtype)
    if impl.name == "linear" and getattr(impl, "form", None) == "chunked" and gpu.use_fla(probe, probe):
        return "fla"
    return "torch"


def fla_callable(q, k, v):
    """fla's own normalised chunk_linear_attn on elu + 1 features of ``q, k`` (their dtype)."""
    phi = attention.get("linear", feature_map="elu").phi.to(q.device)
    n, d = q.shape[2], q.shape[3]
    kw = dict(scale=1.0 / d**0.5, positions=None, length=n)
    with torch.no_grad():
        fq = phi(q, is_query=True, **kw).transpose(1, 2).contiguous()  # [b, n, h, f]
        fk = phi(k, is_query=False, **kw).transpose(1, 2).contiguous()
        vv = v.transpose(1, 2).contiguous()
    return lambda: gpu.fla_linear_attn()(fq, fk, vv, scale=1.0, normalize=True)


HEADER = (f"{'implementation':<16}{'path':<7}{'seq':>7} {'dtype':<9}{'ms':>9}{'x SDPA':>8}"
          f"{'x fla':>7}{'TFLOP/s':>9}{'peak MiB':>10}{'mem/SDPA':>9}")


def fmt_row(r: dict) -> str:
    f = lambda x, spec: "-" if x is None else format(x, spec)  # noqa: E731
    return (f"{r['impl']:<16}{r['path']:<7}{r['seq']:>7} {r['dtype']:<9}{f(r['ms'], '.2f'):>9}"
            f"{f(r['x_sdpa'], '.2f'):>8}{f(r['x_fla'], '.2f'):>7}{f(r['tflops'], '.1f'):>9}"
            f"{f(r['peak_mib'], '.1f'):>10}{f(r['mem_ratio'], '.2f'):>9}")


def measure(bench, fn, repeats: int) -> tuple[float, float]:
    """(median ms, extra peak MiB) of ``fn`` on CUDA, under no_grad."""
    with torch.no_grad():
        t = bench._median_time(fn, repeats)
    return t * 1e3, bench.cuda_peak(fn) / 2**20


def run(bench, names, lengths, dtypes, repeats, emit) -> int:
    """Measure and print every row (``emit(row)`` each too); returns the failed count."""
    failures = 0
    print(HEADER, flush=True)
    for n in lengths:
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            bench.DEVICE, bench.DTYPE = torch.device("cuda"), dtype
            g = torch.Generator(device="cuda").manual_seed(n)
            shape = (bench.BATCH, bench.HEADS, n, bench.D_HEAD)
            q, k, v = (torch.randn(shape, generator=g, device="cuda", dtype=dtype)
                       for _ in range(3))
            rows = {}
            for name in names:
                impl = bench.build(name).to("cuda")
                row = dict(impl=name, path=path_of(bench, impl, dtype), seq=n, dtype=dtype_name,
                           ms=None, x_sdpa=None, x_fla=None, tflops=None, peak_mib=None,
                           mem_ratio=None, error="")
                try:
                    row["ms"], row["peak_mib"] = measure(
                        bench, lambda impl=impl: impl(q, k, v, causal=True), repeats)
                    flops = bench.count_flops(impl, n)
                    row["tflops"] = None if flops is None else flops / row["ms"] / 1e9
                except Exception as exc:  # noqa: BLE001 -- reported, the next row still runs
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                    failures += 1
                rows[name] = row
            if gpu.fla_linear_attn() is not None:
                row = dict(impl="fla", path="fla", seq=n, dtype=dtype_name, ms=None, x_sdpa=None,
                           x_fla=None, tflops=None, peak_mib=None, mem_ratio=None, error="")
                try:
                    row["ms"], row["peak_mib"] = measure(bench, fla_callable(q, k, v), repeats)
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                    failures += 1
                rows["fla"] = row
            base = rows.get(bench.BASELINE, {})
            for name, row in rows.items():
                if row["ms"] and base.get("ms"):
                    row["x_sdpa"] = base["ms"] / row["ms"]
                if row["peak_mib"] is not None and base.get("peak_mib"):
                    row["mem_ratio"] = row["peak_mib"] / base["peak_mib"]
            if "fla" in rows and rows["fla"]["ms"] and rows.get("linear", {}).get("ms"):
                rows["linear"]["x_fla"] = rows["fla"]["ms"] / rows["linear"]["ms"]
            for row in rows.values():
                print(fmt_row(row) + (f"  ERROR {row['error']}" if row["error"] else ""),
                      flush=True)
                emit(row)
            del q, k, v
            torch.cuda.empty_cache()
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"],
                    choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="folder for attention.csv")
    args = ap.parse_args(argv)
    bench = load_bench()
    names = [bench.BASELINE] + [n for n in attention.names() if n != bench.BASELINE]
    for name in names:
        print(f"  {name}: {bench.build(name).describe()}")
    cuda, about = common.cuda_status()
    if not cuda:
        cpu_smoke(bench, names)
        return common.skip(2, about)
    print(f"stage 2: {about}; batch {bench.BATCH}, heads {bench.HEADS}, d_head {bench.D_HEAD}, "
          f"causal, forward under no_grad; fla: "
          f"{'yes' if gpu.fla_linear_attn() else 'no (' + str(gpu.fla_unavailable_reason()) + ')'}",
          flush=True)
    out = common.out_dir(args.out)
    t0 = time.perf_counter()
    if out is None:
        failures = run(bench, names, args.lengths, args.dtypes, args.repeats, lambda row: None)
    else:
        with open(out / "attention.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["impl", "path", "seq", "dtype", "ms",
                                                    "x_sdpa", "x_fla", "tflops", "peak_mib",
                                                    "mem_ratio", "error"])
            writer.writeheader()

            def emit(row):
                writer.writerow(row)
                fh.flush()

            failures = run(bench, names, args.lengths, args.dtypes, args.repeats, emit)
    print(f"stage 2: {failures} failed measurements, {time.perf_counter() - t0:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
