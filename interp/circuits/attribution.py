"""Attribution patching (Syed et al. 2023; EAP): first-order estimates of patching effects for
every head and every edge of the head graph from one clean forward, one corrupted forward and
one backward.

- Node score of head h: ``sum_{batch,pos} (z_clean - z_corr)[h] . d metric / d z[h]`` at the
  corrupted run (``hook_z``, ``[batch, pos, head, d_head]``): estimates patching the head's
  clean output into the corrupted run (``patch_heads(direction="denoise")`` minus the
  corrupted metric).
- Edge score sender -> receiver input: ``sum (out_clean - out_corr)[sender] . g_r`` where
  ``g_r = d metric / d input_r`` is the gradient with respect to the residual stream as read by
  that receiver input only (for head q/k/v: the gradient at ``hook_q/k/v`` pulled back through
  that head's projection and ``ln1`` with the model's own modules; MLP: at ``ln2.hook_in``;
  logits: at ``ln_final.hook_in``). It estimates adding the edge to the empty circuit
  (:mod:`interp.circuits.runner`), i.e. path patching the sender into that input.
With ``ablation="mean"`` (see :mod:`interp.circuits.runner`) the base values are per-position
means over ``reference`` tokens and the gradient is taken at the *clean* run:
``(out_clean - out_mean) . d metric / d input`` estimates how much the metric drops when that
head (edge) is mean-ablated in the clean run, the first-order version of removing it from the
full circuit. Either way a positive score means the component carries clean behaviour.
Scores are in metric units; divide by ``clean - corrupted`` for the normalised scale.

Per family: node scores take the gradient at ``hook_z`` of the model's own forward (every
family, encoders included). Edge scores need the graph (:class:`~interp.circuits.graph.
HeadGraph`; encoders refused) and use what it rebuilds, checked against the run's own
activations first (:func:`~interp.circuits.graph.check_graph`). A sender's output difference
is ``write(z_run with the sender at its clean value) - write(z_run with it at its base
value)`` through the layer's own output projection and, on Gemma 2/3, its post-attention norm
(for layers without that norm this is ``(z_clean - z_base)[h] @ W_O[h]``); in parallel blocks
(GPT-NeoX) a layer's heads do not feed its own MLP.

``method="eap-ig"`` (:func:`node_attribution`, :func:`edge_attribution`) keeps these sender
differences and replaces the gradient by its average over ``steps`` runs along a straight path
from the base to the clean values, of the input embeddings (``ig_on="inputs"``, Hanna et al.
2024) or of each node's own activation (``ig_on="activations"``, Marks et al. 2024); see
:mod:`interp.circuits.integrated`. ``method="eap"`` (default) is the one-gradient estimate above.
"""
from __future__ import annotations

import pandas as pd
import torch

from interp.circuits.graph import HeadGraph, check_graph
from interp.circuits.model import (attn_write, head_outputs, post_attention_norm, project,
                                   run_cache)
from interp.circuits.runner import base_cache
from interp.circuits.tasks import PatchingTask


def _grad_names(g: HeadGraph | None, n_layers: int) -> list[str]:
    names = [f"blocks.{l}.attn.hook_z" for l in range(n_layers)]
    if g is None:
        return names
    names.append("ln_final.hook_in")
    for l in range(g.n_layers):
        names += [f"blocks.{l}.attn.hook_q", f"blocks.{l}.attn.hook_k", f"blocks.{l}.attn.hook_v"]
        if g.mlps:
            names.append(f"blocks.{l}.ln2.hook_in")
    return names


