"""Automated circuit discovery on the head graph (:mod:`interp.circuits.graph`).

- :func:`acdc` (Conmy et al. 2023, greedy with real patching): start from the full graph;
  visit receivers from the logits backwards, and for each incoming edge remove it if the
  normalised metric of the circuit moves by less than ``threshold``. One forward per edge:
  for small models (the toy has 81 edges).
- :func:`eap_circuit` (Syed et al. 2023): keep the ``top_n`` edges by ``|EAP score|`` (or those
  over ``threshold``), then evaluate with real patching. Cheap for any size. With
  ``method="eap-ig"`` the scores are EAP-IG's (Hanna et al. 2024; ``steps`` interpolated runs,
  :mod:`interp.circuits.integrated`), which Hanna et al. find more faithful.
- :func:`head_circuit` (for deep models): node-level first. Heads are ranked by attribution
  (by default against mean ablation, gradient at the clean run); the ``candidates`` best form
  the start circuit, with every MLP, the embedding and every edge among kept nodes; then,
  least important first, a head is removed when real patching says the normalised metric
  drops by less than ``threshold`` (one forward per candidate). Only heads are pruned: MLPs
  are position-wise, so without heads no information moves between positions and the
  MLP-only circuit scores exactly the empty circuit's metric. On smollm2-135m (induction,
  batch 4, seg_len 10, 60 candidates, threshold 0.01) it keeps 22 of 270 heads, recovering
  0.98 of the clean - corrupted metric (0.98-1.05 on held-out batches), with 3 of the top-5
  induction heads and the top previous-token head. Pruning edges further by EAP score inside
  that node circuit loses recovery fast (top 1200 of its 2457 edges: 0.63; top 300: 0.24),
  so the circuit keeps every edge among its nodes.
All prune edges that are not on a path from ``embed`` to ``logits`` (a sender without inputs
in the circuit writes exactly its corrupted output, so its out-edges carry nothing) and return
a :class:`Circuit`: node and edge DataFrames with scores and the metric recovered by the
circuit alone (everything outside it patched to the corrupted run).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import torch

from interp.circuits.attribution import attribution_cache, edge_attribution, node_attribution
from interp.circuits.graph import HeadGraph
from interp.circuits.integrated import check_method
from interp.circuits.runner import CircuitRunner
from interp.circuits.tasks import PatchingTask


@dataclass
class Circuit:
    """A discovered circuit.

    Attributes:
        nodes: ``node, kind, layer, head, score`` (score: summed |edge score| touching it).
        edges: ``sender, receiver, input, sender_layer, receiver_layer, score``.
        mask: ``[n_senders, n_receivers]`` bool edge mask.
        metric, normalised: metric of the circuit alone (normalised: 0 corrupted, 1 clean).
        clean, corrupted: metrics of the full clean / corrupted runs.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    mask: torch.Tensor
    metric: float
    normalised: float
    clean: float
    corrupted: float

    @property
    def heads(self) -> list[str]:
        return self.nodes[self.nodes.kind == "head"].node.tolist()

    def summary(self) -> dict:
        return {"n_edges": len(self.edges), "n_nodes": len(self.nodes),
                "n_heads": len(self.heads), "metric": self.metric,
                "normalised": self.normalised, "clean": self.clean, "corrupted": self.corrupted}


def _node_of_receiver(g: HeadGraph) -> list[list[str]]:
    """Sender names that each receiver column belongs to (a KV group under GQA: all its heads)."""
    out = []
    for r in g.receivers().itertuples():
        if r.node == "logits":
            out.append(["logits"])
        elif r.input == "in":
            out.append([r.node])
        elif r.input == "q" or g.group == 1:
            out.append([f"L{r.layer}H{r.head}"])
        else:
            out.append([f"L{r.layer}H{h}" for h in range(r.head * g.group, (r.head + 1) * g.group)])
    return out


def prune(g: HeadGraph, mask: torch.Tensor) -> torch.Tensor:
    """Keep only edges on a path embed -> ... -> logits."""
    mask = mask & g.valid()
    snd = g.senders().name.tolist()
    owners = _node_of_receiver(g)
    sidx = {n: i for i, n in enumerate(snd)}
    while True:
        # forward reachability from embed
        reach = {"embed"}
        changed = True
        while changed:
            changed = False
            for j, own in enumerate(owners):
                if any(mask[sidx[n], j] for n in reach if n in sidx):
                    for o in own:
                        if o not in reach:
                            reach.add(o)
                            changed = True
        # backward reachability from logits
        useful = {"logits"}
        changed = True
        while changed:
            changed = False
            for j, own in enumerate(owners):
                if any(o in useful for o in own):
                    for i in mask[:, j].nonzero(as_tuple=True)[0].tolist():
                        if snd[i] not in useful:
                            useful.add(snd[i])
                            changed = True
        keep = torch.zeros_like(mask)
        for j, own in enumerate(owners):
            if any(o in useful for o in own):
                for i in mask[:, j].nonzero(as_tuple=True)[0].tolist():
                    if snd[i] in reach and snd[i] in useful:
                        keep[i, j] = True
        if torch.equal(keep, mask):
            return mask
        mask = keep


