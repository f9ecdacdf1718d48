"""Evaluating circuit-discovery methods: edge rankings, ground truth, faithfulness curves.

Architecture
------------
- **Rankings.** :func:`edge_rankings` runs each method once on a task and returns one
  :class:`EdgeRanking` per method: a score for every edge of the head graph
  (``[n_senders, n_receivers]``, the layout of :class:`~interp.circuits.graph.HeadGraph` and
  of every edge mask, 0 where no edge exists), on the normalised scale (a share of
  ``clean - corrupted``) and with the method's wall time. Edges are ranked by ``|score|``,
  ties in edge order (row-major over ``[sender, receiver]``): :meth:`EdgeRanking.order`. The
  methods and what an edge's score is:

  ========== =============================================================================
  method     score of edge sender -> receiver input
  ========== =============================================================================
  eap        EAP (Syed et al. 2023): ``(out_clean - out_base)[sender] . d metric / d input``
             (:func:`~interp.circuits.attribution.edge_attribution`, ``method="eap"``).
  eap-ig     EAP-IG (Hanna et al. 2024): the same with the gradient averaged over ``steps``
             interpolated runs (``method="eap-ig"``, ``ig_on``).
  knockout   ACDC's measurement, taken from the full graph: the drop of the normalised
             metric when this one edge is removed from the full circuit (one real circuit
             forward per edge, :class:`~interp.circuits.runner.CircuitRunner`). ACDC
             (:func:`~interp.circuits.discovery.acdc`) measures each edge against the circuit
             as it stands when it reaches that edge and does not return the scores of the
             edges it removes, so this is the single-edge-knockout version of its score.
  acdc       ACDC's own result: the edges of its final circuit score the normalised drop it
             measured when it tried them (``|drop| >= threshold``); every edge it removed (or
             that ``prune`` dropped as off any embed -> logits path) scores 0. A two-level
             ranking: the top-``n`` circuit at ``n`` = its size is ACDC's circuit; beyond
             it the removed edges follow in edge order.
  patching   per-node activation patching, a *node* method: an edge scores its sender's
             effect, so all out-edges of a node tie (node methods rank edges by sender).
             Heads: :func:`~interp.circuits.activation.patch_heads` (``hook_z``); the
             embedding (``blocks.0.hook_resid_pre``) and MLPs (``hook_mlp_out``) by the same
             hook, patched whole. ``ablation="corrupted"``: denoising (the clean value into
             the corrupted run), score = normalised patched metric; ``"mean"``: the node's
             per-position mean into the clean run, score = ``(clean - ablated) /
             (clean - corrupted)``.
  ========== =============================================================================

  Scores are positive where the edge carries the clean behaviour (``"mean"``: where removing
  it hurts). Costs: EAP one forward + backward; EAP-IG ``steps``; knockout and ACDC one
  forward per edge (small models: the toy has 81 edges); patching one forward per node.
- **Ground truth.** :func:`ground_truth_auc` is the ROC AUC of a ranking against a known edge
  set (the Mann-Whitney U statistic, ties counted half), :func:`toy_induction_truth` the
  known circuit of the trained toy induction model, its heads found by the induction probe.
- **Faithfulness.** :func:`faithfulness_curve` keeps the top-``n`` edges of a ranking for
  log-spaced ``n`` and evaluates each mask with a real circuit forward
  (:meth:`CircuitRunner.metric <interp.circuits.runner.CircuitRunner.metric>`): the points
  *are* the runner's metric of those masks. :func:`smallest_faithful` reads the smallest
  ``n`` reaching a level (80% by default), refined between curve points with more forwards.
  :func:`method_agreement` is the overlap of top-``k`` edge sets; :func:`compare_methods`
  puts AUC, time and 80% size of every method in one table.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from interp.circuits.runner import CircuitRunner
from interp.circuits.tasks import PatchingTask
from interp.errors import InputError
from interp.hooks import attach

RANKING_METHODS = ("eap", "eap-ig", "knockout", "acdc", "patching")


@dataclass
class EdgeRanking:
    """One method's score for every edge (see the module doc for each method's score).

    Attributes:
        method: the method's name (one of :data:`RANKING_METHODS`).
        scores: ``[n_senders, n_receivers]`` float64 on the normalised scale (a share of
            ``clean - corrupted``); 0 where no edge exists.
        valid: ``[n_senders, n_receivers]`` bool, the edges of the graph.
        seconds: the method's wall time (a shared ``CircuitRunner`` built beforehand is not
            counted; attribution methods count their own caches).
        info: what else the method returned (``acdc``: ``"circuit"``, the
            :class:`~interp.circuits.discovery.Circuit`, and ``"threshold"``; ``patching``:
            ``"nodes"``, the per-sender DataFrame ``sender, score``).
    """

    method: str
    scores: torch.Tensor
    valid: torch.Tensor
    seconds: float = float("nan")
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_scores(self.scores, self.valid, f"{self.method} scores")

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def order(self) -> torch.Tensor:
        """``[n_edges]`` long: flat indices (row-major over ``[senders, receivers]``) of the
        valid edges, by ``|score|`` descending, ties in flat-index order."""
        return _order(self.scores, self.valid)

    def top(self, n: int) -> torch.Tensor:
        """``[n_senders, n_receivers]`` bool: the first ``n`` edges of :meth:`order`."""
        return _top_mask(self.order(), n, self.valid)


def _check_scores(scores, valid, what: str) -> None:
    if not isinstance(scores, torch.Tensor) or not isinstance(valid, torch.Tensor):
        raise InputError(f"{what}: scores and the edge mask must be torch tensors, got "
                         f"{type(scores).__name__} and {type(valid).__name__}")
    if scores.shape != valid.shape:
        raise InputError(f"{what}: scores {tuple(scores.shape)} do not match the edge mask "
                         f"{tuple(valid.shape)} ([n_senders, n_receivers] of the graph)")
    if valid.dtype != torch.bool:
        raise InputError(f"{what}: the edge mask must be bool, got {valid.dtype}")
    if not torch.isfinite(scores[valid].double()).all():
        raise InputError(f"{what}: scores hold NaN or infinite values on edges of the graph")


def _order(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Flat indices of ``valid`` entries by ``|scores|`` descending, ties by flat index."""
    flat = valid.flatten().nonzero(as_tuple=True)[0].cpu().numpy()
    mag = scores.detach().flatten().double().abs().cpu().numpy()[flat]
    return torch.as_tensor(flat[np.argsort(-mag, kind="stable")])


