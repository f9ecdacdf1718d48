"""Circuit tools beside their whole-forward brute force (issue #19).

Every number a tool reports is printed next to the same quantity computed with whole-model
forwards and hooks only (``tests/circuits/brute.py``: no weights, no hand-written piece of a
layer).

Usage (from the repository root)::

    python benchmarks/circuit_families.py [model] [--batch 4] [--seg-len 10] [--top 5]
        [--out FILE]
    python benchmarks/circuit_families.py --tiny [--out FILE]

``model`` (default ``gemma3-270m``): on the induction task (:func:`induction_task`, seed 0)

1. ``path_patch`` L4H1 -> L5H1 through q, k and v (``method="auto"``), beside the issue's
   brute force, and beside the old hand projection (``dz @ W_O`` added to the residual, which
   skips Gemma's post-attention norm; forced here only for contrast, the tool refuses it);
2. the top ``--top`` edges of the induction circuit (:func:`eap_circuit`, top 20 edges by
   |EAP|): each edge's EAP score beside the brute-force ``delta . gradient``, and the circuit
   run with every edge but that one (ACDC's rule) beside the clean run with that one receiver
   input rebuilt with the sender corrupted.

``--tiny``: for each family of ``tests/families/tiny.py`` (tiny random checkpoints with noisy
norms and biases, saved to a temporary folder and loaded by path), the largest
|tool - brute force| per tool, or the refusal.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import interp  # noqa: E402
import interp.circuits.path as path  # noqa: E402
from interp.circuits import (CircuitRunner, HeadGraph, eap_circuit, edge_attribution,  # noqa: E402
                             induction_task, path_patch)
from tests.circuits import brute as B  # noqa: E402


def _sender(row):
    kind = row["kind"]
    return ("embed" if kind == "embed" else ("head", int(row["layer"]), int(row["head"]))
            if kind == "head" else ("mlp", int(row["layer"])))


def _receiver(row):
    if row["node"] == "logits":
        return ("logits",)
    if row["input"] == "in":
        return ("mlp", int(row["layer"]))
    return (row["input"], int(row["layer"]), int(row["head"]))


def _old_projection(model, task, senders, receivers, inputs):
    """The pre-#19 number: the hand projection forced on a model where it is refused."""
    keep = path.projection_exact
    path.projection_exact = lambda model, layers: None
    try:
        return path_patch(model, task, senders, receivers, inputs=inputs, method="projection")
    finally:
        path.projection_exact = keep


def model_figures(name: str, batch: int, seg_len: int, top: int) -> str:
    t0 = time.time()
    model = interp.load_model(name)
    task = induction_task(model, batch=batch, seg_len=seg_len, seed=0)
    lines = [f"## {name}: induction task (batch {batch}, seg_len {seg_len}, seed 0)", ""]
    df = path_patch(model, task, [(4, 1)], [(5, 1)])
    clean, corr = df.attrs["clean"], df.attrs["corrupted"]
    norm = lambda m: (m - corr) / (clean - corr)  # noqa: E731
    lines += [f"metric (mean log-prob of the second copy): clean {clean:.4f}, corrupted "
              f"{corr:.4f}; `path_patch` method `{df.attrs['method']}`", "",
              "### path_patch L4H1 -> L5H1", "",
              "| input | path_patch | brute force | abs diff | normalised (tool / brute) "
              "| old hand projection |", "|---|---|---|---|---|---|"]
    old = _old_projection(model, task, [(4, 1)], [(5, 1)], ("q", "k", "v")).set_index("input")
    for r in df.itertuples():
        want = B.path_patch(model, task, (4, 1), (5, 1), r.input)
        lines.append(f"| {r.input} | {r.metric:.6f} | {want:.6f} | {abs(r.metric - want):.1e} "
                     f"| {norm(r.metric):.4f} / {norm(want):.4f} | "
                     f"{old.loc[r.input, 'metric']:.6f} ({norm(old.loc[r.input, 'metric']):.4f})"
                     f" |")
    runner = CircuitRunner(model, task)
    scores = edge_attribution(model, task)
    circuit = eap_circuit(model, task, top_n=20, runner=runner, scores=scores)
    snd = runner.senders.set_index("name")
    rcv = runner.receivers.set_index("name")
    lines += ["", f"### induction circuit (`eap_circuit`, top 20 edges by |EAP|): recovers "
                  f"{circuit.normalised:.3f} of clean - corrupted; its top {top} edges", "",
              "| edge | EAP score | brute-force EAP | abs diff | circuit minus this edge "
              "(runner) | brute force | abs diff |", "|---|---|---|---|---|---|---|"]
    for e in circuit.edges.head(top).itertuples():
        rname = e.receiver if e.input == "in" else f"{e.receiver}.{e.input}"
        si, ri = snd.index.get_loc(e.sender), rcv.index.get_loc(rname)
        s_node = _sender(runner.senders.iloc[si])
        r_node = _receiver(runner.receivers.iloc[ri])
        want_eap = float(B.edge_attribution(model, task, [s_node], [r_node])[0, 0])
        mask = runner.valid.clone()
        mask[si, ri] = False
        got_rm = runner.metric(mask)
        want_rm = B.edge_removed(model, task, s_node, r_node)
        lines.append(f"| {e.sender} -> {rname} | {e.score:.6f} | {want_eap:.6f} | "
                     f"{abs(e.score - want_eap):.1e} | {got_rm:.6f} | {want_rm:.6f} | "
                     f"{abs(got_rm - want_rm):.1e} |")
    lines += ["", f"({time.time() - t0:.0f} s on {torch.get_num_threads()} CPU threads)"]
    return "\n".join(lines)


