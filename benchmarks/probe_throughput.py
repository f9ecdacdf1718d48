"""Throughput of the induction and sink probes over all heads of a pretrained model, in tokens/s.

Both probes run one batched forward each (all layers, all heads) on repeated random tokens
(a segment of ``--seg-len`` random ids, repeated twice, after BOS) and reduce each layer's
pattern inside its hook: ``interp.probes.induction.induction_scores`` (induction, prefix
matching, previous and duplicate token, copying) and ``interp.probes.sink.sink_scores``
(alpha and Sink^eps of the first 4 keys). Reported: the median of ``--repeats`` timed calls
after one warm-up, as ``batch * seq / seconds`` (CUDA: synchronised before the clock stops).

    python benchmarks/probe_throughput.py [--device cpu] [--model smollm2-135m] [--batch 16]
        [--seg-len 256] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeats: int, cuda: bool) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    ts = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv: list[str] | None = None) -> int:
    import interp
    from interp.devices import resolve_device
    from interp.probes.induction import induction_scores, repeated_random_tokens
    from interp.probes.sink import sink_scores

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seg-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"

    t0 = time.perf_counter()
    model = interp.load_model(args.model, device=device)
    load_s = time.perf_counter() - t0
    tokens = repeated_random_tokens(model, batch=args.batch, seg_len=args.seg_len)  # on device
    b, n = tokens.shape
    heads = model.cfg.n_layers * model.cfg.n_heads
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads"
    print(f"model {args.model} ({model.cfg.n_layers} layers x {model.cfg.n_heads} heads = "
          f"{heads} heads), loaded in {load_s:.1f} s; {device} ({where}); tokens {b} x {n}")

    runs = {
        "induction_scores": lambda: induction_scores(model, tokens, seg_len=args.seg_len),
        "sink_scores": lambda: sink_scores(model, tokens),
    }
    total = 0.0
    for name, fn in runs.items():
        sec = timed(fn, args.repeats, cuda)
        total += sec
        print(f"{name:<18} {sec * 1e3:9.1f} ms  {b * n / sec:12,.0f} tokens/s  (all {heads} heads)")
    print(f"{'both probes':<18} {total * 1e3:9.1f} ms  {b * n / total:12,.0f} tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