def _top_mask(order: torch.Tensor, n: int, valid: torch.Tensor) -> torch.Tensor:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= len(order):
        raise InputError(f"the number of edges kept must be an int in [0, {len(order)}], "
                         f"got {n!r}")
    mask = torch.zeros(valid.numel(), dtype=torch.bool)
    mask[order[:int(n)]] = True
    return mask.view(valid.shape).to(valid.device)


def _as_ranking(x, valid: torch.Tensor | None, what: str) -> EdgeRanking:
    """An :class:`EdgeRanking` from a ranking or a score tensor (edges: ``valid``, default
    every entry)."""
    if isinstance(x, EdgeRanking):
        if valid is not None and not torch.equal(x.valid.cpu(), valid.cpu()):
            raise InputError(f"{what}: the ranking's edges are not the graph's (another model?)")
        return x
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what}: expected an EdgeRanking or a score tensor, got "
                         f"{type(x).__name__}")
    v = torch.ones(x.shape, dtype=torch.bool) if valid is None else valid.cpu()
    return EdgeRanking(what, x.detach().cpu().double(), v)


# ----------------------------------------------------------------------------- the methods
def edge_rankings(model, task: PatchingTask, methods: Sequence[str] = RANKING_METHODS, *,
                  ablation: str = "corrupted", reference: torch.Tensor | None = None,
                  steps: int = 5, ig_on: str = "inputs", acdc_threshold: float = 0.02,
                  runner: CircuitRunner | None = None,
                  progress: bool = False) -> dict[str, EdgeRanking]:
    """Score every edge of the head graph with each of ``methods`` (module doc).

    Args:
        task: clean/corrupted ``[batch, seq]`` tokens and a metric.
        methods: names from :data:`RANKING_METHODS`, in the order they run.
        ablation, reference: the base values (``"corrupted"``, or ``"mean"`` over
            ``reference`` tokens) shared by every method: see
            :mod:`interp.circuits.runner`.
        steps, ig_on: EAP-IG's points and what it interpolates.
        acdc_threshold: ACDC's threshold on the normalised metric.
        runner: a :class:`CircuitRunner` of ``model``, ``task`` and the same ablation (built
            when None; its construction is not part of any method's time).

    Returns:
        ``{method: EdgeRanking}`` in the order of ``methods``.

    Raises:
        InputError: unknown or repeated methods, bad ``steps`` / ``ig_on`` /
            ``acdc_threshold``, a runner with another ablation.
        Refused: models whose edges the graph cannot rebuild exactly (encoders, ...).
    """
    from interp.circuits.integrated import check_method

    methods = list(methods) if not isinstance(methods, str) else [methods]
    bad = [m for m in methods if m not in RANKING_METHODS]
    if bad or not methods or len(set(methods)) != len(methods):
        raise InputError(f"methods must be distinct names from {list(RANKING_METHODS)}, "
                         f"got {methods}")
    check_method("eap-ig", steps, ig_on)
    if isinstance(acdc_threshold, bool) or not isinstance(acdc_threshold, (int, float)) \
            or not acdc_threshold >= 0:
        raise InputError(f"acdc_threshold must be a number >= 0, got {acdc_threshold!r}")
    runner = runner or CircuitRunner(model, task, ablation, reference)
    if runner.ablation != ablation:
        raise InputError(f"the runner uses ablation={runner.ablation!r}, the methods "
                         f"{ablation!r}: build it with the same ablation")
    if runner.model is not model or runner.task.clean.shape != task.clean.shape or not (
            torch.equal(runner.task.clean.cpu(), task.clean.cpu())
            and torch.equal(runner.task.corrupted.cpu(), task.corrupted.cpu())):
        raise InputError("the runner was built for another model or task: build it with "
                         "CircuitRunner(model, task, ablation, reference)")
    out = {}
    for m in methods:
        t0 = time.perf_counter()
        scores, info = _METHOD_FNS[m](model, runner, ablation=ablation, reference=reference,
                                      steps=steps, ig_on=ig_on, threshold=acdc_threshold,
                                      progress=progress)
        seconds = time.perf_counter() - t0
        out[m] = EdgeRanking(m, (scores.double().cpu() * runner.valid.cpu()),
                             runner.valid.cpu(), seconds, info)
    return out


