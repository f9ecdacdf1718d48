"""Integrated-gradient attribution patching: EAP-IG for the edges and nodes of the head graph.

EAP (:mod:`interp.circuits.attribution`) multiplies a sender's output difference by the metric's
gradient at one point, the run it linearises at. EAP-IG replaces that gradient by its average
along a straight path between the base (corrupted, or mean) and the clean values, so the
scores add up to the real metric difference (completeness) instead of a first-order guess.

Riemann rule: ``steps`` points ``alpha_k = k / steps``, ``k = 1 .. steps`` (the right Riemann
sum of Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks", Sec. 5;
``alpha = 1`` is the clean end, ``alpha = 0`` is left out), each weighted ``1 / steps``. With
``steps=1`` the gradient is taken at the clean end only. The error is ``O(1 / steps)``.

``ig_on="inputs"`` (Hanna, Pezzelle & Belinkov 2024, "Have Faith in Faithfulness: Going Beyond
Circuit Overlap When Finding Model Mechanisms"): the input embeddings (the residual stream
entering block 0, ``blocks.0.hook_resid_pre``, ``[batch, pos, d_model]``) are set to
``base + alpha (clean - base)`` and the whole model runs from there; every gradient (receiver
inputs for edges, ``hook_z`` for nodes, ``hook_resid_pre`` of block 0 for
:func:`input_attribution`) is averaged over the ``steps`` runs. Edge score =
``(out_clean - out_base)[sender] . mean_k d metric / d input_r`` (the receiver gradient of EAP:
the residual stream as read by that input only). Cost: ``steps`` forwards + backwards of the
batch: one point per forward by default, ``max_batch // batch`` points per forward when
``max_batch`` is given. One at a time is the default because the saved activations of a
forward grow with its rows: on Qwen2.5-Coder-0.5B (docstring task, 8 x 37 tokens, 5 steps,
CPU) all 5 points in one forward peak at 11.6 GB RSS and take 69 s, one per forward at 5.3 GB
and 55 s (same scores).

``ig_on="activations"`` (Marks et al. 2024, "Sparse Feature Circuits", integrated gradients
per submodule): each *node* is interpolated on its own, everything else running normally
from the run's tokens. Nodes: the embedding (``blocks.0.hook_resid_pre``), the heads of one
layer together (``blocks.{l}.attn.hook_z`` ``[batch, pos, head, d_head]``, all heads of the
layer at once, as Marks et al. interpolate a whole submodule) and each MLP
(``blocks.{l}.hook_mlp_out``). For node N at ``alpha``, N's activation is
``base_N + alpha (clean_N - base_N)``; a head's node score is ``(z_clean - z_base)[h] . mean
gradient at hook_z`` of its layer's runs, and an edge ``u -> r`` scores
``(out_clean - out_base)[u] . mean_k g_r`` with ``g_r`` taken in the runs where u's node is
interpolated. Cost: ``steps`` forwards + backwards per node: ``n_layers`` nodes for node
scores, ``1 + n_layers (+ n_layers MLPs)`` for edge scores.

The run that hosts the interpolation is the one EAP linearises at: the corrupted tokens with
``ablation="corrupted"`` (so a layer's node scores add up to patching all its heads' clean
outputs into the corrupted run), the clean tokens with ``ablation="mean"`` (the base is then
the per-position mean; with ``ig_on="inputs"`` the path starts at the mean embedding).
Sender output differences are EAP's (:func:`~interp.circuits.attribution.edge_attribution`).
"""
from __future__ import annotations

import torch

from interp.circuits.attribution import _receiver_grads, _sender_deltas
from interp.circuits.graph import HeadGraph
from interp.circuits.model import activation_grads, grad_hooks
from interp.circuits.tasks import PatchingTask
from interp.errors import InputError
from interp.hooks import attach

METHODS = ("eap", "eap-ig")
IG_ON = ("inputs", "activations")
EMBED = "blocks.0.hook_resid_pre"


def check_method(method: str, steps: int = 5, ig_on: str = "inputs",
                 max_batch: int | None = None) -> None:
    """Raise :class:`~interp.errors.InputError` for an unknown ``method`` (``"eap"`` or
    ``"eap-ig"``), ``ig_on`` (``"inputs"`` or ``"activations"``), ``steps`` that is not an
    integer >= 1 or ``max_batch`` that is neither None nor an integer >= 1."""
    if method not in METHODS:
        raise InputError(f"attribution method must be one of {list(METHODS)}, got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps (integrated-gradient points) must be an integer >= 1, "
                         f"got {steps!r}")
    if ig_on not in IG_ON:
        raise InputError(f"ig_on must be one of {list(IG_ON)}, got {ig_on!r}")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int)
                                  or max_batch < 1):
        raise InputError(f"max_batch must be None or an integer >= 1, got {max_batch!r}")


