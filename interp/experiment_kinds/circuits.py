"""``kind = "circuits"``: activation patching, attribution patching and circuit discovery on
one model and one task (``induction``, ``kv_retrieval``, ``ioi`` or ``greater_than``); see :mod:`interp.circuits`.

Stages: baseline metrics; head patching (layer x head heatmap, resumable via a sweep);
residual patching (layer x position heatmap, resumable) -- under ``--nproc N`` both patching
sweeps are split over the ranks (same tables as one process); node attribution and its
correlation (Pearson and Spearman) with head patching; EAP edge scores; for tasks with an
answer token, the direct logit attribution of the clean run and a logit-lens page; discovery (``acdc``
for small graphs, ``heads`` -- node-level, attribution then real-patching pruning -- for deep
models, or EAP top-n) with the circuit's recovered metric on the task batch and on a held-out
batch, its overlap with the top induction / previous-token heads of
:func:`interp.probes.induction.induction_scores`, and a graph figure. Each stage is one
function (``_load_model``, ``_task_maker``, ``_patching``, ``_attribution``, ``_discover``,
``_answer_attribution``, ``_induction_overlap``); :func:`run_circuits` runs them in that order and writes the summary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from interp.config import DeviceConfig
from interp.errors import ConfigError
from interp.experiments import RunContext, experiment


#: the tasks a circuits run takes (:mod:`interp.circuits.tasks`,
#: :mod:`interp.circuits.standard_tasks`)
TASKS = ("induction", "kv_retrieval", "ioi", "greater_than", "docstring")


@dataclass(frozen=True)
class CircuitsConfig(DeviceConfig):
    """Attributes:
        model: registered model name, ``toy:<name>``, or ``circuit-toy`` (trains
            :func:`interp.recipes.toy_induction.circuit_toy` once and caches it; retrained
            when the cached checkpoint's recipe is not the default one).
        task: ``induction``, ``kv_retrieval``, ``ioi`` (Wang et al. 2022), ``greater_than``
            (Hanna et al. 2023) or ``docstring`` (Heimersheim & Janiak 2023); a run refuses a model that does not do the task (clean
            metric not above corrupted).
        batch, seg_len, n_pairs, seed: task size.
        n_shots, corrupt: kv_retrieval only -- answered lookups before the query (-1: the
            default of :func:`~interp.circuits.tasks.kv_retrieval_task`) and how the
            corrupted prompt differs (``value``: the queried key stores another value;
            ``query``: another key is asked for).
        method: ``acdc``, ``heads`` or ``eap``; threshold (ACDC, heads) / top_n (EAP);
            candidates: heads that ``heads`` starts from (the best by attribution).
        ablation: ``corrupted`` or ``mean`` (per-position means over ``ref_batch`` other
            clean-distribution prompts; see :mod:`interp.circuits.runner`), for discovery.
        attribution_method: ``eap`` (default) or ``eap-ig``: the node attribution table,
            the ranking of ``heads`` and the edge scores of ``eap`` and of every circuit
            (:func:`~interp.circuits.attribution.edge_attribution`); ig_steps, ig_on: EAP-IG's
            number of points and what it interpolates (``inputs`` or ``activations``; see
            :mod:`interp.circuits.integrated`).
        quick_batch, quick_candidates: ``--quick`` task batch (0: ``max(2, batch // 4)``)
            and ``heads`` candidates (at most ``candidates``).
        residual_patching: also run layer x position patching.
        compare: edge-ranking methods compared by faithfulness curves
            (:func:`~interp.circuits.evaluation.edge_rankings`: ``eap``, ``eap-ig``,
            ``knockout``, ``acdc``, ``patching``; knockout and acdc cost one forward per edge,
            so keep them to small graphs); () skips the comparison. curve_points /
            quick_curve_points: log-spaced circuit sizes per curve.
        threads: torch CPU threads (0 = default).
        device, dtype: where the model runs and its dtype (:class:`DeviceConfig`).
    """

    model: str = "circuit-toy"
    task: str = "induction"
    batch: int = 8
    seg_len: int = 12
    n_pairs: int = 4
    n_shots: int = -1
    corrupt: str = "value"
    seed: int = 0
    method: str = "acdc"
    threshold: float = 0.02
    top_n: int = 50
    candidates: int = 60
    ablation: str = "corrupted"
    attribution_method: str = "eap"
    ig_steps: int = 5
    ig_on: str = "inputs"
    ref_batch: int = 32
    quick_batch: int = 0
    quick_candidates: int = 30
    residual_patching: bool = True
    compare: tuple[str, ...] = ("eap", "eap-ig")
    quick_curve_points: int = 6
    curve_points: int = 10
    threads: int = 1

    def __post_init__(self):
        from interp.circuits.integrated import check_method
        from interp.errors import InputError

        from interp.circuits.evaluation import RANKING_METHODS

        bad = [m for m in self.compare if m not in RANKING_METHODS]
        if bad or len(set(self.compare)) != len(self.compare):
            raise ConfigError(f"compare must list distinct methods of "
                              f"{', '.join(RANKING_METHODS)}, got {list(self.compare)}")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        try:
            check_method(self.attribution_method, self.ig_steps, self.ig_on)
        except InputError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def attribution(self) -> dict:
        """Keyword arguments of the attribution functions: ``method``, ``steps``, ``ig_on``."""
        return {"method": self.attribution_method, "steps": self.ig_steps, "ig_on": self.ig_on}


def _load_model(cfg: CircuitsConfig, ctx: RunContext):
    """The model of ``cfg.model`` on the run's device; ``circuit-toy`` is trained (or loaded)
    once by rank 0 first."""
    import interp

    if cfg.model != "circuit-toy":
        return interp.load_model(cfg.model, device=ctx.device, dtype=ctx.dtype)
    from interp.distributed.shard import barrier
    from interp.recipes.toy_induction import ToyInductionConfig, circuit_toy

    # trained once (on CPU: the same cached checkpoint on every machine) and cached:
    # rank 0 trains (or loads) it first, the others wait for the finished checkpoint (no
    # two ranks writing the cache at once); then every rank loads it on the run's device
    if ctx.is_main:
        circuit_toy()
    barrier()
    return interp.load_model(f"toy:{ToyInductionConfig.name}", device=ctx.device,
                             dtype=ctx.dtype)


def _task_maker(cfg: CircuitsConfig, model):
    """``make(batch, seed) -> PatchingTask`` for ``cfg.task``."""
    from interp.circuits.docstring import docstring_task
    from interp.circuits.standard_tasks import greater_than_task, ioi_task
    from interp.circuits.tasks import induction_task, kv_retrieval_task

    def make(b: int, seed: int):
        if cfg.task == "induction":
            return induction_task(model, batch=b, seg_len=cfg.seg_len, seed=seed)
        if cfg.task == "kv_retrieval":
            return kv_retrieval_task(model, batch=b, n_pairs=cfg.n_pairs, seed=seed,
                                     n_shots=None if cfg.n_shots < 0 else cfg.n_shots,
                                     corrupt=cfg.corrupt)
        if cfg.task == "ioi":
            return ioi_task(model, n=b, seed=seed)
        if cfg.task == "greater_than":
            return greater_than_task(model, n=b, seed=seed)
        if cfg.task == "docstring":
            return docstring_task(model, n=b, seed=seed)
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {cfg.task!r}")

    return make


def _patching(cfg: CircuitsConfig, ctx: RunContext, model, task, batch: int):
    """Head patching (and residual patching) as resumable sweeps; adds their tables and
    figures and returns the head table ``layer, head, metric, normalised``."""
    from interp.circuits.activation import patch_heads, patch_residual
    from interp.circuits.discovery import position_heatmap
    from interp.experiments import model_fingerprint
    from interp.viz import head_heatmap

    # resume keys: the run's config and quick, the model's weights, the effective batch
    key = {"model": model_fingerprint(model), "batch": batch}
    heads = patch_heads(model, task, sweep=ctx.sweep("heads", **key),
                        progress=ctx.show_progress)
    ctx.add_table("head_patching", heads,
                  "activation patching of each head's output (hook_z) from the clean run into "
                  "the corrupted run, one forward per head: metric = the task metric of that "
                  "patched run, normalised = 0 (corrupted) .. 1 (clean); a high value means the "
                  "head alone restores much of the clean behaviour")
    ctx.add_figure("head_patching", head_heatmap(heads, "normalised",
                                                 title="head patching (clean -> corrupted)"),
                   "the head_patching table as a layer x head heatmap (normalised; bright = "
                   "the head alone restores the clean behaviour)")
    if cfg.residual_patching:
        res = patch_residual(model, task, sweep=ctx.sweep("resid", **key),
                             progress=ctx.show_progress)
        ctx.add_table("residual_patching", res,
                      "activation patching of the residual stream entering each layer at one "
                      "position (clean into corrupted): where the information the metric needs "
                      "sits, layer by layer; normalised 0 = corrupted, 1 = clean")
        ctx.add_figure("residual_patching", position_heatmap(res),
                       "the residual_patching table as a layer x position heatmap: read each "
                       "row left to right to see which position carries the answer at that "
                       "depth")
    return heads


def _attribution(cfg: CircuitsConfig, ctx: RunContext, model, task, heads, corrupted: float):
    """Node attribution (``cfg.attribution_method``) against head patching: adds the table,
    returns ``(table, Pearson r, Spearman rho)``."""
    from interp.circuits.attribution import node_attribution, spearman

    na = node_attribution(model, task, **cfg.attribution)
    effect = heads.metric - corrupted
    corr = float(np.corrcoef(na.score, effect)[0, 1])
    rank = spearman(na.score, effect)
    ctx.add_table("node_attribution", na.assign(patching=effect),
                  f"attribution patching ({cfg.attribution_method}) of every head: score = the "
                  f"first-order (EAP) or integrated-gradient (EAP-IG) estimate of patching that "
                  f"head; patching = the real effect from head_patching (metric minus the "
                  f"corrupted metric). Points on the diagonal mean the cheap estimate is right")
    return na, corr, rank


def _discover(cfg: CircuitsConfig, ctx: RunContext, model, task, reference):
    """The circuit of ``cfg.method`` (``acdc``, ``heads`` or ``eap``)."""
    from interp.circuits.attribution import edge_attribution
    from interp.circuits.discovery import acdc, eap_circuit, head_circuit
    from interp.circuits.runner import CircuitRunner

    if cfg.method == "acdc":
        return acdc(model, task, threshold=cfg.threshold, progress=ctx.show_progress)
    if cfg.method == "heads":
        candidates = (min(cfg.candidates, cfg.quick_candidates) if ctx.quick
                      else cfg.candidates)
        return head_circuit(model, task, cfg.ablation, reference, candidates=candidates,
                            threshold=cfg.threshold, progress=ctx.show_progress,
                            **cfg.attribution)
    if cfg.method == "eap":
        scores = edge_attribution(model, task, ablation=cfg.ablation, reference=reference,
                                  **cfg.attribution)
        return eap_circuit(model, task, top_n=cfg.top_n, scores=scores,
                           runner=CircuitRunner(model, task, cfg.ablation, reference))
    raise ConfigError(f"method must be 'acdc', 'heads' or 'eap', got {cfg.method!r}")


def _answer_attribution(ctx: RunContext, model, task) -> list[str]:
    """For a task with an answer token (``task.info["answer"]``, see
    :class:`~interp.circuits.tasks.PatchingTask`): the direct logit attribution of the clean
    run at the answer position (batch mean) and a page with the logit lens of the first
    prompt and the DLA figures. Returns summary lines (none for models without next-token
    logits, whose refusal is logged)."""
    from interp.attribution import direct_logit_attribution, top_tokens
    from interp.attribution.view import attribution_view
    from interp.errors import Refused
    from interp.viz.attention import token_strings

    info = task.info
    if "answer" not in info:
        return []
    pos = int(info["answer_position"])
    try:
        dla = direct_logit_attribution(model, task.clean, info["answer"], info.get("contrast"),
                                       pos)
    except Refused as exc:
        ctx.log(f"no direct logit attribution: {exc}")
        return []
    what = "logit[answer]" + (" - logit[contrast]" if "contrast" in info else "")
    diff = float(np.mean(dla.attrs["logit_diff"]))
    ctx.add_table("direct_logit_attribution", dla,
                  f"each component's direct share of {what} at position {pos} on the clean "
                  f"prompts (batch mean); the rows sum to {diff:.3f}, the model's own value")
    tok = getattr(model, "tokenizer", None)
    labels = token_strings(tok, task.clean[0]) if tok is not None else None
    lens_top = top_tokens(model, task.clean[:1], k=1)
    ctx.add_html("logit_lens", attribution_view(lens_top, dla, labels,
                                                title=f"{task.name}: logit lens and DLA"),
                 "the top next token read from the residual after each block (first clean "
                 "prompt), and the direct logit attribution above as figures")
    heads = dla[dla.component.str.match(r"^L\d+H\d+$")].sort_values("value", ascending=False)
    top = ", ".join(f"{r.component} ({r.value:+.2f})" for r in heads.head(3).itertuples())
    return [f"- direct logit attribution at position {pos} ({what} = {diff:.3f}): "
            f"strongest heads {top}"]


def _compare_methods(cfg: CircuitsConfig, ctx: RunContext, model, task, reference,
                     runner) -> list[str]:
    """Faithfulness curves of the methods in ``cfg.compare`` (real circuit forwards of each
    method's top-n edges), the smallest circuit reaching 80% per method, its top-5 edges,
    top-k agreement between methods and, on the trained toy, each ranking's ROC AUC against
    the known induction circuit. Adds the tables and one figure; returns summary lines."""
    import pandas as pd
    import plotly.graph_objects as go

    from interp.circuits.evaluation import (compare_methods, edge_rankings, method_agreement,
                                            toy_induction_truth)
    from interp.viz.figures import TEMPLATE

    if not cfg.compare:
        return []
    ctx.log(f"comparing edge rankings: {', '.join(cfg.compare)}")
    rankings = edge_rankings(model, task, cfg.compare, ablation=cfg.ablation,
                             reference=reference, steps=cfg.ig_steps, ig_on=cfg.ig_on,
                             acdc_threshold=cfg.threshold, runner=runner,
                             progress=ctx.show_progress)
    truth = toy_induction_truth(model) if cfg.model == "circuit-toy" and \
        cfg.task == "induction" else None
    points = cfg.quick_curve_points if ctx.quick else cfg.curve_points
    summary, curves = compare_methods(runner, rankings, truth=truth, points=points)
    snd, rcv = runner.senders.name.tolist(), runner.receivers.name.tolist()
    n_rcv = len(rcv)
    tops = []
    for name, r in rankings.items():
        flat = r.order()[:5].tolist()
        tops.append(", ".join(f"{snd[i // n_rcv]} -> {rcv[i % n_rcv]}" for i in flat))
    summary["top_edges"] = tops
    # wall times go into the summary text only: the tables stay byte-identical between runs
    # (a sharded run's tables equal a one-process run's)
    seconds = summary.pop("seconds")
    ctx.add_table("method_comparison", summary,
                  "one row per edge-ranking method (its time is in the summary): auc = ROC AUC "
                  "of its ranking against the known circuit (trained toy only), n_faithful = "
                  "the fewest top-ranked edges whose circuit recovers 80% of clean - corrupted "
                  "(real forwards, exact to one edge), n_edges = edges in the graph, "
                  "top_edges = its five strongest edges")
    ctx.add_table("faithfulness_curves", curves,
                  "each method's circuit of its top n_edges edges, run for real (everything "
                  "else at its ablated value): normalised 0 = corrupted, 1 = clean")
    fig = go.Figure()
    for name, g in curves.groupby("method", sort=False):
        g = g[g.n_edges > 0]
        fig.add_trace(go.Scatter(x=g.n_edges, y=g.normalised, mode="lines+markers", name=name,
                                 hovertemplate=f"{name}<br>%{{x}} edges: %{{y:.3f}}"
                                               f"<extra></extra>"))
    fig.add_hline(y=0.8, line_dash="dot", line_color="#888")
    fig.update_layout(title=f"{task.name}: faithfulness of each method's top-n circuit",
                      template=TEMPLATE, xaxis=dict(title="edges kept", type="log"),
                      yaxis=dict(title="metric recovered (0 corrupted, 1 clean)"), height=420)
    ctx.add_figure("faithfulness_curves", fig,
                   "one line per method: the metric its top-n edges recover as n grows (log "
                   "x); the dotted line is 80%. A line that rises early ranks the edges that "
                   "matter first")
    if len(rankings) > 1:
        k = sorted({min(10, summary.n_edges[0]), min(100, summary.n_edges[0])})
        ctx.add_table("method_agreement", method_agreement(rankings, k),
                      "overlap of the top-k edges of each pair of methods: "
                      "|top-k(a) & top-k(b)| / k")
    lines = []
    for r, sec in zip(summary.itertuples(), seconds):
        n = "never" if pd.isna(r.n_faithful) else f"{int(r.n_faithful)} edges"
        auc = "" if pd.isna(r.auc) else f", ROC AUC {r.auc:.3f} vs the known circuit"
        lines.append(f"- {r.method}: 80% of the metric at {n} of {r.n_edges} "
                     f"({sec:.1f} s to rank every edge{auc}); top edges {r.top_edges}")
    return lines


def _induction_overlap(ctx: RunContext, model, circuit) -> list[str]:
    """Summary lines: how many of the top-5 induction / previous-token heads of
    :func:`interp.probes.induction.induction_scores` are in the circuit (adds the scores)."""
    from interp.probes.induction import induction_scores, top_heads

    # the #4 probe (seg_len 50), shortened to fit a small context (the toy: 49 tokens)
    scores_df = induction_scores(model, seg_len=min(50, (model.cfg.n_ctx - 1) // 2))
    ctx.add_table("induction_scores", scores_df,
                  "attention scores of every head on repeated random tokens (the induction "
                  "probe): the top induction and previous-token heads are compared with the "
                  "circuit's heads in the summary (a * marks a head that is in the circuit)")
    mine = set(circuit.heads)
    lines = []
    for col in ("induction", "previous_token"):
        top = [f"L{l}H{h}" for l, h in top_heads(scores_df, col, 5)]
        lines.append(f"- top-5 {col} heads in the circuit: {len(mine & set(top))}/5 "
                     f"({', '.join(h + ('*' if h in mine else '') for h in top)})")
    return lines


@experiment("circuits", CircuitsConfig)
def run_circuits(cfg: CircuitsConfig, ctx: RunContext) -> None:
    """Patching, attribution and discovery for one model and task."""
    from interp.circuits.discovery import circuit_figure
    from interp.circuits.runner import CircuitRunner
    from interp.circuits.standard_tasks import require_task_works

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = _load_model(cfg, ctx)
    if ctx.quick:
        batch = cfg.quick_batch if cfg.quick_batch > 0 else max(2, cfg.batch // 4)
    else:
        batch = cfg.batch
    make = _task_maker(cfg, model)
    task = make(batch, cfg.seed)
    reference = make(cfg.ref_batch, cfg.seed + 1000).clean if cfg.ablation == "mean" else None
    ref = require_task_works(model, task)        # Refused: the model does not do the task
    ctx.log(f"{cfg.task} on {cfg.model}: clean metric {ref['clean']:.3f}, corrupted "
            f"{ref['corrupted']:.3f}")
    ctx.log("activation patching (heads" + (", residual" if cfg.residual_patching else "")
            + ")")
    heads = _patching(cfg, ctx, model, task, batch)
    ctx.log(f"node attribution ({cfg.attribution_method})")
    na, corr, rank = _attribution(cfg, ctx, model, task, heads, ref["corrupted"])
    ctx.log(f"circuit discovery ({cfg.method})")
    circuit = _discover(cfg, ctx, model, task, reference)
    ctx.log("the circuit on the task and a held-out batch, and its figure")
    runner = CircuitRunner(model, task, cfg.ablation, reference)
    held = CircuitRunner(model, make(batch, cfg.seed + 1), cfg.ablation, reference)
    held_out = held.normalised(held.metric(circuit.mask))
    ctx.add_table("circuit_edges", circuit.edges,
                  f"the edges of the found circuit ({cfg.method}), strongest first: sender -> "
                  f"receiver's input (q, k, v of a head, 'in' of an MLP or the logits) with its "
                  f"attribution score; layer -1 is the embeddings, head -1 a node that is not a "
                  f"head")
    ctx.add_table("circuit_nodes", circuit.nodes,
                  "the nodes the circuit's edges touch; score = the summed |score| of their "
                  "edges; head -1 marks MLPs, embeddings and logits")
    ctx.add_figure("circuit", circuit_figure(circuit, f"{cfg.task} circuit", runner=runner),
                   "the circuit as a graph, layers left to right (embeddings left, logits "
                   "right): edge width = |score|, colour = the receiver's input; the slider "
                   "shows the strongest n edges (it opens on a readable size)")
    s = circuit.summary()
    lines = [
        "## Summary",
        f"- clean metric {ref['clean']:.3f}, corrupted {ref['corrupted']:.3f}",
        f"- attribution ({cfg.attribution_method}) vs head patching ({len(na)} heads): "
        f"Pearson r = {corr:.3f}, "
        f"Spearman rho = {rank:.3f}",
        f"- circuit ({cfg.method}, {cfg.ablation} ablation): {s['n_heads']} heads, "
        f"{s['n_edges']} edges; heads {', '.join(circuit.heads)}",
        f"- recovers {s['normalised']:.3f} of the clean - corrupted metric alone "
        f"({held_out:.3f} on a held-out batch)",
    ]
    lines += _compare_methods(cfg, ctx, model, task, reference, runner)
    if "answer" in task.info:
        ctx.log("direct logit attribution and logit lens of the clean run")
    lines += _answer_attribution(ctx, model, task)
    if cfg.task == "induction":
        ctx.log("induction probe: the circuit's heads vs the top induction heads")
        lines += _induction_overlap(ctx, model, circuit)
    ctx.add_text("\n".join(lines), at_top=True)