def _spread(runner: CircuitRunner) -> float:
    d = runner.clean_metric - runner.corrupted_metric
    if d == 0:
        raise InputError("clean and corrupted metrics are equal: nothing to normalise by "
                         "(the task does not separate the two runs)")
    return d


def _attribution(method):
    def run(model, runner, ablation, reference, steps, ig_on, **_):
        from interp.circuits.attribution import attribution_cache, edge_attribution

        cache = attribution_cache(model, runner.task, ablation, reference)
        s = edge_attribution(model, runner.task, cache, method=method, steps=steps, ig_on=ig_on)
        return s / _spread(runner), {}

    return run


def _knockout(model, runner, progress, **_):
    from tqdm.auto import tqdm

    valid, spread = runner.valid, _spread(runner)
    full = runner.metric(valid)
    scores = torch.zeros(valid.shape, dtype=torch.float64)
    for i, j in tqdm(valid.nonzero().tolist(), desc="knockout", disable=not progress):
        mask = valid.clone()
        mask[i, j] = False
        scores[i, j] = (full - runner.metric(mask)) / spread
    return scores, {"full_metric": full}


def _acdc(model, runner, threshold, progress, **_):
    from interp.circuits.discovery import acdc

    c = acdc(model, runner.task, threshold=threshold, progress=progress, runner=runner)
    snd = {n: i for i, n in enumerate(runner.senders.name)}
    rcv = {(n, x): j for j, (n, x) in enumerate(zip(runner.receivers.node,
                                                    runner.receivers.input))}
    scores = torch.zeros(runner.valid.shape, dtype=torch.float64)
    for e in c.edges.itertuples():
        scores[snd[e.sender], rcv[(e.receiver, e.input)]] = float(e.score)
    return scores, {"circuit": c, "threshold": threshold}