def _why(err: Exception) -> str:
    text = str(err)
    for key, short in (("encoder", "encoder"), ("soft-capping", "soft-capping"),
                       ("post_attention_layernorm", "post-attention norm")):
        if key in text:
            return f"refused ({short})"
    return "refused: " + text[:50]


def tiny_table() -> str:
    from interp.circuits import composition_scores, node_attribution, patch_heads
    from interp.circuits.ablation import ablate_heads
    from tests.families.tiny import FAMILY_NAMES, build_family

    def loss(logits, tokens):
        return -logits.float().log_softmax(-1).gather(-1, tokens[..., None]).mean()

    out = ["| family | path_patch | patch_heads | runner (edge removed) | EAP | node attribution "
           "| zero ablation | composition scores (values: tests) |",
           "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in FAMILY_NAMES:
            model = interp.load_model(build_family(name, Path(tmp) / name, perturb=True))
            if name == "bert":
                ids = torch.randint(4, 260, (2, 12), generator=torch.Generator().manual_seed(3))
                other = ids.clone()
                other[:, 2:6] = 5
                from interp.circuits.metrics import logprob_metric
                from interp.circuits.tasks import PatchingTask

                task = PatchingTask(ids, other, logprob_metric([7, 9], ids[:, [7, 9]]))
            else:
                task = induction_task(model, batch=2, seg_len=6, seed=0)
            row = {}

            def attempt(key, fn):
                try:
                    row[key] = f"{fn():.1e}"
                except NotImplementedError as err:
                    row[key] = _why(err)

            def pp():
                df = path_patch(model, task, [(0, 1), (1, 2)], [(2, 1)])
                return max(abs(r.metric - B.path_patch(model, task, (r.sender_layer,
                           r.sender_head), (2, 1), r.input)) for r in df.itertuples())

            def ph():
                df = patch_heads(model, task, progress=False)
                return max(abs(r.metric - B.patch_head(model, task, r.layer, r.head))
                           for r in df.itertuples())

            def runner_edges():
                r = CircuitRunner(model, task)
                worst = 0.0
                for si, ri in zip(*r.valid.nonzero(as_tuple=True)):
                    if (si + 3 * ri) % 17:
                        continue
                    mask = r.valid.clone()
                    mask[si, ri] = False
                    want = B.edge_removed(model, task, _sender(r.senders.iloc[int(si)]),
                                          _receiver(r.receivers.iloc[int(ri)]))
                    worst = max(worst, abs(r.metric(mask) - want))
                return worst

            def eap():
                g = HeadGraph.of(model)
                got = edge_attribution(model, task)
                want = B.edge_attribution(
                    model, task, [_sender(s) for _, s in g.senders().iterrows()],
                    [_receiver(r) for _, r in g.receivers().iterrows()]) * g.valid()
                return float((got - want).abs().max())

            def nodes():
                df = node_attribution(model, task)
                want = B.node_attribution(model, task)
                return max(abs(r.score - float(want[r.layer, r.head])) for r in df.itertuples())

            def zero():
                heads = [(0, 1), (2, 3)]
                with torch.no_grad(), B.zeroed_heads(model, heads):
                    want = float(loss(model(task.clean), task.clean))
                return abs(ablate_heads(model, task.clean, heads, loss, "zero") - want)

            for key, fn in (("path_patch", pp), ("patch_heads", ph), ("runner", runner_edges),
                            ("eap", eap), ("nodes", nodes), ("zero", zero)):
                attempt(key, fn)
            modes = []
            for mode in ("K", "V"):
                try:
                    composition_scores(model, mode)
                    modes.append(f"{mode}: computed")
                except NotImplementedError as err:
                    modes.append(f"{mode}: {_why(err)}")
            row["comp"] = ", ".join(modes)
            out.append(f"| {name} | " + " | ".join(row[k] for k in (
                "path_patch", "patch_heads", "runner", "eap", "nodes", "zero", "comp")) + " |")
            print(out[-1], flush=True)
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="gemma3-270m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seg-len", type=int, default=10)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    text = tiny_table() if args.tiny else model_figures(args.model, args.batch, args.seg_len,
                                                        args.top)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