def attribution_cache(model, task: PatchingTask, ablation: str = "corrupted",
                      reference: torch.Tensor | None = None) -> dict:
    """Clean activations, base activations (corrupted run, or reference means) and the
    activations and metric gradients of the run the estimate linearises at (``"run"``: the
    corrupted run, or the clean run with ``ablation="mean"``). Where the edge graph does not
    apply (encoders) only what node scores need is cached and ``"graph_error"`` holds the
    refusal that :func:`edge_attribution` raises."""
    task = task.checked(model)
    L = model.cfg.n_layers
    try:
        g, graph_error = HeadGraph.of(model), None
    except NotImplementedError as err:
        g, graph_error = None, err
    acts = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.attn.hook_z" for l in range(L)]
    if g is not None:
        acts += [f"blocks.{l}.hook_resid_pre" for l in range(L)]
        if g.mlps:
            acts += [f"blocks.{l}.hook_mlp_out" for l in range(L)]
    acts = list(dict.fromkeys(acts))
    names = list(dict.fromkeys(acts + _grad_names(g, L)))
    if g is not None:                          # for check_graph on the run
        names += [f"blocks.{l}.hook_attn_out" for l in range(L)]
    if ablation == "corrupted":
        _, clean = run_cache(model, task.clean, acts)
        m, run = run_cache(model, task.corrupted, names, grad_metric=task.metric)
        base = run
    else:
        base = base_cache(model, task, acts, ablation, reference)
        m, run = run_cache(model, task.clean, names, grad_metric=task.metric)
        clean = run
    if g is not None:
        check_graph(model, g, run, "edge_attribution")
    return {"clean": clean, "base": base, "run": run, "graph": g, "ablation": ablation,
            "run_metric": m, "graph_error": graph_error}


def node_attribution(model, task: PatchingTask, cache: dict | None = None, *,
                     method: str = "eap", steps: int = 5, ig_on: str = "inputs",
                     max_batch: int | None = None, **kw) -> pd.DataFrame:
    """Attribution score of every head: DataFrame ``layer, head, score`` (``n_layers *
    n_heads`` rows), ``score = sum_{batch,pos,d_head} (z_clean - z_base)[h] * gradient at
    hook_z [batch, pos, head, d_head]``.

    Args:
        cache: an :func:`attribution_cache` of ``task`` (computed when None, with ``kw``:
            ``ablation``, ``reference``); EAP-IG results are memoised in it.
        method: ``"eap"`` (the gradient of the run, module doc) or ``"eap-ig"`` (the mean
            gradient over ``steps`` interpolated runs, :mod:`interp.circuits.integrated`).
        steps, ig_on, max_batch: EAP-IG's number of points (``alpha = k / steps``,
            ``k = 1..steps``), what is interpolated (``"inputs"``: the input embeddings;
            ``"activations"``: each layer's ``hook_z``, one layer at a time) and the most rows
            per forward (None: one point per forward, the least memory; an integer puts
            ``max_batch // batch`` points in one forward, for a GPU). Ignored by ``"eap"``.

    Raises:
        InputError: unknown ``method`` / ``ig_on``, ``steps`` or ``max_batch`` not >= 1.
    """
    from interp.circuits.integrated import check_method, ig_attribution

    check_method(method, steps, ig_on, max_batch)
    c = cache or attribution_cache(model, task, **kw)
    grads = c["run"] if method == "eap" else \
        ig_attribution(model, task, c, steps, ig_on, max_batch, edges=False)["grads"]
    rows = []
    for l in range(model.cfg.n_layers):
        n = f"blocks.{l}.attn.hook_z"
        s = ((c["clean"][n] - c["base"][n]) * grads["grad:" + n]).sum(dim=(0, 1, 3))
        rows += [{"layer": l, "head": h, "score": float(s[h])} for h in range(len(s))]
    return pd.DataFrame(rows)


@torch.no_grad()
def _head_deltas(model, c: dict, layer: int) -> torch.Tensor:
    """``[head, batch, pos, d_model]``: each head's output difference (clean minus base) as
    the layer writes it into the residual stream, the other heads at their value in the run
    (see module doc)."""
    n = f"blocks.{layer}.attn.hook_z"
    clean, base = c["clean"][n], c["base"][n]
    if post_attention_norm(model, layer) is None:
        return head_outputs(model, layer, clean - base)
    run = c["run"][n]
    out = []
    for h in range(run.shape[2]):
        hi, lo = run.clone(), run.clone()
        hi[:, :, h] = clean[:, :, h]
        lo[:, :, h] = base.expand_as(run)[:, :, h]
        out.append(attn_write(model, layer, hi) - attn_write(model, layer, lo))
    return torch.stack(out)


