"""Per-token decode cost of StreamingLLM (sink + window KV cache) vs sliding window with
recomputation, and how it grows with the stream (it should not), on smollm2-135m, CPU.

Run by hand (never asserted in tests):

    INTERP_CACHE=... python benchmarks/streaming.py [--window 1024] [--sinks 4]
        [--steps 32] [--threads 1] [--dtype float32]

All ratios printed come from this one run. Sink + window: median time of ``--steps`` decode
steps, measured at several stream lengths (first right after the cache fills, then after
more tokens were streamed through). Recompute: median time of a fresh forward of the
``sinks + window`` tokens before the predicted one (what sliding window with re-computation
does for every token). Dense: a decode step with a growing, never-evicting cache at the same
stream lengths (cost grows with the length).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--extra", type=int, default=512,
                   help="tokens streamed between the two sink measurements")
    p.add_argument("--recompute", type=int, default=3, help="recompute forwards timed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from interp.data import load_text
    from interp.streaming import StreamingLM, stream_tokens

    lm = StreamingLM.from_name("smollm2-135m", dtype=args.dtype)
    cap = args.sinks + args.window
    need = 2 * cap + args.extra + 4 * args.steps + 8
    toks = stream_tokens(lm.tokenizer, load_text("alice"), need)
    print(f"smollm2-135m {args.dtype}, {torch.get_num_threads()} thread(s); cache "
          f"{args.sinks} sinks + {args.window} window = {cap} tokens")

    # sink + window: fill, then time decode steps at two stream lengths
    cache = lm.new_cache(cap, args.sinks)
    lm.step(toks[None, :cap], cache)
    pos = cap

    def sink_step():
        nonlocal pos
        lm.step(toks[None, pos:pos + 1], cache)
        pos += 1

    sink_ms = [(pos, _median_ms(sink_step, args.steps))]
    for t in range(args.extra):                       # stream more tokens through
        sink_step()
    sink_ms.append((pos, _median_ms(sink_step, args.steps)))

    # dense decode with a growing cache, at the same stream lengths
    dense_ms = []
    dcache = lm.new_cache(need, 0)
    lm.step(toks[None, :cap], dcache)
    for length in (cap, sink_ms[1][0]):
        while dcache.n_seen < length:
            n = min(512, length - dcache.n_seen)
            lm.step(toks[None, dcache.n_seen:dcache.n_seen + n], dcache)

        def dense_step():
            lm.step(toks[None, length:length + 1], dcache)
            dcache.truncate(length)

        dense_ms.append((length, _median_ms(dense_step, args.steps)))

    # sliding window with re-computation: one fresh forward of `cap` tokens per token
    ctx = toks[None, pos - cap:pos]
    rec_ms = _median_ms(lambda: lm.forward(ctx), args.recompute)

    print(f"{'method':<28}{'stream length':>14}{'ms/token':>12}")
    for length, ms in sink_ms:
        print(f"{'sink + window (ours)':<28}{length:>14}{ms:>12.1f}")
    for length, ms in dense_ms:
        print(f"{'dense, growing cache':<28}{length:>14}{ms:>12.1f}")
    print(f"{'window + recomputation':<28}{'any':>14}{rec_ms:>12.1f}")
    flat = sink_ms[1][1] / sink_ms[0][1]
    print(f"sink+window cost at {sink_ms[1][0]} vs {sink_ms[0][0]} tokens: {flat:.2f}x (flat = 1)")
    print(f"speed-up of sink+window over recomputation: {rec_ms / sink_ms[1][1]:.1f}x "
          f"(StreamingLLM reports up to 22.2x)")


if __name__ == "__main__":
    main()