@torch.no_grad()
def _patching(model, runner, ablation, **_):
    """Per-sender effects (module doc), one hooked forward per node (heads through
    ``patch_heads`` when denoising)."""
    from interp.circuits.activation import patch_heads
    from interp.circuits.model import run_cache

    task, spread, g = runner.task, _spread(runner), runner.graph
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_mlp_out"
                                           for l in range(g.n_layers) if g.mlps]
    if ablation == "corrupted":
        tokens, source = task.corrupted, run_cache(model, task.clean, names)[1]
    else:
        tokens, source = task.clean, runner.corr       # per-position means [1, ...]

    def effect(value: float) -> float:
        if ablation == "corrupted":
            return runner.normalised(value)
        return (runner.clean_metric - value) / spread

    def patched(name: str, put) -> float:
        def hook(act, hook):
            act = act.clone()
            put(act)
            return act

        with attach(model, [(name, hook)]):
            return float(task.metric(model(tokens)))

    node: dict[str, float] = {}
    node["embed"] = effect(patched(names[0], lambda a: a.copy_(source[names[0]].expand_as(a))))
    if ablation == "corrupted":
        ph = patch_heads(model, task, "denoise", progress=False)
        node.update({f"L{r.layer}H{r.head}": effect(r.metric) for r in ph.itertuples()})
    else:
        for l in range(g.n_layers):
            z = runner.corr[f"blocks.{l}.attn.hook_z"]
            for h in range(g.n_heads):
                def put(a, z=z, h=h):
                    a[:, :, h] = z[:, :, h].expand_as(a[:, :, h])

                node[f"L{l}H{h}"] = effect(patched(f"blocks.{l}.attn.hook_z", put))
    for l in range(g.n_layers if g.mlps else 0):
        n = f"blocks.{l}.hook_mlp_out"
        node[f"MLP{l}"] = effect(patched(n, lambda a, n=n: a.copy_(source[n].expand_as(a))))
    per_sender = torch.tensor([node[s] for s in runner.senders.name], dtype=torch.float64)
    scores = per_sender[:, None].expand(runner.valid.shape).clone()
    nodes = pd.DataFrame({"sender": list(node), "score": list(node.values())})
    return scores, {"nodes": nodes}


_METHOD_FNS = {"eap": _attribution("eap"), "eap-ig": _attribution("eap-ig"),
               "knockout": _knockout, "acdc": _acdc, "patching": _patching}


