"""Chunked causal linear attention against the matmul roofline of its own shapes (CPU).

Run by hand (never asserted in tests)::

    python benchmarks/linear_roofline.py                  # seq 16k, chunk 64, 1 thread, cpu clock
    python benchmarks/linear_roofline.py --chunks 32 64 128 256 --lengths 4096 16384
    python benchmarks/linear_roofline.py --quick          # seq 4k, fewer repeats, no SDPA

Setting: batch 1, 8 heads, d_head 64 (feature dim f = d = 64 for ``elu``), float32, causal,
forward under ``torch.no_grad``, one torch thread (``--threads``). Each timed function is called
once per round, round after round (interleaved, so a load change on a shared machine hits all of
them alike), after one warm-up call each; the median of ``--repeats`` rounds is reported.
The clock is the process CPU time by default (one thread: the time the process ran, not time
it spent descheduled), ``--clock wall`` for ``perf_counter``.

Definitions (printed with the results)
--------------------------------------
FLOPs of the chunked algorithm, for chunk size ``C`` and sequence ``n``, per (batch, head), 2 per
multiply-add, counted as the matmuls it must do (masked-out entries of a computed ``C x C`` block
included, feature-map cost ignored)::

    intra  q k^T  n * C * D * 2    +   (q k^T) v    n * C * D * 2
    inter  q @ S  n * D * D * 2    +   k^T v state  n * D * D * 2

with ``D`` the head dim (the implementation's extra normaliser column ``v' = [v, 1]``, ~1.5%
more, is not counted). rate = FLOPs / time of one call.

Roofline = the GFLOP/s ``torch.bmm`` reaches in the same run on exactly those four products as
batched matmuls of the same shapes, contiguous operands and preallocated outputs (its best
case), all FLOPs over the summed times:

    [N, C, D] @ [N, D, C],  [N, C, C] @ [N, C, D],  [N, C, D] @ [N, D, D],  [N, D, C] @ [N, C, D]

- ``roofline (one batch)``: one call per product with ``N = b * h * n / C`` (the whole sequence
  as one batch). This is the issue's definition and the one the target is checked against.
- ``roofline (cached)``: the same products in batches of one segment (the chunks of
  ``_SEGMENT_FLOATS`` tokens the implementation works on), operands reused, so they stay in
  cache: an upper bound for matmuls of that shape, stricter than the one-batch figure.
- ``2048^3``: a square 2048^3 matmul, the reference of ``benchmarks/attention.py`` ("% mm"),
  where the rate counted ``v'`` at ``D + 1``; printed for comparison with earlier reports.

"before" times the previous CPU code path, kept in the library for autograd
(``LinearAttention._chunked_segments``: per segment one pass of the allocating torch form),
"after" the current one (``impl(q, k, v)`` under no_grad), both in the same run; "SDPA" is the
``softmax`` implementation (torch SDPA, causal) at the same length, as ``t(SDPA) / t(linear)``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp import attention  # noqa: E402
import interp.attention.linear as linear_mod  # noqa: E402

BATCH, HEADS, D_HEAD = 1, 8, 64
TARGET = 0.6


def flops(n: int, c: int, b: int = BATCH, h: int = HEADS, d: int = D_HEAD) -> float:
    """The chunked algorithm's matmul FLOPs (module docstring), whole chunks."""
    return b * h * n * (4 * c * d + 4 * d * d)


def flops_with_normaliser(n: int, c: int, b: int = BATCH, h: int = HEADS, d: int = D_HEAD) -> float:
    """``benchmarks/attention.py``'s count: ``v' = [v, 1]`` at ``d + 1`` columns."""
    e = d + 1
    return b * h * n * (c * (2 * d + 2 * e) + 4 * d * e)


