"""Attribution (EAP, EAP-IG) vs activation patching vs single-edge knockouts, and patching vs
TransformerLens, on one induction task, measured in one run.

Single-threaded (``torch.set_num_threads(1)``; run with ``OMP_NUM_THREADS=1``). Times are the
process's CPU seconds of one call each (``time.process_time``: with one thread this is the
compute time, and on a shared, loaded machine it does not grow with other processes' load as
wall clock does; ``--clock wall`` for wall clock), after one warm-up EAP call; nothing is
asserted. The task of lines 1-4 and 6 is ``induction_task(model, batch, seg_len)``; lines 5
use a smaller one.

Printed lines:

1. ``<model> (<n> heads, batch, seg_len, 1 thread, <clock> seconds): ...``: time of EAP node
   attribution (``node_attribution``: clean forward + corrupted forward + one backward) and
   of per-head activation patching over all layers and all positions (``patch_heads``,
   denoise, ``hook_z``), their ratio, and how well the EAP scores rank the real per-head patching
   effects (``patch_heads`` metric minus the corrupted metric): Spearman rho and Pearson r.
2. ``EAP-IG (<ig_on>, <S> steps): ...``: one line per run of ``method="eap-ig"``
   (``ig_on="inputs"`` at each of ``--ig-steps``; ``ig_on="activations"`` at
   ``--ig-activations-steps``, default 0 = skipped: about 2 minutes on SmolLM2). Its time
   (attribution cache included, as for EAP; with ``ig_on="inputs"`` the same forwards give
   the node and the edge scores, so this one time covers both, ``edge_attribution`` then
   reads them from the cache), its share of line 1's patching time, its Spearman rho /
   Pearson r against the same patching effects, and EAP's rho beside it.
3. ``all positions z (...)``: per-head patching over all positions, ``patch_heads`` of line 1
   (time and values reused) vs TransformerLens'
   ``transformer_lens.patching.get_act_patch_attn_head_out_all_pos`` on the same task (one
   whole hooked forward per head; its clean ``run_with_cache`` included; called as
   documented, without ``torch.no_grad``): TL / ours, and the max absolute difference of
   the two tables' metric values aligned by (layer, head) (TL returns ``[layer, head]``),
   beside the range of the values. With ``--skip-tl-all-pos``, or when TL's function fails,
   the line says so (and why) instead.
4. Edges (the head graph of :mod:`interp.circuits.graph`: senders ``embed``, heads, MLPs;
   receivers head q / k / v inputs, MLP inputs, ``logits``; on a model where the graph does
   not apply, one ``edges: skipped`` line with the reason):

   a. ``edges (...)``: the number of edges, the time of EAP edge attribution
      (``edge_attribution(method="eap")``, its attribution cache included; EAP-IG's are in
      lines 2), the edge set that is knocked out and its size: the ``--n-edges`` (200)
      strongest by |EAP score| (the issue's "200 strongest edges") united with the
      ``--n-edges`` strongest by |EAP-IG score| of every ``--ig-steps`` (so that no method
      is judged only on edges another method chose), and how many edges the top sets share.
   b. ``knockouts (...)``: single-edge knockouts with real forwards. The effect of edge
      ``s -> r`` is ``metric(full graph) - metric(full graph minus s -> r)`` under
      :class:`~interp.circuits.runner.CircuitRunner`'s rule (``ablation="corrupted"``: an
      edge outside the circuit carries the sender's corrupted value; the full graph is the
      clean run), so positive = the edge carries clean behaviour, the sign of EAP's scores.
      Full graph minus one edge is the clean run with only receiver ``r`` reading its input
      minus the sender's clean-minus-corrupted output (every other receiver reads its
      current residual; nothing upstream of ``r`` changes), so the benchmark runs it as
      that: one hook on ``r``'s hook point (q / k / v recomputed with the layer's own
      ``ln1`` and projection, :func:`~interp.circuits.model.project`; ``ln2.hook_in``;
      ``ln_final.hook_in``) in a batched clean forward, ``--max-batch`` rows per forward.
      The line gives the full-graph (clean) metric, that time and the range of the effects,
      and checks the knockouts against ``CircuitRunner(model, task, ablation="corrupted")
      .metric(valid minus the edge)`` on ``--runner-check`` (5) of them: the strongest
      knocked-out edge (by |EAP|) into each receiver kind (q, k, v, MLP, logits: every hook
      the batched knockouts use), then the next strongest. The runner rebuilds every
      receiver input from the edges, one forward per edge, too slow for all (its setup
      time, time per edge and the implied total are printed); then the max |difference| to
      the batched knockouts and the runner's full-graph metric minus the clean metric.
   c. ``edges vs knockouts, <set>: ...``: two lines, on the top ``--n-edges`` by |EAP| and on
      the union of line a: Spearman of EAP, EAP-IG (each of ``--ig-steps``) edge scores
      against the knockout effects, and of per-head patching (node method: an edge gets its
      sender head's patching effect of line 1; edges whose sender is ``embed`` or an MLP are
      left out, ``n`` says how many remain; ties are shared by all edges of a head) with
      EAP's rho on the same edges beside it.
5. ``by position <c> (...)``: one line per component ``c`` in z, q, k, v, on a smaller task
   (``--pos-batch``, ``--pos-seg-len``) and a few layers (``--pos-layers``; default the middle
   layer ``n_layers // 2``, an average depth for the start-at-layer saving): the time of
   ``patch_heads(component=c, by_position=True, layers=...)`` (batched, each patched forward
   starting at the patched layer), the time of TransformerLens'
   ``transformer_lens.patching.get_act_patch_attn_head_{out,q,k,v}_by_pos`` on the same
   (layer, pos, head) cells (one whole hooked forward per cell, restricted to those layers
   with ``index_df``; its clean ``run_with_cache`` included; called as documented, without
   ``torch.no_grad``), TL / ours, and the max absolute difference of the two tables' metric
   values aligned by (layer, pos, head), beside the range of the values. If TL's function
   fails on the model, the line says so and names a plain loop of single hooked forwards
   (``model.run_with_hooks``) as the reference instead.
6. ``start at layer (...)``: the time of per-head ``patch_heads`` (``hook_z``, the task of
   line 1) on the first ``--depth-layers`` layers and on the last as many, and first / last.
   A patched forward skips the blocks before the patched layer (``skip_reason`` of the
   family says whether it can; the line says which), so late layers are cheaper; both calls
   also pay the fixed part (the clean / corrupted baseline forwards, the unembedding of
   every patched forward, the residual cached up to the first patched layer).
7. ``goal ...``: one line per goal of the issue, ``met`` / ``not met``: EAP-IG (node scores,
   ``ig_on="inputs"``) Spearman >= 0.95 against per-head patching at <= 1/5 of its time
   (every ``--ig-steps`` run listed; met when one run meets both); by-position patching
   >= 5x TL on every component of lines 5; all-position per-head patching >= 5x TL (line
   3). A speed goal also needs equal values: max |diff| <= 1e-4 (float32 metrics of the
   same forwards; batching changes only the order of float sums).
8. ``run: ...``: the whole run's CPU and wall seconds (model load included) and the
   1-minute load average at its start and end, with the number of CPUs.

Usage: python benchmarks/attribution.py [model] [batch] [seg_len] [options]
(default: smollm2-135m 4 10; ``circuit-toy`` for the trained toy); options: ``--ig-steps 5,20
--ig-activations-steps 0 --n-edges 200 --runner-check 5 --max-batch 64 --pos-batch 2
--pos-seg-len 6 --pos-layers L1,L2 --depth-layers 3 --skip-tl-all-pos --clock cpu|wall``.
``python benchmarks/attribution.py -h``."""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")      # TL's patching loop draws a progress bar