def _circuit(runner: CircuitRunner, mask: torch.Tensor, scores: torch.Tensor,
             node_scores: dict[str, float] | None = None) -> Circuit:
    g = runner.graph
    mask = prune(g, mask)
    edges = g.edges_frame(scores.float(), mask)
    m = runner.metric(mask)
    weight: dict[str, float] = {}
    for e in edges.itertuples():
        weight[e.sender] = weight.get(e.sender, 0.0) + abs(e.score)
        weight[e.receiver] = weight.get(e.receiver, 0.0) + abs(e.score)
    if node_scores:
        weight.update({n: v for n, v in node_scores.items() if n in weight})
    snd = g.senders().set_index("name")
    rows = []
    for n, w in weight.items():
        if n in snd.index:
            r = snd.loc[n]
            rows.append({"node": n, "kind": r["kind"], "layer": int(r["layer"]),
                         "head": int(r["head"]),
                         "score": w})
        elif n == "logits":
            rows.append({"node": n, "kind": "logits", "layer": g.n_layers, "head": -1,
                         "score": w})
        else:   # a KV group receiver under GQA
            rows.append({"node": n, "kind": "kv_group", "layer": int(n[1:n.index("K")]),
                         "head": int(n.split("KV")[1]), "score": w})
    nodes = pd.DataFrame(rows, columns=["node", "kind", "layer", "head", "score"])
    nodes = nodes.sort_values(["layer", "head"]).reset_index(drop=True)
    return Circuit(nodes, edges, mask, m, runner.normalised(m), runner.clean_metric,
                   runner.corrupted_metric)


def eap_circuit(model, task: PatchingTask, top_n: int | None = 20,
                threshold: float | None = None, runner: CircuitRunner | None = None,
                scores: torch.Tensor | None = None, method: str = "eap", steps: int = 5,
                ig_on: str = "inputs", max_batch: int | None = None) -> Circuit:
    """Circuit of the edges with the largest ``|score|``: the ``top_n`` best, or all with
    ``|score| / |clean - corrupted| >= threshold``; evaluated with real patching.

    Args:
        scores: ``[n_senders, n_receivers]`` edge scores; when None they are computed by
            :func:`~interp.circuits.attribution.edge_attribution` with ``method`` (``"eap"``
            or ``"eap-ig"``), ``steps``, ``ig_on``, ``max_batch`` (ablation: corrupted).

    Raises:
        InputError: bad ``method`` / ``steps`` / ``ig_on`` / ``max_batch``.
    """
    check_method(method, steps, ig_on, max_batch)
    runner = runner or CircuitRunner(model, task)
    if scores is None:
        scores = edge_attribution(model, task, method=method, steps=steps, ig_on=ig_on,
                                  max_batch=max_batch)
    flat = scores.abs().flatten()
    if threshold is not None:
        den = abs(runner.clean_metric - runner.corrupted_metric) or 1.0
        mask = (scores.abs() / den) >= threshold
    else:
        keep = flat.topk(min(int(top_n), int((flat > 0).sum()))).indices
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[keep] = True
        mask = mask.view_as(scores)
    return _circuit(runner, mask, scores)


def acdc(model, task: PatchingTask, threshold: float = 0.02, progress: bool = True,
         runner: CircuitRunner | None = None) -> Circuit:
    """Greedy ACDC with real patching: remove every edge whose removal changes the normalised
    metric by less than ``threshold`` (receivers visited from logits backwards). Edge scores
    are the normalised metric drop when the edge was tried."""
    from tqdm.auto import tqdm

    runner = runner or CircuitRunner(model, task)
    g = runner.graph
    mask = g.valid().clone()
    scores = torch.zeros(mask.shape, dtype=torch.float64)
    current = runner.normalised(runner.metric(mask))
    order = g.receivers().sort_values("stage", ascending=False, kind="stable").index.tolist()
    todo = [(i, j) for j in order for i in mask[:, j].nonzero(as_tuple=True)[0].tolist()]
    for i, j in tqdm(todo, desc="ACDC", disable=not progress):
        mask[i, j] = False
        new = runner.normalised(runner.metric(mask))
        scores[i, j] = current - new
        if abs(current - new) < threshold:
            current = new
        else:
            mask[i, j] = True
    return _circuit(runner, mask, scores)


def node_mask(g: HeadGraph, heads) -> torch.Tensor:
    """Every edge among ``heads``, all MLPs, the embedding and the logits."""
    keep = set(heads) | {"embed", "logits"} | {f"MLP{l}" for l in range(g.n_layers)}
    s_ok = torch.tensor([n in keep for n in g.senders().name])
    r_ok = torch.tensor([any(o in keep for o in own) for own in _node_of_receiver(g)])
    return s_ok[:, None] & r_ok[None, :] & g.valid()