@torch.no_grad()
def _sender_deltas(model, c: dict) -> torch.Tensor:
    """``[n_senders, batch, pos, d_model]`` clean-minus-base residual writes."""
    g: HeadGraph = c["graph"]
    out = [c["clean"]["blocks.0.hook_resid_pre"] - c["base"]["blocks.0.hook_resid_pre"]]
    for l in range(g.n_layers):
        out += list(_head_deltas(model, c, l))
        if g.mlps:
            n = f"blocks.{l}.hook_mlp_out"
            out.append(c["clean"][n] - c["base"][n])
    return torch.stack([o.expand_as(out[-1]) for o in out])


def _receiver_grads(model, c: dict, layer: int, rows: pd.DataFrame) -> torch.Tensor:
    """Gradients ``[len(rows), batch, pos, d_model]`` w.r.t. each receiver input of a layer."""
    corr = c["run"]
    grads = []
    for r in rows.itertuples():
        if r.node == "logits":
            grads.append(corr["grad:ln_final.hook_in"])
        elif r.input == "in":
            grads.append(corr[f"grad:blocks.{layer}.ln2.hook_in"])
        else:
            x = corr[f"blocks.{layer}.hook_resid_pre"].clone().requires_grad_(True)
            g_out = corr[f"grad:blocks.{layer}.attn.hook_{r.input}"][:, :, r.head]
            with torch.enable_grad():
                y = project(model, layer, r.input, x, r.head)
                (gx,) = torch.autograd.grad(y, x, grad_outputs=g_out.to(y.dtype))
            grads.append(gx)
    return torch.stack(grads)


def edge_attribution(model, task: PatchingTask, cache: dict | None = None, *,
                     method: str = "eap", steps: int = 5, ig_on: str = "inputs",
                     max_batch: int | None = None, **kw) -> torch.Tensor:
    """Edge scores ``[n_senders, n_receivers]`` float64 (0 where no edge exists); rows/columns
    follow ``HeadGraph.of(model).senders()`` / ``.receivers()``; ``kw``: ``ablation``,
    ``reference`` of :func:`attribution_cache`. ``method``, ``steps``, ``ig_on``,
    ``max_batch`` as in :func:`node_attribution` (``"eap-ig"`` with ``ig_on="activations"``
    interpolates the embedding, each layer's heads together and each MLP in turn).

    Raises:
        Refused: (a ``NotImplementedError``) the graph does not apply (encoders, ...).
        InputError: bad ``method`` / ``steps`` / ``ig_on`` / ``max_batch``.
    """
    from interp.circuits.integrated import check_method, ig_attribution

    check_method(method, steps, ig_on, max_batch)
    c = cache or attribution_cache(model, task, **kw)
    if c.get("graph") is None:
        raise c["graph_error"]
    if method == "eap-ig":
        return ig_attribution(model, task, c, steps, ig_on, max_batch)["edges"]
    g: HeadGraph = c["graph"]
    deltas = _sender_deltas(model, c).flatten(1)                          # [S, b*n*d]
    rcv = g.receivers()
    scores = torch.zeros(len(deltas), len(rcv), dtype=torch.float64)
    for layer, rows in rcv.groupby("layer", sort=True):
        grads = _receiver_grads(model, c, int(layer), rows).flatten(1)   # [R_l, b*n*d]
        cols = torch.as_tensor(rows.index.to_list())
        scores[:, cols] = (deltas @ grads.T).detach().double()
    return scores * g.valid()


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length sequences (Pearson r of the ranks, ties
    at their mean rank)."""
    ra = pd.Series(list(a), dtype=float).rank().to_numpy()
    rb = pd.Series(list(b), dtype=float).rank().to_numpy()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float((ra @ ra) * (rb @ rb)) ** 0.5
    return float("nan") if den == 0 else float(ra @ rb) / den
