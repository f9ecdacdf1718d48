"""Every instrument once on one model (default the largest registered, Qwen2.5-Coder-1.5B),
each with a check that would fail on a wrong number, its time and the process's peak RSS.

    OMP_NUM_THREADS=1 python benchmarks/every_instrument.py [--model qwen2.5-coder-1.5b]
        [--dtype float32] [--long 32768] [--skip streaming long]

One line per instrument: ``name  seconds  peak-RSS-GB  check``. Sizes are small (this is proof
that each runs at this scale within this machine's memory, not a benchmark of each; see
benchmarks/scale.py for ratios). Checks:

- forward: logits finite; the model's own next-token prediction on a code prompt.
- induction probe: the top induction head's score (> 0.5 expected on a real LM).
- sink probe (blockwise, 512 tokens): mean attention to token 0 over all heads.
- softmax swap: max |logit difference| / logit scale (exact: < 1e-5), restored bitwise.
- linear swap: the logits change (it is another attention).
- head patching (z, all positions, induction task; the layers of the 3 top induction heads):
  the top head's normalised effect.
- path patching (the 2 top previous-token heads -> the 2 top later induction heads, q): the
  range of the normalised effects.
- EAP edges and EAP-IG nodes (2 steps): the score of the strongest edge/head, and EAP-IG's
  completeness (sum of node scores vs metric(clean) - metric(corrupted) on the input path).
- DLA: the rows sum to the model's own logit difference (docstring task row).
- logit lens: top token of the last layer equals the model's argmax.
- generation (interp.generate, 2 prompts x 16 tokens, KV cache): equals full-forward greedy
  decoding (``use_cache=False``).
- streaming (StreamingLM, sink 4 + window 124 over 320 tokens; the bridge is freed first, the
  HF copy loaded alone): perplexities of the modes.
- long probe (``--long`` tokens, blockwise sink probe of layer 0 only, in a fresh process):
  seconds and that process's peak RSS (the forward stops after the probed layer; memory is
  what a full-context probe needs per layer, since layers run one after another).
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import time

import torch


def rss_gb() -> float:
    """This process's peak RSS in GB (VmHWM: unlike ``ru_maxrss``, not carried over from the
    parent through fork + exec)."""
    try:
        for row in open("/proc/self/status"):
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--long", type=int, default=32768)
    p.add_argument("--skip", nargs="*", default=[], choices=["streaming", "long", "path"])
    p.add_argument("--long-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.long_only:
        return long_probe(args)
    torch.set_num_threads(1)

    import interp
    from interp.attribution import direct_logit_attribution, top_tokens
    from interp.circuits import docstring_task, induction_task
    from interp.circuits.activation import patch_heads
    from interp.circuits.attribution import edge_attribution, node_attribution
    from interp.circuits.metrics import baseline
    from interp.circuits.path import path_patch
    from interp.probes.induction import induction_scores, top_heads
    from interp.probes.sink import sink_scores

    def line(name, t0, check):
        print(f"{name:<22} {time.perf_counter() - t0:8.1f} s  {rss_gb():6.2f} GB  {check}",
              flush=True)

    t0 = time.perf_counter()
    model = interp.load_model(args.model, dtype=args.dtype)
    cfg = model.cfg
    line("load (cached)", t0, f"{cfg.n_layers} layers x {cfg.n_heads} heads, d_model "
         f"{cfg.d_model}, {sum(q.numel() for q in model.parameters()) / 1e9:.2f}B parameters")
    tok = model.tokenizer
    code = ("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
            "    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n -")
    ids = torch.tensor([tok(code).input_ids])

    t0 = time.perf_counter()
    with torch.no_grad():
        logits = model(ids)
    line("forward", t0, f"{ids.shape[1]} tokens, finite {bool(torch.isfinite(logits).all())}, "
         f"next {tok.decode(logits[0, -1].argmax())!r}")

    t0 = time.perf_counter()
    ind = induction_scores(model, batch=2, seg_len=30)
    (l, h), = top_heads(ind, "induction", 1)
    line("induction probe", t0, f"top L{l}H{h} {ind.set_index(['layer', 'head']).loc[(l, h), 'induction']:.3f}")

    t0 = time.perf_counter()
    text = ids.repeat(1, 512 // ids.shape[1] + 1)[:, :512]
    sink = sink_scores(model, text, positions=[0], method="blockwise")
    top = sink.sort_values("alpha", ascending=False).iloc[0]
    line("sink probe (512)", t0, f"mean alpha(0) {sink.alpha.mean():.3f}, top "
         f"L{int(top.layer)}H{int(top['head'])} {top.alpha:.3f}")

    t0 = time.perf_counter()
    with interp.swap_attention(model, "softmax"), torch.no_grad():
        swapped = model(ids)
    with torch.no_grad():
        restored = torch.equal(model(ids), logits)
    err = float((swapped - logits).abs().max() / logits.abs().max())
    line("softmax swap", t0, f"max diff / scale {err:.1e}, restored bitwise {restored}")

    t0 = time.perf_counter()
    with interp.swap_attention(model, "linear", feature_map="elu"), torch.no_grad():
        lin = model(ids)
    line("linear swap", t0, f"logits moved by {float((lin - logits).abs().max()):.2f}")

    task = induction_task(model, batch=2, seg_len=10)
    ind_layers = sorted({int(x) for x in ind.sort_values("induction").layer.tail(3)})
    t0 = time.perf_counter()
    heads = patch_heads(model, task, layers=ind_layers, progress=False)
    best = heads.sort_values("normalised", ascending=False).iloc[0]
    line("head patching", t0, f"{len(heads)} heads of layers {ind_layers} (the top induction "
         f"heads' layers), top L{int(best.layer)}H{int(best['head'])} normalised "
         f"{best.normalised:.2f}")

    if "path" not in args.skip:
        prev = ind.sort_values("previous_token", ascending=False)
        prev = prev[prev.layer < ind_layers[-1]].head(2)
        senders = [(int(r.layer), int(r.head)) for r in prev.itertuples()]
        first = min(sl for sl, _ in senders)
        top = ind[ind.layer > first].sort_values("induction", ascending=False).head(2)
        receivers = [(int(r.layer), int(r.head)) for r in top.itertuples()]
        t0 = time.perf_counter()
        pp = path_patch(model, task, senders, receivers, inputs=("q",))
        line("path patching", t0, f"{len(pp)} paths, normalised {pp.normalised.min():.2f} .. "
             f"{pp.normalised.max():.2f} ({pp.attrs.get('method')})")

    t0 = time.perf_counter()
    edges = edge_attribution(model, task)
    line("EAP edges", t0, f"{edges.numel()} entries, strongest |score| {float(edges.abs().max()):.3f}")

    t0 = time.perf_counter()
    nodes = node_attribution(model, task, method="eap-ig", steps=2)
    base = baseline(model, task)
    total = base["clean"] - base["corrupted"]
    line("EAP-IG nodes (2)", t0, f"sum of head scores {nodes.score.sum():.3f} vs metric "
         f"difference {total:.3f} (heads only; embeddings and MLPs carry the rest)")

    doc = docstring_task(model, n=2, seed=0)
    t0 = time.perf_counter()
    dla = direct_logit_attribution(model, doc.clean[:1], doc.info["answer"][:1],
                                   doc.info["others"][0][:1])
    with torch.no_grad():
        row = model(doc.clean[:1])[0, -1]
    want = float(row[doc.info["answer"][0]] - row[doc.info["others"][0][0]])
    line("DLA (docstring row)", t0, f"rows sum {dla.value.sum():.4f}, model's logit "
         f"difference {want:.4f}")

    t0 = time.perf_counter()
    lens = top_tokens(model, ids, k=1, positions=[-1])
    last = lens[lens.layer == lens.layer.max()].token_id.iloc[0]
    line("logit lens", t0, f"last layer top token == argmax: {int(last) == int(logits[0, -1].argmax())}")

    prompts = ["def quicksort(arr):", "# Return the sum of a list\ndef total(xs):"]
    t0 = time.perf_counter()
    cached = interp.generate(model, prompts, 16, stop_ids=())
    t_cached = time.perf_counter() - t0
    full = interp.generate(model, prompts, 16, stop_ids=(), use_cache=False)
    line("generation", t0, f"cached {t_cached:.1f} s, equals full forwards "
         f"{cached.new_ids == full.new_ids}: {cached.texts[0][:40]!r}")

    del model, logits, swapped, lin
    gc.collect()
    if "streaming" not in args.skip:
        from interp.streaming import StreamingLM, evaluate_stream

        t0 = time.perf_counter()
        lm = StreamingLM.from_name(args.model, dtype=args.dtype)
        stream = torch.tensor(tok(code * 20).input_ids[:320])
        res = evaluate_stream(lm, stream, window=124, sinks=4, modes=("dense", "sink", "window"),
                              progress=False)
        s = res.summary().set_index("mode").ppl
        line("streaming (320)", t0, "ppl " + ", ".join(f"{m} {v:.2f}" for m, v in s.items()))
        del lm
        gc.collect()

    print(f"peak RSS {rss_gb():.2f} GB", file=sys.stderr, flush=True)
    if "long" not in args.skip:                 # its own process: its own peak RSS
        import subprocess

        subprocess.run([sys.executable, __file__, "--model", args.model, "--dtype", args.dtype,
                        "--long", str(args.long), "--long-only"], check=True)


def long_probe(args) -> None:
    """The blockwise sink probe of layer 0 over ``--long`` random tokens, in a fresh process."""
    import interp
    from interp.probes.sink import sink_scores

    torch.set_num_threads(1)
    model = interp.load_model(args.model, dtype=args.dtype)
    n = min(args.long, model.cfg.n_ctx)
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(100, 20000, (1, n), generator=g)
    before = rss_gb()
    t0 = time.perf_counter()
    long = sink_scores(model, toks, positions=[0, 1], layers=[0], method="blockwise")
    print(f"{f'sink probe ({n}, L0)':<22} {time.perf_counter() - t0:8.1f} s  {rss_gb():6.2f} GB  "
          f"fresh process (peak {before:.2f} GB after the load); {len(long)} scores, finite "
          f"{bool(long.alpha.notna().all())}", flush=True)


if __name__ == "__main__":
    main()