def head_circuit(model, task: PatchingTask, ablation: str = "mean",
                 reference: torch.Tensor | None = None, candidates: int = 60,
                 threshold: float = 0.01, progress: bool = True,
                 runner: CircuitRunner | None = None, cache: dict | None = None,
                 method: str = "eap", steps: int = 5, ig_on: str = "inputs",
                 max_batch: int | None = None) -> Circuit:
    """Node-level discovery (see module doc): attribution ranks the heads, real patching prunes
    the ``candidates`` best greedily (least important first; a head goes when the normalised
    metric drops by less than ``threshold``). Node scores of heads are the attribution
    scores; edge scores are attribution scores under the same ablation, both of ``method``
    (``"eap"`` or ``"eap-ig"`` with ``steps``, ``ig_on``, ``max_batch``: see
    :func:`~interp.circuits.attribution.node_attribution`). ``reference``: tokens whose
    per-position means are the base values with ``ablation="mean"``."""
    from tqdm.auto import tqdm

    check_method(method, steps, ig_on, max_batch)
    ig = dict(method=method, steps=steps, ig_on=ig_on, max_batch=max_batch)
    runner = runner or CircuitRunner(model, task, ablation, reference)
    g = runner.graph
    cache = cache or attribution_cache(model, task, ablation, reference)
    na = node_attribution(model, task, cache, **ig)
    na["node"] = [f"L{l}H{h}" for l, h in zip(na.layer, na["head"])]
    order = na.reindex(na.score.abs().sort_values(ascending=False).index).node.tolist()
    keep = order[:candidates]
    current = runner.normalised(runner.metric(node_mask(g, keep)))
    for h in tqdm(order[:candidates][::-1], desc="prune heads", disable=not progress):
        trial = [k for k in keep if k != h]
        new = runner.normalised(runner.metric(node_mask(g, trial)))
        if current - new < threshold:
            keep, current = trial, new
    scores = edge_attribution(model, task, cache, **ig)
    return _circuit(runner, node_mask(g, keep), scores, dict(zip(na.node, na.score)))


# ------------------------------------------------------------------------------------ figures
def circuit_figure(circuit: Circuit, title: str = "circuit", runner: CircuitRunner | None = None,
                   **view) -> go.Figure:
    """The circuit as a readable graph with a slider over its top-n edges (by ``|score|``):
    :func:`interp.circuits.circuit_view.circuit_view` on ``circuit.edges`` and ``circuit.nodes``
    (layers left to right, heads stacked, KV heads, MLPs, embed and logits in their own lanes;
    width by score, colour by the receiver's input). It opens on the smallest top-n reaching
    0.8 of the clean - corrupted metric, at most 60 edges: measured with real patching, one
    forward per slider step, when ``runner`` (the circuit's
    :class:`~interp.circuits.runner.CircuitRunner`) is given, else estimated from the share of
    ``|score|``. ``view``: more keyword arguments of ``circuit_view`` (``sizes``, ``default``,
    ``recovered``, ``effect``, ``target``, ``max_default``, ``full_labels``). A circuit
    without edges gives an empty figure that says so."""
    from interp.circuits.circuit_view import circuit_view, recovery_curve

    whole = (f"whole circuit: {len(circuit.edges):,} edges, {len(circuit.heads)} heads, "
             f"recovers {circuit.normalised:.2f} of clean − corrupted")
    if len(circuit.edges) == 0:
        fig = go.Figure()
        fig.update_layout(title=f"{title}: no edges ({whole})", template="plotly_white",
                          height=300, xaxis_visible=False, yaxis_visible=False,
                          annotations=[dict(text="the circuit has no edges", showarrow=False,
                                            x=0.5, y=0.5, xref="paper", yref="paper")])
        return fig
    if runner is not None and "recovered" not in view:
        view["recovered"] = recovery_curve(runner, circuit.edges, view.get("sizes"))
    view.setdefault("note", whole)
    return circuit_view(circuit.edges, circuit.nodes, title=title, **view)


def position_heatmap(df: pd.DataFrame, value: str = "normalised",
                     title: str = "residual-stream patching") -> go.Figure:
    """Layer x position heatmap of a :func:`patch_residual` table."""
    grid = df.pivot(index="layer", columns="pos", values=value).sort_index()
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(float), x=list(grid.columns), y=list(grid.index),
                               colorscale="RdBu", zmid=0, colorbar=dict(title=value)))
    fig.update_layout(title=title, template="plotly_white", xaxis_title="position",
                      yaxis=dict(title="layer", autorange="reversed"))
    return fig


__all__ = ["Circuit", "acdc", "eap_circuit", "head_circuit", "node_mask", "prune", "circuit_figure",
           "position_heatmap",
           "node_attribution", "attribution_cache"]