import numpy as np  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp.circuits.activation import patch_heads  # noqa: E402
from interp.circuits.attribution import (attribution_cache, edge_attribution,  # noqa: E402
                                         node_attribution, spearman)
from interp.circuits.graph import HeadGraph, activation_names  # noqa: E402
from interp.circuits.model import attn_write, project, run_cache, skip_reason  # noqa: E402
from interp.circuits.runner import CircuitRunner  # noqa: E402
from interp.circuits.tasks import induction_task  # noqa: E402
from interp.hooks import attach  # noqa: E402

TL_NAMES = {"z": "get_act_patch_attn_head_out_by_pos", "q": "get_act_patch_attn_head_q_by_pos",
            "k": "get_act_patch_attn_head_k_by_pos", "v": "get_act_patch_attn_head_v_by_pos"}
EQUAL = 1e-4                                    # max |diff| that counts as equal values


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = CLOCK["cpu"]


def _timed(fn, *args, **kw):
    t0 = _clock()
    out = fn(*args, **kw)
    return out, _clock() - t0


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _why(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:120]}" if str(err) else \
        type(err).__name__


def _loop_by_pos(model, task, component: str, cells) -> list[float]:
    """One ``run_with_hooks`` forward of the corrupted tokens per (layer, pos, head) cell,
    copying that cell of the clean run's ``hook_{component}`` (the fallback reference)."""
    names = sorted({f"blocks.{l}.attn.hook_{component}" for l, _, _ in cells})
    _, cache = model.run_with_cache(task.clean, names_filter=lambda n: n in names)
    out = []
    with torch.no_grad():
        for layer, pos, head in cells:
            name = f"blocks.{layer}.attn.hook_{component}"

            def hook(act, hook, pos=pos, head=head, src=cache[name]):
                act = act.clone()
                act[:, pos, head] = src[:, pos, head]
                return act

            out.append(float(task.metric(model.run_with_hooks(task.corrupted,
                                                              fwd_hooks=[(name, hook)]))))
    return out