def roofline_calls(n: int, c: int, batch: int | None = None, b: int = BATCH, h: int = HEADS,
                   d: int = D_HEAD):
    """A function doing the four products of ``flops(n, c)`` with ``torch.bmm``: one call each
    with the whole batch (``batch`` None), or in batches of ``batch`` chunks, operands reused."""
    total = b * h * n // c
    nb = total if batch is None else min(batch, total)
    reps = -(-total // nb)
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    q, kt, a, v = r(nb, c, d), r(nb, d, c), r(nb, c, c), r(nb, c, d)
    k_t, s = r(nb, d, c), r(nb, d, d)
    o1, o2, o3, o4 = (torch.empty(nb, c, c), torch.empty(nb, c, d), torch.empty(nb, c, d),
                      torch.empty(nb, d, d))

    def run():
        for _ in range(reps):
            torch.bmm(q, kt, out=o1)   # q k^T
            torch.bmm(a, v, out=o2)    # (q k^T) v
            torch.bmm(q, s, out=o3)    # q @ S
            torch.bmm(k_t, v, out=o4)  # k^T v

    return run, 2 * reps * nb * (c * d * c + c * c * d + c * d * d + d * c * d)


def square_call(size: int = 2048):
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    return (lambda: torch.mm(a, b, out=out)), 2 * size**3


def interleaved(fns: dict, repeats: int, clock) -> dict:
    """Median seconds of each function over ``repeats`` rounds, one call of each per round."""
    for fn in fns.values():
        fn()
    ts = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            ts[name].append(clock() - t0)
    return {name: statistics.median(v) for name, v in ts.items()}


def segment_chunks(c: int, b: int = BATCH, h: int = HEADS, d: int = D_HEAD) -> int:
    """Chunks of all heads in one segment of the implementation (``_chunked_cpu``)."""
    seg = max(c, linear_mod._SEGMENT_FLOATS // max(1, b * h * d)) // c * c
    return b * h * seg // c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=None, help="default 16384")
    ap.add_argument("--chunks", type=int, nargs="+", default=[64], help="chunk sizes (default 64)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds (default 7, --quick 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--no-sdpa", action="store_true",
                    help="skip the SDPA timing (~4 s a call at 16k)")
    ap.add_argument("--no-before", action="store_true", help="skip timing the previous code path")
    ap.add_argument("--quick", action="store_true", help="seq 4096, 3 rounds, no SDPA")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu needs --threads 1 (process CPU time sums all threads)")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    lengths = args.lengths or ([4096] if args.quick else [16384])
    repeats = args.repeats or (3 if args.quick else 7)
    sdpa = not (args.no_sdpa or args.quick)

    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} thread(s), {args.clock} "
          f"clock, median of {repeats} interleaved rounds; batch {BATCH}, heads {HEADS}, d_head "
          f"{D_HEAD}, float32, causal, elu features, forward under no_grad")
    print("rate = chunked matmul FLOPs (intra q k^T + its product with v: 2 * n*C*D*2; inter q@S "
          "+ k^T v: 2 * n*D*D*2; per head) / time")
    print("roofline = torch.bmm GFLOP/s on those four products, same shapes, contiguous, out=: "
          "one batch [b*h*n/C, ...] (the target's reference) and cached (segment-sized batches)")
    print()
    hdr = (f"{'seq':>6}{'C':>5}{'path':>8}{'time ms':>9}{'GFLOP':>7}{'GFLOP/s':>9}"
           f"{'roof 1b':>9}{'% 1b':>6}{'roof $':>8}{'% $':>6}{'2048^3':>8}{'% sq':>6}{'x SDPA':>8}")
    results = []
    for n in lengths:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(BATCH, HEADS, n, D_HEAD, generator=g) for _ in range(3))
        soft = attention.get("softmax")
        fns, fl = {}, {}
        sq, sq_fl = square_call()
        fns["square"] = sq
        for c in args.chunks:
            impl = attention.get("linear", feature_map="elu", form="chunked", chunk_size=c)
            fns[("after", c)] = lambda impl=impl: impl(q, k, v, causal=True)
            if not args.no_before:
                fns[("before", c)] = lambda impl=impl: impl._chunked_segments(q, k, v, None, 0, n)
            fns[("roof1", c)], fl[("roof1", c)] = roofline_calls(n, c)
            fns[("roofc", c)], fl[("roofc", c)] = roofline_calls(n, c, batch=segment_chunks(c))
        with torch.no_grad():
            t = interleaved(fns, repeats, clock)
            t_sdpa = (interleaved({"sdpa": lambda: soft(q, k, v, causal=True)},
                                  max(1, min(repeats, 3)), clock)["sdpa"] if sdpa else None)
        sq_rate = sq_fl / t["square"]
        print(hdr)
        for c in args.chunks:
            n_main = n // c * c
            f_alg = flops(n_main, c)
            roof1 = fl[("roof1", c)] / t[("roof1", c)]
            roofc = fl[("roofc", c)] / t[("roofc", c)]
            for path in ("before", "after"):
                if (path, c) not in t:
                    continue
                tt = t[(path, c)]
                rate = f_alg / tt
                row = dict(n=n, c=c, path=path, t=tt, rate=rate, roof1=roof1, roofc=roofc,
                           sq=sq_rate, sq_share=flops_with_normaliser(n_main, c) / tt / sq_rate,
                           x_sdpa=None if t_sdpa is None else t_sdpa / tt)
                results.append(row)
                print(f"{n:>6}{c:>5}{path:>8}{tt * 1e3:>9.1f}{f_alg / 1e9:>7.2f}{rate / 1e9:>9.1f}"
                      f"{roof1 / 1e9:>9.1f}{100 * rate / roof1:>6.0f}{roofc / 1e9:>8.1f}"
                      f"{100 * rate / roofc:>6.0f}{sq_rate / 1e9:>8.1f}"
                      f"{100 * row['sq_share']:>6.0f}"
                      f"{'-' if t_sdpa is None else format(t_sdpa / tt, '.1f'):>8}", flush=True)
        if t_sdpa is not None:
            print(f"{'':>6} SDPA (softmax, causal): {t_sdpa * 1e3:.0f} ms")
        print()
    print("columns: roof 1b / % 1b = one-batch roofline and rate / it; roof $ / % $ = cached "
          "roofline and rate / it; 2048^3 / % sq = square matmul rate and "
          "benchmarks/attention.py's '% mm' (its FLOP count, v' at D + 1); "
          "x SDPA = t(SDPA) / t(path)")
    top = max(lengths)
    for r in results:
        if r["n"] == top and r["path"] == "after":
            share = r["rate"] / r["roof1"]
            print(f"target at seq {top}, C={r['c']}: chunked >= {100 * TARGET:.0f}% of the "
                  f"one-batch roofline: {100 * share:.0f}% "
                  f"[{'met' if share >= TARGET else 'NOT met'}] "
                  f"(cached roofline: {100 * r['rate'] / r['roofc']:.0f}%, 2048^3: "
                  f"{100 * r['sq_share']:.0f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
