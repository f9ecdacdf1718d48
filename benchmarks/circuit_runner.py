"""CircuitRunner.metric: the batched sender sums vs the same rule written edge by edge, on the
masks of a real faithfulness curve, measured in one run.

Single-threaded (``torch.set_num_threads(1)``; run with ``OMP_NUM_THREADS=1``). Times are
CPU seconds (``time.process_time``) of one ``runner.metric(mask)`` call each, the median of
``--repeats``; nothing is asserted.

The masks: the top-``n`` edges by |EAP score| (``edge_attribution(method="eap")``) for ``n``
on the log-spaced counts of ``faithfulness_curve`` (0 .. every edge), on the IOI task
(``ioi_task(model, n=--batch)``) of ``--model`` (default smollm2-135m). For each mask: the
metric with the runner as it is (``summed``: one matrix product per receiver group over the
senders it reads) and with ``summed`` replaced by its naive reference ``summed_per_edge``
(the rule as :mod:`interp.circuits.runner` states it: each receiver's fed senders in the
mask, added one at a time), their ratio and the absolute difference of the two metrics. A
plain forward of the corrupted prompts is timed for scale.

Printed lines: one header, one line per mask ``n_edges  per-edge s  batched s  ratio
|diff|``, and a total line (the whole curve: per-edge / batched).

    OMP_NUM_THREADS=1 python benchmarks/circuit_runner.py [--model smollm2-135m] [--batch 16]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median CPU seconds over ``repeats`` calls, the last result)."""
    times, value = [], None
    for _ in range(repeats):
        t = time.process_time()
        value = fn()
        times.append(time.process_time() - t)
    return statistics.median(times), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--points", type=int, default=8, help="masks on the curve")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)

    import interp
    from interp.circuits import edge_attribution
    from interp.circuits import runner as R
    from interp.circuits.evaluation import EdgeRanking, log_counts
    from interp.circuits.standard_tasks import ioi_task

    model = interp.load_model(args.model)
    task = ioi_task(model, n=args.batch, seed=0)
    runner = R.CircuitRunner(model, task)
    scores = edge_attribution(model, task, method="eap")
    ranking = EdgeRanking("eap", scores.detach().cpu().double(), runner.valid.cpu())
    with torch.no_grad():
        fwd, _ = timed(lambda: model(task.corrupted), args.repeats)
    n_edges = int(runner.valid.sum())
    print(f"{args.model} IOI batch {args.batch} x {task.corrupted.shape[1]} tokens, "
          f"{n_edges} edges, 1 thread, CPU s (median of {args.repeats}); plain forward "
          f"{fwd:.2f} s")
    print(f"{'n_edges':>8} {'per-edge':>9} {'batched':>8} {'ratio':>6} {'|diff|':>9}")
    total_ref = total_new = 0.0
    for n in log_counts(n_edges, args.points):
        mask = ranking.top(n).to(runner.valid.device)
        new_t, new_v = timed(lambda: runner.metric(mask), args.repeats)
        saved = R._CircuitForward.summed
        R._CircuitForward.summed = R._CircuitForward.summed_per_edge
        try:
            ref_t, ref_v = timed(lambda: runner.metric(mask), args.repeats)
        finally:
            R._CircuitForward.summed = saved
        total_ref, total_new = total_ref + ref_t, total_new + new_t
        print(f"{n:>8} {ref_t:>9.2f} {new_t:>8.2f} {ref_t / new_t:>6.2f} "
              f"{abs(new_v - ref_v):>9.2e}")
    print(f"whole curve: per-edge {total_ref:.1f} s, batched {total_new:.1f} s, "
          f"{total_ref / total_new:.2f}x")


if __name__ == "__main__":
    main()