def _tl_by_pos(model, task, component: str, cells) -> tuple[list[float], str]:
    """TransformerLens' by-position patching of ``cells`` ((layer, pos, head) rows, flattened
    output in that order); on failure the plain loop, with the reason."""
    import pandas as pd

    name = TL_NAMES[component]
    try:
        from transformer_lens import patching as P

        fn = getattr(P, name)
        _, clean_cache = model.run_with_cache(task.clean)
        index = pd.DataFrame(cells, columns=["layer", "pos", "head"])
        ref = fn(model, task.corrupted, clean_cache, task.metric, index_axis_names=None,
                 index_df=index)
        return [float(x) for x in ref.flatten().cpu()], f"TransformerLens {name}"
    except Exception as err:                    # noqa: BLE001 - reported, then the fallback
        return (_loop_by_pos(model, task, component, cells),
                f"plain run_with_hooks loop (TL {name} failed on this model: {_why(err)})")


def _tl_all_pos(model, task) -> np.ndarray:
    """TransformerLens' ``get_act_patch_attn_head_out_all_pos``: ``[layer, head]`` metrics."""
    from transformer_lens import patching as P

    _, clean_cache = model.run_with_cache(task.clean)
    ref = P.get_act_patch_attn_head_out_all_pos(model, task.corrupted, clean_cache, task.metric)
    return ref.detach().float().cpu().numpy()


# --- single-edge knockouts -------------------------------------------------------------------

def _sender_deltas(model, g: HeadGraph, clean: dict, corr: dict) -> list[torch.Tensor]:
    """Each sender's clean-minus-corrupted write ``[b, n, d_model]`` in the clean run: the
    embedding, a head's share of its layer's write (``attn_write`` of the clean ``z`` minus
    that of the clean ``z`` with this head at its corrupted value: the runner's per-head
    delta, also on post-attention-norm layers), an MLP's output."""
    out = []
    for s in g.senders().itertuples():
        if s.kind == "embed":
            n = "blocks.0.hook_resid_pre"
            out.append(clean[n] - corr[n])
        elif s.kind == "mlp":
            n = f"blocks.{s.layer}.hook_mlp_out"
            out.append(clean[n] - corr[n])
        else:
            n = f"blocks.{s.layer}.attn.hook_z"
            lo = clean[n].clone()
            lo[:, :, s.head] = corr[n][:, :, s.head]
            with torch.no_grad():
                out.append(attn_write(model, s.layer, clean[n]) - attn_write(model, s.layer, lo))
    return out