# ---------------------------------------------------------------------------- ground truth
def ground_truth_auc(scores, truth: torch.Tensor, valid: torch.Tensor | None = None,
                     absolute: bool = True) -> float:
    """ROC AUC of a ranking against a known edge set: the probability that a random true edge
    scores above a random other edge, ties counted half (the Mann-Whitney U statistic over
    ``n_true * n_other``, from average ranks).

    Args:
        scores: an :class:`EdgeRanking` or a score tensor (any shape, e.g. ``[n_senders,
            n_receivers]`` or ``[n_edges]``).
        truth: bool tensor of the same shape, True on the circuit's edges.
        valid: bool tensor of the same shape, the edges that count (default: the ranking's
            ``valid``, else every entry).
        absolute: rank by ``|score|`` (as :func:`faithfulness_curve` keeps edges), else by
            the signed score.

    Raises:
        InputError: shapes that differ, a non-bool ``truth``, NaN scores, no true edge or no
            other edge among the valid ones.
    """
    if isinstance(scores, EdgeRanking):
        valid = scores.valid if valid is None else valid
        scores = scores.scores
    if not isinstance(truth, torch.Tensor) or truth.dtype != torch.bool:
        raise InputError("truth must be a bool tensor (True on the circuit's edges)")
    if valid is None:
        valid = torch.ones(truth.shape, dtype=torch.bool)
    _check_scores(scores, valid.cpu(), "ground_truth_auc")
    if truth.shape != valid.shape:
        raise InputError(f"truth {tuple(truth.shape)} does not match the scores "
                         f"{tuple(valid.shape)}")
    v = valid.cpu().flatten()
    if (truth.cpu().flatten() & ~v).any():
        raise InputError("truth holds edges that are not edges of the graph (valid)")
    s = scores.detach().cpu().double().flatten()[v].numpy()
    s = np.abs(s) if absolute else s
    pos = truth.cpu().flatten()[v].numpy()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"ROC AUC needs true and other edges, got {n_pos} true and "
                         f"{n_neg} other")
    ranks = pd.Series(s).rank(method="average").to_numpy()    # 1-based, ties averaged
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def toy_induction_heads(model, tokens: torch.Tensor | None = None, seg_len: int | None = None,
                        prev_threshold: float = 0.5,
                        induction_threshold: float = 0.5) -> dict[str, list[int]]:
    """The trained toy induction model's heads, found by the induction probe
    (:func:`~interp.probes.induction.pattern_scores`): ``{"previous_token": [layer-0 heads
    with previous-token score >= prev_threshold], "induction": [layer-1 heads with induction
    score >= induction_threshold]}``.

    Args:
        tokens: ``[batch, 1 + 2 * seg_len]`` repeated random tokens after BOS = 0 (default:
            32 rows with the recipe's ``seg_len``, 16, drawn as the recipe draws them).

    Raises:
        InputError: not the 2-layer attention-only toy (:mod:`interp.recipes.toy_induction`),
            or no such head in either layer (an untrained or failed model).
    """
    from interp.circuits.model import has_mlps
    from interp.probes.induction import pattern_scores

    recipe = getattr(model, "toy_recipe", None) or {}
    if model.cfg.n_layers != 2 or has_mlps(model) or recipe.get("recipe", "toy_induction") \
            != "toy_induction":
        raise InputError("toy_induction_truth needs the 2-layer attention-only toy induction "
                         "model (interp.recipes.toy_induction.circuit_toy())")
    if tokens is None:
        from interp.tasks import repeated_tokens

        seg_len = seg_len or int(recipe.get("config", {}).get("seg_len", 16))
        tokens = repeated_tokens(32, seg_len, 2, model.cfg.d_vocab, bos_token=0, low=1,
                                 seed=10_000)
    elif seg_len is None:
        raise InputError("pass the seg_len of your tokens")
    df = pattern_scores(model, tokens, seg_len=seg_len, offset=1)
    l0, l1 = df[df.layer == 0], df[df.layer == 1]
    heads = {"previous_token": l0[l0.previous_token >= prev_threshold]["head"].tolist(),
             "induction": l1[l1.induction >= induction_threshold]["head"].tolist()}
    for key, sub, col, thr in (("previous_token", l0, "previous_token", prev_threshold),
                               ("induction", l1, "induction", induction_threshold)):
        if not heads[key]:
            best = sub.nlargest(1, col).iloc[0]
            raise InputError(f"no {key.replace('_', '-')} head: the best, L{int(best.layer)}"
                             f"H{int(best['head'])}, scores {best[col]:.2f} < {thr}; is the "
                             f"toy trained (circuit_toy())?")
    return {k: [int(h) for h in v] for k, v in heads.items()}


