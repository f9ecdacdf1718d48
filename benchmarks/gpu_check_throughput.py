"""Stage 3 of ``benchmarks/gpu_check.sh``: probe and patching throughput on the toy and the
tiny families, CUDA against CPU, and the CUDA results against the CPU ones.

Models that need nothing carried: a randomly initialised toy (``interp.models.toy.build_toy``,
fixed seed, saved with ``save_toy``) and a tiny random checkpoint of every causal family, built at run time from
transformers' own config classes and saved with ``save_pretrained`` into a temporary folder
(``tests/families/tiny.py``), then loaded with ``interp.load_model`` like any checkpoint.

For each model, on the CPU and then on CUDA (same weights, same tokens):

- probes: ``induction_scores`` + ``sink_scores`` over every head of ``--batch`` sequences of
  ``[BOS] A A`` (``--seg-len`` random tokens, repeated), in tokens/s;
- patching: ``patch_heads`` (every head's ``z``, denoising) on ``induction_task`` with
  ``--patch-batch`` pairs, in patched cells (heads) per second;

each the median of ``--repeats`` timed calls after a warm-up (CUDA synchronised). The CUDA
scores and patching metrics must equal the CPU ones (induction and sink columns within 1e-3,
metrics within 1e-3 of their scale): a difference fails the stage, with the model named.

Without CUDA: the same code runs once on the CPU for the toy and ``--smoke-families``
(default llama) at a tiny size, then the stage prints its skip line.

    python benchmarks/gpu_check_throughput.py [--families llama gpt2 ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import gpu_check_common as common
import torch

#: score columns compared between devices
SCORE_COLS = ["induction", "prefix_matching", "previous_token", "duplicate_token", "copying"]
#: CUDA-vs-CPU tolerance: scores (probabilities) absolute, metrics relative to their scale
TOL = 1e-3


def timed(fn, repeats: int, cuda: bool) -> tuple[float, object]:
    """(median seconds of ``repeats`` calls after one warm-up, the last call's result);
    ``repeats=0``: one call, timed, no warm-up (the smoke run)."""
    out = None if repeats else fn()
    ts = []
    for _ in range(max(1, repeats)):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def loader(name: str, tmp: Path):
    """``load(device) -> model`` for ``"toy"`` or a tiny family, saved once into ``tmp`` and
    loaded on each device from there (the same weights: a model initialised on CUDA would draw
    from CUDA's generator)."""
    import interp

    if name == "toy":
        from interp.models.toy import ToyConfig, build_toy, save_toy

        folder = tmp / "toy"
        save_toy(build_toy(ToyConfig(n_layers=2, d_model=128, n_heads=8, d_head=16, d_vocab=512,
                                     n_ctx=256, attn_only=False, seed=0)), folder)
        return lambda device: interp.load_model(f"toy:{folder}", device=device)
    from tests.families.tiny import build_family

    folder = build_family(name, tmp / name)
    return lambda device: interp.load_model(str(folder), device=device)


def measure(model, device: str, sizes: dict, repeats: int) -> dict:
    """Throughput and results of the probes and of head patching on ``model``."""
    from interp.circuits import induction_task, patch_heads
    from interp.probes.induction import induction_scores, repeated_random_tokens
    from interp.probes.sink import sink_scores

    cuda = device == "cuda"
    seg = sizes["seg_len"]
    tokens = repeated_random_tokens(model, batch=sizes["batch"], seg_len=seg, seed=0)

    def probes():
        return induction_scores(model, tokens, seg_len=seg), sink_scores(model, tokens)

    t_probe, (ind, sink) = timed(probes, repeats, cuda)
    task = induction_task(model, batch=sizes["patch_batch"], seg_len=sizes["patch_seg_len"],
                          seed=0)
    t_patch, patched = timed(lambda: patch_heads(model, task, progress=False), repeats, cuda)
    return dict(probe_tok_s=tokens.numel() / t_probe, patch_cells_s=len(patched) / t_patch,
                tokens=tuple(tokens.shape), cells=len(patched), induction=ind, sink=sink,
                patched=patched)


def differences(cpu: dict, gpu: dict) -> tuple[float, float]:
    """(max |score difference|, max |metric difference| / metric scale) CUDA vs CPU."""
    key = ["layer", "head"]
    a, b = (r["induction"].sort_values(key).reset_index(drop=True) for r in (cpu, gpu))
    score = float((a[SCORE_COLS] - b[SCORE_COLS]).abs().max().max())
    sa, sb = cpu["sink"]["alpha"].to_numpy(), gpu["sink"]["alpha"].to_numpy()
    score = max(score, float(abs(sa - sb).max()))
    pa, pb = (r["patched"].sort_values(key).reset_index(drop=True) for r in (cpu, gpu))
    scale = max(1.0, float(pa["metric"].abs().max()))
    metric = float((pa["metric"] - pb["metric"]).abs().max()) / scale
    return score, metric


HEADER = (f"{'model':<10}{'heads':>7}{'tokens':>10}{'probe tok/s cpu':>17}{'cuda':>12}"
          f"{'x':>7}{'patch cells/s cpu':>19}{'cuda':>10}{'x':>7}{'load s cpu/cuda':>17}"
          f"{'|d score|':>11}{'|d metric|':>11}")


def fmt(name, heads, cpu, gpu, loads, diffs) -> str:
    g = gpu or {}
    ratio = lambda k: "-" if not gpu else f"{g[k] / cpu[k]:.1f}"  # noqa: E731
    num = lambda r, k, w: f"{r[k]:>{w},.0f}" if r else f"{'-':>{w}}"  # noqa: E731
    return (f"{name:<10}{heads:>7}{'x'.join(map(str, cpu['tokens'])):>10}"
            f"{num(cpu, 'probe_tok_s', 17)}{num(gpu, 'probe_tok_s', 12)}{ratio('probe_tok_s'):>7}"
            f"{num(cpu, 'patch_cells_s', 19)}{num(gpu, 'patch_cells_s', 10)}"
            f"{ratio('patch_cells_s'):>7}{'/'.join(f'{t:.1f}' for t in loads):>17}"
            + ("" if diffs is None else f"{diffs[0]:>11.1e}{diffs[1]:>11.1e}"))


def run(names, sizes, repeats, devices, emit) -> list[str]:
    """Measure every model on every device; print a row each; return the failures."""
    failures = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_models_") as tmp:
        for name in names:
            try:
                load = loader(name, Path(tmp))
                res, loads = {}, []
                for device in devices:
                    t0 = time.perf_counter()
                    model = load(device)
                    loads.append(time.perf_counter() - t0)
                    res[device] = measure(model, device, sizes, repeats)
                    del model
                diffs = differences(res["cpu"], res["cuda"]) if "cuda" in res else None
                heads = len(res["cpu"]["induction"])
                print(fmt(name, heads, res["cpu"], res.get("cuda"), loads, diffs), flush=True)
                emit(dict(model=name, heads=heads, tokens="x".join(map(str, res["cpu"]["tokens"])),
                          **{f"{k}_{d}": res[d][k] for d in res
                             for k in ("probe_tok_s", "patch_cells_s")},
                          max_score_diff=None if diffs is None else diffs[0],
                          max_metric_diff=None if diffs is None else diffs[1]))
                if diffs is not None and max(diffs) > TOL:
                    failures.append(f"{name}: CUDA differs from CPU (score {diffs[0]:.1e}, "
                                    f"metric {diffs[1]:.1e} > {TOL})")
            except Exception as exc:  # noqa: BLE001 -- reported; the next model still runs
                failures.append(f"{name}: {type(exc).__name__}: {exc}"[:400])
                print(f"{name:<10} ERROR {failures[-1]}", flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return failures


def main(argv: list[str] | None = None) -> int:
    from tests.families.tiny import CAUSAL

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(CAUSAL), choices=list(CAUSAL))
    ap.add_argument("--no-toy", action="store_true")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seg-len", type=int, default=63, help="tiny families: n_ctx 128 = 1 + 2 x 63 + 1")
    ap.add_argument("--patch-batch", type=int, default=16)
    ap.add_argument("--patch-seg-len", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke-families", nargs="*", default=["llama"], choices=list(CAUSAL),
                    help="without CUDA: the families run once on CPU before the skip line")
    ap.add_argument("--out", help="folder for throughput.csv")
    args = ap.parse_args(argv)
    cuda, about = common.cuda_status()
    names = ([] if args.no_toy else ["toy"]) + (args.families if cuda else args.smoke_families)
    sizes = dict(batch=args.batch, seg_len=args.seg_len, patch_batch=args.patch_batch,
                 patch_seg_len=args.patch_seg_len)
    repeats = args.repeats
    if not cuda:     # the code path once, tiny: no throughput to speak of
        sizes, repeats = dict(batch=2, seg_len=8, patch_batch=2, patch_seg_len=6), 0
        print(f"stage 3: no CUDA: a CPU smoke run of {', '.join(names)} at batch 2, seg_len 8")
    else:
        print(f"stage 3: {about}; CPU: {torch.get_num_threads()} threads; sizes {sizes}; "
              f"median of {repeats} after a warm-up", flush=True)
    devices = ["cpu", "cuda"] if cuda else ["cpu"]
    out = common.out_dir(args.out)
    fh = None if out is None else open(out / "throughput.csv", "w", newline="")
    fields = ["model", "heads", "tokens", "probe_tok_s_cpu", "patch_cells_s_cpu",
              "probe_tok_s_cuda", "patch_cells_s_cuda", "max_score_diff", "max_metric_diff"]
    writer = None if fh is None else csv.DictWriter(fh, fieldnames=fields)
    if writer is not None:
        writer.writeheader()

    def emit(row):
        if writer is not None:
            writer.writerow(row)
            fh.flush()

    try:
        failures = run(names, sizes, repeats, devices, emit)
    finally:
        if fh is not None:
            fh.close()
    for f in failures:
        print(f"stage 3: FAILED {f}", flush=True)
    if failures:
        return 1
    return 0 if cuda else common.skip(3, about)


if __name__ == "__main__":
    raise SystemExit(main())