@torch.no_grad()
def _knockouts(model, task, g: HeadGraph, pairs: list[tuple[int, int]], max_batch: int
               ) -> list[float]:
    """Metric of the full graph minus each edge ``(sender row, receiver column)``: the clean
    run where only that receiver reads its input minus the sender's delta (module doc, 4b).
    ``max_batch // batch`` edges per forward, one copy of the clean batch each."""
    names = activation_names(g)
    _, clean = run_cache(model, task.clean, names)
    _, corr = run_cache(model, task.corrupted, names)
    deltas = _sender_deltas(model, g, clean, corr)
    rcv = g.receivers()
    b = task.clean.shape[0]
    per = max(1, max_batch // b)
    out: list[float] = []
    for start in range(0, len(pairs), per):
        part = pairs[start:start + per]
        by_point: dict[str, list] = {}
        resid: dict[int, torch.Tensor] = {}
        for i, (s, j) in enumerate(part):
            r = rcv.iloc[j]
            rows = slice(i * b, (i + 1) * b)
            if r["node"] == "logits":
                point = "ln_final.hook_in"
            elif r["input"] == "in":
                point = f"blocks.{r['layer']}.ln2.hook_in"
            else:
                point = f"blocks.{r['layer']}.attn.hook_{r['input']}"
            by_point.setdefault(point, []).append((rows, int(r["layer"]), r["input"],
                                                   int(r["head"]), deltas[s]))

        def saver(layer):
            def fn(act, hook):
                resid[layer] = act

            return fn

        def edit(items):
            def fn(act, hook):
                act = act.clone()
                for rows, layer, x, head, d in items:
                    if x in ("q", "k", "v"):
                        inp = resid[layer][rows] - d
                        act[rows, :, head] = project(model, layer, x, inp, head).to(act.dtype)
                    else:
                        act[rows] = act[rows] - d.to(act.dtype)
                return act

            return fn

        layers = sorted({it[1] for items in by_point.values() for it in items
                         if it[2] in ("q", "k", "v")})
        hooks = [(f"blocks.{l}.hook_resid_pre", saver(l)) for l in layers]
        hooks += [(p, edit(items)) for p, items in by_point.items()]
        with attach(model, hooks):
            logits = model(task.clean.repeat(len(part), 1))
        out += [float(task.metric(logits[i * b:(i + 1) * b])) for i in range(len(part))]
    return out


def _top(scores: torch.Tensor, valid: torch.Tensor, n: int) -> list[int]:
    """Flat indices of the ``n`` valid edges with the largest |score|."""
    flat = torch.where(valid.flatten(), scores.flatten().abs(), torch.tensor(-1.0,
                                                                            dtype=scores.dtype))
    return flat.argsort(descending=True)[:min(n, int(valid.sum()))].tolist()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="smollm2-135m",
                    help="interp.load_model name, or circuit-toy")
    ap.add_argument("batch", nargs="?", type=int, default=4, help="induction task batch")
    ap.add_argument("seg_len", nargs="?", type=int, default=10, help="induction segment length")
    ap.add_argument("--ig-steps", default="5,20", help="EAP-IG (ig_on=inputs) step counts")
    ap.add_argument("--ig-activations-steps", type=int, default=0,
                    help="EAP-IG (ig_on=activations, node scores) steps; 0 (default) skips "
                         "(about 2 minutes at 5 steps on SmolLM2)")
    ap.add_argument("--n-edges", type=int, default=200,
                    help="knock out the N strongest edges of each method (union)")
    ap.add_argument("--runner-check", type=int, default=5,
                    help="check this many knockouts against CircuitRunner.metric (0 skips)")
    ap.add_argument("--max-batch", type=int, default=64, help="rows per knockout forward")
    ap.add_argument("--skip-tl-all-pos", action="store_true",
                    help="skip TL's get_act_patch_attn_head_out_all_pos (one forward per head)")
    ap.add_argument("--pos-batch", type=int, default=2, help="by-position task batch")
    ap.add_argument("--pos-seg-len", type=int, default=6, help="by-position task seg_len")
    ap.add_argument("--pos-layers", default=None,
                    help="by-position layers, e.g. 3,7 (default: n_layers // 2)")
    ap.add_argument("--depth-layers", type=int, default=3,
                    help="start-at-layer: this many first vs last layers")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="cpu",
                    help="cpu (default): process CPU time, robust to other load on a shared "
                         "machine (one thread); wall: wall clock")
    a = ap.parse_args(argv)

    global _clock
    _clock = CLOCK[a.clock]
    load0, cpu0, wall0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    torch.set_num_threads(1)
    name, batch, seg_len = a.model, a.batch, a.seg_len
    if name == "circuit-toy":
        from interp.recipes.toy_induction import circuit_toy

        model = circuit_toy()
    else:
        model = interp.load_model(name)
    model.eval()
    L = model.cfg.n_layers
    task = induction_task(model, batch=batch, seg_len=seg_len)
    seq = task.clean.shape[1]
    node_attribution(model, task)                       # warm-up (first-forward hook wiring)
    na, t_attr = _timed(node_attribution, model, task)
    ph, t_patch = _timed(patch_heads, model, task, progress=False)
    effect = ph.metric - ph.attrs["corrupted"]
    rho_eap = spearman(na.score, effect)
    print(f"{name} ({len(na)} heads, batch {batch}, seg_len {seg_len}, 1 thread, {a.clock} "
          f"seconds): "
          f"attribution {t_attr:.2f}s, per-head patching {t_patch:.2f}s, "
          f"ratio {t_patch / t_attr:.1f}x; attribution vs patching Spearman "
          f"{rho_eap:.3f}, Pearson {np.corrcoef(na.score, effect)[0, 1]:.3f}")

    # --- EAP-IG (node scores; with ig_on="inputs" the same pass gives the edge scores)
    try:
        graph, graph_error = HeadGraph.of(model), None
    except NotImplementedError as err:
        graph, graph_error = None, err

    def ig_run(steps, ig_on):
        c = attribution_cache(model, task)
        out = node_attribution(model, task, c, method="eap-ig", steps=steps, ig_on=ig_on)
        edges = edge_attribution(model, task, c, method="eap-ig", steps=steps) \
            if ig_on == "inputs" and graph is not None else None
        return out, edges

    runs = [("inputs", s) for s in _ints(a.ig_steps)]
    if a.ig_activations_steps > 0:
        runs.append(("activations", a.ig_activations_steps))
    ig_edges: dict[int, torch.Tensor] = {}
    goal_ig = []
    for ig_on, steps in runs:
        (ig, e), t = _timed(ig_run, steps, ig_on)
        rho = spearman(ig.score, effect)
        if e is not None:
            ig_edges[steps] = e
        if ig_on == "inputs":
            goal_ig.append((steps, rho, t / t_patch))
        print(f"EAP-IG ({ig_on}, {steps} steps): {t:.2f}s ({t / t_attr:.1f}x EAP, "
              f"{t / t_patch:.3f} of patching); vs patching Spearman {rho:.3f}, Pearson "
              f"{np.corrcoef(ig.score, effect)[0, 1]:.3f} (EAP Spearman {rho_eap:.3f})")

    # --- per-head patching over all positions vs TransformerLens
    tl_all = None
    if a.skip_tl_all_pos:
        print("all positions z: TransformerLens get_act_patch_attn_head_out_all_pos skipped "
              "(--skip-tl-all-pos)")
    else:
        try:
            ref, t_tl = _timed(_tl_all_pos, model, task)
            ours = np.zeros_like(ref)
            ours[ph["layer"].to_numpy(), ph["head"].to_numpy()] = ph.metric.to_numpy()
            diff = float(np.max(np.abs(ours - ref)))
            tl_all = (t_tl / t_patch, diff)
            print(f"all positions z ({len(ph)} heads, batch {batch}, seq {seq}): patch_heads "
                  f"{t_patch:.2f}s (line 1), TransformerLens get_act_patch_attn_head_out_all_pos "
                  f"{t_tl:.2f}s, ratio {t_tl / t_patch:.1f}x; max |diff| {diff:.2e} (values "
                  f"in [{ph.metric.min():.3f}, {ph.metric.max():.3f}])")
        except Exception as err:                # noqa: BLE001 - reported
            print(f"all positions z: TransformerLens get_act_patch_attn_head_out_all_pos "
                  f"failed on this model: {_why(err)}")

    # --- edges: EAP, EAP-IG vs single-edge knockouts
    if graph is None:
        print(f"edges: skipped, the edge graph does not apply to this model: "
              f"{_why(graph_error)}")
    else:
        eap_e, t_eap_e = _timed(edge_attribution, model, task)
        valid = graph.valid()
        n = min(a.n_edges, int(valid.sum()))
        top = {"EAP": _top(eap_e, valid, n)}
        top.update({f"EAP-IG {s}": _top(e, valid, n) for s, e in ig_edges.items()})
        union = list(dict.fromkeys(i for t in top.values() for i in t))
        shared = len(set.intersection(*map(set, top.values())))
        print(f"edges ({int(valid.sum())} edges, {len(valid)} senders x {valid.shape[1]} "
              f"receivers): EAP edge attribution {t_eap_e:.2f}s; knocked out: the top {n} by "
              f"|score| of {', '.join(top)} united, {len(union)} edges ({shared} in every "
              f"top {n})")
        R = valid.shape[1]
        pairs = [(i // R, i % R) for i in union]
        ko, t_ko = _timed(_knockouts, model, task, graph, pairs, a.max_batch)
        with torch.no_grad():
            full = float(task.metric(model(task.clean)))
        ko_eff = full - np.asarray(ko)
        check = ""
        if a.runner_check > 0:
            runner, t_run0 = _timed(CircuitRunner, model, task, ablation="corrupted")
            full_r = runner.metric(runner.valid)
            # the strongest knocked-out edge of each receiver kind first (q, k, v, MLP,
            # logits: every hook of _knockouts), then the next strongest by |EAP|
            rc = graph.receivers()
            kinds = np.where(rc.node == "logits", "logits",
                             np.where(rc["input"] == "in", "MLP", rc["input"]))
            order = sorted(range(len(pairs)), key=lambda p: -abs(float(eap_e[pairs[p]])))
            seen, pick = set(), []
            for p in order:
                if kinds[pairs[p][1]] not in seen:
                    seen.add(kinds[pairs[p][1]])
                    pick.append(p)
            pick = (pick + [p for p in order if p not in pick])[:a.runner_check]
            k = len(pick)
            t0, got = _clock(), []
            for s, j in (pairs[p] for p in pick):
                mask = runner.valid.clone()
                mask[s, j] = False
                got.append(runner.metric(mask))
            per = (_clock() - t0) / k
            d = float(np.max(np.abs(np.asarray(got) - np.asarray(ko)[pick])))
            check = (f"; CircuitRunner (setup {t_run0:.2f}s) on {k} of them "
                     f"({', '.join(sorted({str(kinds[pairs[p][1]]) for p in pick}))}): "
                     f"{per:.2f}s per edge (~{per * len(pairs):.0f}s for all), max |diff| "
                     f"{d:.2e}, runner full graph - clean {full_r - full:.1e}")
        print(f"knockouts ({len(pairs)} edges, full graph minus one edge vs full graph = clean "
              f"metric {full:.3f}, {max(1, a.max_batch // batch)} edges per forward): "
              f"{t_ko:.2f}s; effects in [{ko_eff.min():.3f}, {ko_eff.max():.3f}]{check}")
        scores = {"EAP": eap_e.flatten()}
        scores.update({f"EAP-IG {s}": e.flatten() for s, e in ig_edges.items()})
        snd = graph.senders()
        head_eff = {(int(r.layer), int(r.head)): float(v)
                    for r, v in zip(ph.itertuples(), effect)}
        for label, sel in ((f"top {n} by |EAP|", top["EAP"]), (f"union of {len(union)}", union)):
            pos = [union.index(i) for i in sel]
            y = ko_eff[pos]
            parts = [f"{m} {spearman(s[sel].numpy(), y):.3f}" for m, s in scores.items()]
            hs = [(p, i) for p, i in zip(pos, sel) if snd.kind.iat[i // R] == "head"]
            hx = [head_eff[(int(snd.layer.iat[i // R]), int(snd["head"].iat[i // R]))]
                  for _, i in hs]
            hy = ko_eff[[p for p, _ in hs]]
            rho_h = spearman(hx, hy) if len(hs) > 1 else float("nan")
            rho_he = spearman(scores["EAP"][[i for _, i in hs]].numpy(), hy) \
                if len(hs) > 1 else float("nan")
            print(f"edges vs knockouts, {label}: Spearman {', '.join(parts)}; sender head's "
                  f"patching effect {rho_h:.3f} (n {len(hs)} head-sender edges; EAP on them "
                  f"{rho_he:.3f})")

    # --- patching by position: patch_heads vs TransformerLens on the same cells
    layers = [L // 2] if a.pos_layers is None else _ints(a.pos_layers)
    ptask = induction_task(model, batch=a.pos_batch, seg_len=a.pos_seg_len)
    pseq = ptask.clean.shape[1]
    by_pos = []
    for comp in ("z", "q", "k", "v"):
        df, t_ours = _timed(patch_heads, model, ptask, component=comp, by_position=True,
                            layers=layers, progress=False)
        cells = [(int(r.layer), int(r.pos), int(r.head)) for r in df.itertuples()]
        (ref, how), t_ref = _timed(_tl_by_pos, model, ptask, comp, cells)
        diff = float(np.max(np.abs(df.metric.to_numpy() - np.asarray(ref))))
        by_pos.append((comp, t_ref / t_ours, diff, how.startswith("TransformerLens")))
        print(f"by position {comp} (layers {layers}, batch {a.pos_batch}, seq {pseq}, "
              f"{len(cells)} cells): patch_heads {t_ours:.2f}s, {how} {t_ref:.2f}s, ratio "
              f"{t_ref / t_ours:.1f}x; max |diff| {diff:.2e} (values in "
              f"[{df.metric.min():.3f}, {df.metric.max():.3f}])")

    # --- start-at-layer speedup
    k = max(1, min(a.depth_layers, L // 2))
    first, last = list(range(k)), list(range(L - k, L))
    _, t_first = _timed(patch_heads, model, task, layers=first, progress=False)
    _, t_last = _timed(patch_heads, model, task, layers=last, progress=False)
    why = skip_reason(model)
    print(f"start at layer (per-head z, batch {batch}, seg_len {seg_len}, {k} of {L} layers; "
          f"{'skipping blocks' if why is None else 'whole forwards: ' + why}): first layers "
          f"{first} {t_first:.2f}s, last layers {last} {t_last:.2f}s, ratio "
          f"{t_first / t_last:.2f}x")

    # --- goals of the issue
    met = any(r >= 0.95 and f <= 0.2 for _, r, f in goal_ig)
    runs_txt = ", ".join(f"rho {r:.3f} at {f:.3f} of patching's time ({s} steps)"
                         for s, r, f in goal_ig) or "no --ig-steps run"
    print(f"goal EAP-IG rho >= 0.95 vs patching at <= 1/5 its time: {runs_txt}: "
          f"{'met' if met else 'not met'}")
    worst = min(by_pos, key=lambda x: x[1])
    eq = max(d for _, _, d, _ in by_pos)
    tl = all(t for *_, t in by_pos)
    ok = tl and worst[1] >= 5 and eq <= EQUAL
    print(f"goal by-position >= 5x TL (equal values): slowest ratio {worst[1]:.1f}x ({worst[0]}), "
          f"max |diff| {eq:.1e}{'' if tl else ' (TL failed on some component: vs a plain loop)'}"
          f": {'met' if ok else 'not met'}")
    if tl_all is None:
        print("goal all-pos >= 5x TL (equal values): not measured")
    else:
        ok = tl_all[0] >= 5 and tl_all[1] <= EQUAL
        print(f"goal all-pos >= 5x TL (equal values): ratio {tl_all[0]:.1f}x, max |diff| "
              f"{tl_all[1]:.1e}: {'met' if ok else 'not met'}")
    print(f"run: {time.process_time() - cpu0:.0f}s CPU, {time.perf_counter() - wall0:.0f}s "
          f"wall (model load included); 1-minute load average {load0:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