def ig_alphas(steps: int) -> torch.Tensor:
    """``[steps]`` float64: the interpolation points ``k / steps``, ``k = 1 .. steps``."""
    return torch.arange(1, steps + 1, dtype=torch.float64) / steps


def _chunks(steps: int, batch: int, max_batch: int | None) -> list[torch.Tensor]:
    """The alphas split so that a forward holds at most ``max_batch`` rows (at least one
    point per forward; None: one point per forward)."""
    per = 1 if max_batch is None else max(1, max_batch // batch)
    return list(ig_alphas(steps).split(per))


def _interpolated_run(model, tokens: torch.Tensor, metric, point: str, base: torch.Tensor,
                      clean: torch.Tensor, alphas: torch.Tensor, names: list[str],
                      grad_names: list[str]) -> tuple[dict, torch.Tensor]:
    """One forward + backward of ``len(alphas)`` copies of ``tokens [b, n]`` (copy ``k`` is
    rows ``k*b .. (k+1)*b-1``), with activation ``point`` set to ``base + alpha_k (clean -
    base)`` in copy ``k`` (``clean`` ``[b, ...]``, ``base`` ``[b or 1, ...]``, hook layout);
    the metric is summed over the copies. Returns the cache (activations ``names`` and
    gradients ``"grad:" + n`` for ``grad_names``, ``[A*b, ...]``, detached) and the
    gradient at ``point`` (``[A*b, ...]``)."""
    A, b = len(alphas), clean.shape[0]
    a = alphas.to(clean.device, torch.float32).view(A, *[1] * clean.dim())
    x = (base.float() + a * (clean.float() - base.float())).to(clean.dtype)
    x = x.reshape(A * b, *clean.shape[1:]).detach().requires_grad_(True)
    cache: dict[str, torch.Tensor] = {}

    def saver(key: str):
        def fn(act, hook):
            cache[key] = act.detach()

        return fn

    live: dict[str, torch.Tensor] = {}
    fwd = ([(point, lambda act, hook: x)] + [(n, saver(n)) for n in names]
           + grad_hooks(grad_names, live))
    with torch.enable_grad(), attach(model, fwd):
        logits = model(tokens.repeat(A, 1))
        m = sum(metric(logits[k * b:(k + 1) * b]) for k in range(A))
    grads = activation_grads(m, {**live, "point": x})
    cache.update({k: v for k, v in grads.items() if k != "grad:point"})
    return cache, grads["grad:point"]


def _reads(g: HeadGraph, rows) -> tuple[list[str], list[str]]:
    """Activations and gradients that the receiver rows' gradients are pulled back from."""
    names, grads = [], []
    for r in rows.itertuples():
        if r.node == "logits":
            grads.append("ln_final.hook_in")
        elif r.input == "in":
            grads.append(f"blocks.{r.layer}.ln2.hook_in")
        else:
            names.append(f"blocks.{r.layer}.hook_resid_pre")
            grads.append(f"blocks.{r.layer}.attn.hook_{r.input}")
    return list(dict.fromkeys(names)), list(dict.fromkeys(grads))


def _add_edges(model, run: dict, rows, deltas: torch.Tensor, out: torch.Tensor,
               sender_rows: list[int], A: int, b: int) -> None:
    """``out[sender_rows, rows] += deltas . (receiver gradients summed over the A copies)``;
    ``deltas`` ``[len(sender_rows), b*n*d]``."""
    for layer, part in rows.groupby("layer", sort=True):
        grads = _receiver_grads(model, {"run": run}, int(layer), part)     # [R_l, A*b, n, d]
        grads = grads.unflatten(1, (A, b)).sum(1).flatten(1)               # [R_l, b*n*d]
        cols = torch.as_tensor(part.index.to_list())
        out[torch.as_tensor(sender_rows)[:, None], cols[None, :]] += \
            (deltas @ grads.T).detach().double()


def _nodes(model, g: HeadGraph | None, edges: bool) -> list[tuple[str, list[int]]]:
    """The interpolated nodes of ``ig_on="activations"``: ``(hook, sender rows)``; with
    ``edges`` every sender group (embedding, each layer's heads, each MLP), else the layers'
    heads only, with no sender rows."""
    L = model.cfg.n_layers
    if not edges:
        return [(f"blocks.{l}.attn.hook_z", []) for l in range(L)]
    snd = g.senders()
    out = [(EMBED, [0])]
    for l in range(L):
        out.append((f"blocks.{l}.attn.hook_z",
                    snd.index[(snd.kind == "head") & (snd.layer == l)].to_list()))
        if g.mlps:
            out.append((f"blocks.{l}.hook_mlp_out",
                        snd.index[(snd.kind == "mlp") & (snd.layer == l)].to_list()))
    return out


def ig_attribution(model, task: PatchingTask, c: dict, steps: int = 5, ig_on: str = "inputs",
                   max_batch: int | None = None, edges: bool = True) -> dict:
    """EAP-IG gradients and edge scores for an attribution cache ``c``
    (:func:`~interp.circuits.attribution.attribution_cache` of ``task``; see module doc).

    Returns (memoised in ``c`` per ``(steps, ig_on)``):
        ``"grads"``: averaged gradients ``"grad:blocks.{l}.attn.hook_z"``
        ``[batch, pos, head, d_head]`` for every layer and, with ``ig_on="inputs"``,
        ``"grad:blocks.0.hook_resid_pre"`` ``[batch, pos, d_model]``;
        ``"edges"``: scores ``[n_senders, n_receivers]`` float64 (0 where no edge exists),
        None without a graph (encoders) or when not asked for with ``ig_on="activations"``
        (``ig_on="inputs"`` computes them whenever the graph applies: same forwards).
    """
    check_method("eap-ig", steps, ig_on, max_batch)
    key = ("eap-ig", steps, ig_on)
    done = c.get(key)
    g: HeadGraph | None = c.get("graph")
    edges = edges and g is not None
    if done is not None and (done["edges"] is not None or not edges):
        return done
    task = task.checked(model)
    tokens = task.corrupted if c["ablation"] == "corrupted" else task.clean
    b, L = tokens.shape[0], model.cfg.n_layers
    z_names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    grads = {"grad:" + n: 0.0 for n in z_names}
    rcv = g.receivers() if g is not None else None
    scores = deltas = None
    if edges or (ig_on == "inputs" and g is not None):
        deltas = _sender_deltas(model, c).flatten(1)                       # [S, b*n*d]
        scores = torch.zeros(len(deltas), len(rcv), dtype=torch.float64)
    valid = g.valid() if g is not None else None
    if ig_on == "inputs":
        nodes = [(EMBED, list(range(len(deltas))) if deltas is not None else [])]
    else:
        nodes = _nodes(model, g, edges)
    for point, rows in nodes:
        rcv_rows = rcv[valid[rows[0]].numpy()] if rows and ig_on == "activations" else rcv
        names, gnames = _reads(g, rcv_rows) if scores is not None else ([], [])
        if ig_on == "inputs":
            gnames = gnames + z_names
        for alphas in _chunks(steps, b, max_batch):
            run, at = _interpolated_run(model, tokens, task.metric, point, c["base"][point],
                                        c["clean"][point], alphas, names, gnames)
            A = len(alphas)
            if scores is not None and rows:
                _add_edges(model, run, rcv_rows, deltas[rows], scores, rows, A, b)
            if ig_on == "inputs":
                for n in z_names:
                    grads["grad:" + n] = grads["grad:" + n] + \
                        run["grad:" + n].unflatten(0, (A, b)).sum(0)
                grads["grad:" + EMBED] = grads.get("grad:" + EMBED, 0.0) + \
                    at.unflatten(0, (A, b)).sum(0)
            elif point.endswith("hook_z"):
                grads["grad:" + point] = grads["grad:" + point] + at.unflatten(0, (A, b)).sum(0)
    out = {"grads": {k: v / steps for k, v in grads.items()},
           "edges": None if scores is None else (scores / steps) * valid}
    c[key] = out
    return out


def input_attribution(model, task: PatchingTask, steps: int = 5, cache: dict | None = None,
                      max_batch: int | None = None, **kw) -> torch.Tensor:
    """Integrated gradients of the input embeddings (Sundararajan et al. 2017 on
    ``blocks.0.hook_resid_pre``, the path of ``ig_on="inputs"``): ``[batch, pos]`` scores
    ``sum_d (emb_clean - emb_base) * mean_k d metric / d emb``; their sum approaches
    ``metric(clean) - metric(base run)`` as ``steps`` grows (completeness). ``kw``:
    ``ablation``, ``reference`` of :func:`~interp.circuits.attribution.attribution_cache`."""
    from interp.circuits.attribution import attribution_cache

    check_method("eap-ig", steps, "inputs", max_batch)
    c = cache or attribution_cache(model, task, **kw)
    grad = ig_attribution(model, task, c, steps, "inputs", max_batch, edges=False)["grads"]
    delta = c["clean"][EMBED] - c["base"][EMBED]
    return (delta.float() * grad["grad:" + EMBED].float()).sum(-1)