def toy_induction_truth(model, token_edges: bool = True, **kw) -> torch.Tensor:
    """The known circuit of the trained toy induction model (2 layers, attention only; heads
    from :func:`toy_induction_heads`, ``kw`` passed on) as an edge mask ``[n_senders,
    n_receivers]`` bool of its :class:`~interp.circuits.graph.HeadGraph`:

    - previous-token head(s) -> induction heads' ``k`` (K-composition: the key at position
      ``j`` carries token ``j - 1``);
    - induction heads -> ``logits`` (they write the copied token);
    - with ``token_edges`` (default): ``embed`` -> previous-token heads' ``v`` (the token
      they move one position on) and ``embed`` -> induction heads' ``v`` (the token they
      copy).

    Left out: ``embed`` -> induction heads' ``q`` (part of the mechanism, but
    :func:`~interp.circuits.tasks.induction_task` changes only the first copy, so queries at
    the metric's positions are equal in both runs and every method scores it 0), ``embed`` ->
    previous-token heads' ``q``/``k`` (rotary: the head attends by position), ``embed`` ->
    induction heads' ``k`` and ``embed`` -> ``logits`` (the direct path; it predicts no
    repeat). The circuit's edges are what carries the clean - corrupted difference of that
    task through the mechanism.
    """
    from interp.circuits.graph import HeadGraph

    heads = toy_induction_heads(model, **kw)
    g = HeadGraph.of(model)
    snd = {n: i for i, n in enumerate(g.senders().name)}
    rcv = {n: j for j, n in enumerate(g.receivers().name)}
    truth = torch.zeros(len(snd), len(rcv), dtype=torch.bool)
    for p in heads["previous_token"]:
        for h in heads["induction"]:
            truth[snd[f"L0H{p}"], rcv[g.kv_name(1, h // g.group) + ".k"]] = True
        if token_edges:
            truth[snd["embed"], rcv[g.kv_name(0, p // g.group) + ".v"]] = True
    for h in heads["induction"]:
        truth[snd[f"L1H{h}"], rcv["logits"]] = True
        if token_edges:
            truth[snd["embed"], rcv[g.kv_name(1, h // g.group) + ".v"]] = True
    return truth


# ----------------------------------------------------------------------------- faithfulness
def log_counts(n_edges: int, points: int = 12) -> list[int]:
    """``0`` and about ``points`` log-spaced edge counts from 1 to ``n_edges`` (distinct,
    ascending, ``n_edges`` last)."""
    if isinstance(n_edges, bool) or not isinstance(n_edges, (int, np.integer)) or n_edges < 1:
        raise InputError(f"n_edges must be an int >= 1, got {n_edges!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise InputError(f"points must be an int >= 2, got {points!r}")
    ns = np.unique(np.round(np.geomspace(1, n_edges, points)).astype(int))
    return [0] + [int(n) for n in ns]


def faithfulness_curve(runner: CircuitRunner, scores, counts: Sequence[int] | None = None,
                       points: int = 12, method: str | None = None,
                       progress: bool = False) -> pd.DataFrame:
    """Metric of the circuit of the top-``n`` edges, for each ``n`` in ``counts``.

    Each point is ``runner.metric(mask)`` of the mask of the ``n`` edges ranked first by
    ``|score|`` (ties in edge order: :meth:`EdgeRanking.order`), a real circuit forward:
    everything outside the mask at its base value (:mod:`interp.circuits.runner`). Edges
    that lie on no embed -> logits path are kept as ranked: they change nothing (a sender
    with no input in the circuit writes its base value), so the metric equals the pruned
    circuit's while ``n_edges`` counts them.

    Args:
        runner: the task and ablation to evaluate under.
        scores: an :class:`EdgeRanking` or ``[n_senders, n_receivers]`` scores of the
            runner's graph.
        counts: numbers of edges kept (default: :func:`log_counts` of the graph's edges
            with ``points``: 0, log-spaced 1 .. all).
        method: label for the ``method`` column (default: the ranking's name, or "scores").

    Returns:
        DataFrame ``method, n_edges, metric, normalised`` (one row per count, ascending;
        normalised: 0 = corrupted, 1 = clean, the runner's scale).

    Raises:
        InputError: scores that do not fit the graph, counts outside ``[0, n_edges]``.
    """
    r = _as_ranking(scores, runner.valid.cpu(), method or "scores")
    order = r.order()
    counts = log_counts(len(order), points) if counts is None else \
        sorted({int(_count(n, len(order))) for n in counts})
    from tqdm.auto import tqdm

    rows = []
    for n in tqdm(counts, desc="faithfulness", disable=not progress):
        m = runner.metric(_top_mask(order, n, runner.valid))
        rows.append({"method": method or r.method, "n_edges": n, "metric": m,
                     "normalised": runner.normalised(m)})
    return pd.DataFrame(rows, columns=["method", "n_edges", "metric", "normalised"])


def _count(n, total: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= total:
        raise InputError(f"edge counts must be ints in [0, {total}], got {n!r}")
    return int(n)


def smallest_faithful(curve: pd.DataFrame, level: float = 0.8, *,
                      runner: CircuitRunner | None = None, scores=None,
                      refine: str | None = "bisect", method: str | None = None) -> int | None:
    """The smallest number of top-ranked edges whose circuit reaches ``level`` (normalised).

    Without ``runner`` and ``scores``: the smallest ``n_edges`` of the curve with
    ``normalised >= level`` (None if no point reaches it). With both, the answer is refined
    between that point ``hi`` and the curve point ``lo`` before it, with real circuit forwards
    of top-``n`` masks (:func:`faithfulness_curve`'s masks):

    - ``refine="bisect"``: binary search on ``(lo, hi]`` (about ``log2(hi - lo)`` forwards);
      returns ``n`` with ``f(n) >= level > f(n - 1)``, exact to one edge among top-``n``
      prefixes, and the smallest such ``n`` when the curve does not dip back below ``level``
      between ``lo`` and ``hi`` (adding an edge can lower the metric, so it may).
    - ``refine="scan"``: every prefix ``n = 1 .. hi`` in turn (curve points reused); the
      exact smallest ``n`` whatever the curve does, at up to ``hi`` forwards.
    - ``refine=None``: the curve points only.

    Args:
        curve: a :func:`faithfulness_curve` table (``n_edges``, ``normalised``; one method,
            or pick one with ``method``).
        level: the share of the clean metric to recover.

    Raises:
        InputError: a table without those columns, several methods and no ``method``, an
            unknown ``refine``, only one of ``runner`` / ``scores``.
    """
    if not isinstance(curve, pd.DataFrame) or not {"n_edges", "normalised"} <= set(curve):
        raise InputError("curve must be a faithfulness_curve DataFrame (n_edges, normalised)")
    if refine not in (None, "bisect", "scan"):
        raise InputError(f"refine must be None, 'bisect' or 'scan', got {refine!r}")
    if (runner is None) != (scores is None):
        raise InputError("refining needs both the runner and the scores of the curve")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or level != level:
        raise InputError(f"level must be a number, got {level!r}")
    if method is not None:
        curve = curve[curve.method == method]
    elif "method" in curve and curve.method.nunique() > 1:
        raise InputError(f"the curve holds several methods {sorted(curve.method.unique())}: "
                         f"pass method=")
    if curve.empty:
        raise InputError("the curve is empty (no such method?)")
    c = curve.sort_values("n_edges")
    f = dict(zip(c.n_edges.astype(int), c.normalised.astype(float)))
    hits = [n for n, v in f.items() if v >= level]
    if not hits:
        return None
    hi = hits[0]
    if runner is None or refine is None:
        return hi
    order = _as_ranking(scores, runner.valid.cpu(), "scores").order()

    def reach(n: int) -> bool:
        if n not in f:
            f[n] = runner.normalised(runner.metric(_top_mask(order, n, runner.valid)))
        return f[n] >= level

    if refine == "scan":
        return next(n for n in range(0, hi + 1) if reach(n))
    lo = max([n for n in f if n < hi], default=-1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reach(mid) else (mid, hi)
    return hi


def method_agreement(rankings: Mapping[str, object], k: int | Sequence[int]) -> pd.DataFrame:
    """Pairwise overlap of the top-``k`` edge sets: ``|top_k(a) & top_k(b)| / k``.

    Args:
        rankings: ``{name: EdgeRanking or score tensor}``, all of one shape (tensors rank
            every entry; top-``k`` by ``|score|``, ties in index order as
            :meth:`EdgeRanking.order`). At least two.
        k: one size or several.

    Returns:
        DataFrame ``method_a, method_b, k, shared, overlap``: one row per unordered pair (in
        the order of ``rankings``) and ``k``.

    Raises:
        InputError: fewer than two rankings, shapes or edge sets that differ, ``k`` not in
            ``[1, n_edges]``.
    """
    if not isinstance(rankings, Mapping) or len(rankings) < 2:
        raise InputError("method_agreement needs a mapping of at least two rankings")
    rs = {}
    valid = None
    for name, x in rankings.items():
        r = _as_ranking(x, None, str(name))
        if valid is None:
            valid = r.valid.cpu()
        elif r.valid.shape != valid.shape or not torch.equal(r.valid.cpu(), valid):
            raise InputError(f"ranking {name!r} does not score the same edges as the first")
        rs[str(name)] = r.order()
    ks = [k] if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else list(k)
    n = int(valid.sum())
    ks = [_count(x, n) for x in ks]
    if not ks or min(ks) < 1:
        raise InputError(f"k must be in [1, {n}], got {k!r}")
    names = list(rs)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for kk in ks:
                shared = len(set(rs[a][:kk].tolist()) & set(rs[b][:kk].tolist()))
                rows.append({"method_a": a, "method_b": b, "k": kk, "shared": shared,
                             "overlap": shared / kk})
    return pd.DataFrame(rows, columns=["method_a", "method_b", "k", "shared", "overlap"])


def compare_methods(runner: CircuitRunner, rankings: Mapping[str, EdgeRanking],
                    truth: torch.Tensor | None = None, level: float = 0.8,
                    counts: Sequence[int] | None = None, points: int = 12,
                    refine: str | None = "bisect",
                    progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every method's faithfulness curve and summary.

    Returns:
        ``(summary, curves)``: ``summary`` one row per method, ``method, seconds, auc`` (NaN
        without ``truth``), ``n_faithful`` (:func:`smallest_faithful` at ``level`` with
        ``refine``; NaN when never reached), ``n_edges`` (edges of the graph);
        ``curves`` the :func:`faithfulness_curve` tables stacked.
    """
    curves, rows = [], []
    for name, r in rankings.items():
        curve = faithfulness_curve(runner, r, counts, points, method=name, progress=progress)
        n = smallest_faithful(curve, level, runner=runner, scores=r, refine=refine)
        auc = float("nan") if truth is None else ground_truth_auc(r, truth.cpu())
        rows.append({"method": name, "seconds": r.seconds, "auc": auc,
                     "n_faithful": float("nan") if n is None else n, "n_edges": r.n_edges})
        curves.append(curve)
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


__all__ = ["RANKING_METHODS", "EdgeRanking", "compare_methods", "edge_rankings",
           "faithfulness_curve", "ground_truth_auc", "log_counts", "method_agreement",
           "smallest_faithful", "toy_induction_heads", "toy_induction_truth"]
