"""Running a model restricted to a circuit of the head graph (:mod:`interp.circuits.graph`).

Running a circuit (:func:`run_circuit`)
---------------------------------------
The base run is the corrupted prompt. Every receiver's input is rebuilt as::

    input_r = resid_corrupted(r) + sum over circuit edges s -> r of (out_s(now) - out_s(corrupted))

where ``out_s(now)`` is the sender's output in this very forward (the embed's "now" is the
clean embedding). This equals ACDC's rule (Conmy et al. 2023): edges in the circuit carry the
current value, edges outside carry the corrupted value. Head q/k/v are recomputed with the
model's own ``ln1`` and projections and replace ``hook_q/k/v``; MLP inputs replace
``ln2.hook_in``; logits read ``ln_final.hook_in``. A sender none of whose inputs is in the
circuit writes its base value (delta 0). With every edge the run reproduces the clean run;
with none, the corrupted run (tests check both).

**Post-attention norms** (Gemma 2/3 sandwich norms): there a layer writes
``norm(sum_h z_h W_O[h] + b)``, which is not a sum of per-head writes. The heads of such a
layer that feed receiver ``r`` are delivered together: ``r`` gets
``write(z with those heads at "now", the others at base) - write(z at base)``, computed with
the layer's own output projection and norm (:func:`~interp.circuits.model.attn_write`).
One edge is exactly the sender's output difference delivered to that input (as in path
patching), every edge reproduces the clean run and none the corrupted one; on layers without
such a norm the rule is the per-head sum above, unchanged.

What the runner rebuilds by hand is checked against a real forward before anything runs
(:func:`~interp.circuits.graph.check_graph`); encoders are refused up front
(:meth:`~interp.circuits.graph.HeadGraph.of`).

Ablation
--------
``ablation="corrupted"`` (default): the base values are the corrupted run's, as above.
``ablation="mean"``: the base value of every activation is its per-position mean over a
``reference`` batch (clean-distribution prompts, e.g. other repeated random sequences), so an
edge outside the circuit carries the sender's *average* output, no token-specific information
(Wang et al. 2022 use mean ablation for the same reason). Corrupted activations carry the
corrupted tokens' features, which actively mislead the heads that read them; for a deep model
(smollm2: 30 layers) a circuit alone then recovers little of the clean metric even with 100 of
its 270 heads. With every edge the mean run still reproduces the clean run; with none it gives
``empty_metric`` (everything at its mean). On a post-attention-norm layer the base write is
the write of the mean ``z`` (the mean of the normed writes is not one). Normalisation stays
0 = corrupted, 1 = clean.

Steps of :meth:`CircuitRunner.metric`: one :class:`_CircuitForward` per call holds the hooks
and the state they share while the forward runs (the senders' deltas of this forward, which
heads / MLPs are fed); :meth:`_CircuitForward.rebuilt` is the rule above for one receiver,
:meth:`_CircuitForward.post_delta` the joint write of a post-attention-norm layer's heads.
"""
from __future__ import annotations

import torch

from interp.circuits.graph import HeadGraph, activation_names, check_graph
from interp.circuits.metrics import normalise
from interp.circuits.model import attn_write, head_outputs, project, run_cache
from interp.circuits.tasks import PatchingTask
from interp.errors import InputError
from interp.hooks import attach
from interp.probes.common import check_tokens


class CircuitRunner:
    """Caches the base values of a task once (the corrupted run, or per-position means over
    ``reference`` tokens with ``ablation="mean"``); :meth:`metric` then evaluates any edge mask
    with one forward (see module doc).

    Attributes:
        graph: the model's :class:`~interp.circuits.graph.HeadGraph`.
        senders, receivers: its sender / receiver tables; ``valid`` ``[n_senders,
            n_receivers]`` bool, the edges that exist.
        corr: base activations (``[batch, ...]``, or ``[1, ...]`` means).
        clean_metric, corrupted_metric: metrics of the full clean / corrupted runs.
    """

    def __init__(self, model, task: PatchingTask, ablation: str = "corrupted",
                 reference: torch.Tensor | None = None):
        self.model, self.task = model, task.checked(model)
        self.graph = g = HeadGraph.of(model)
        self.ablation = ablation
        names = activation_names(g)
        self.corr = base_cache(model, self.task, names, ablation, reference)
        real = self.corr if ablation == "corrupted" else run_cache(model, self.task.corrupted,
                                                                   names)[1]
        check_graph(model, g, real, "CircuitRunner")
        _, clean = run_cache(model, self.task.clean, ["blocks.0.hook_resid_pre"])
        self.embed_delta = clean["blocks.0.hook_resid_pre"] - self.corr["blocks.0.hook_resid_pre"]
        with torch.no_grad():
            self.clean_metric = float(self.task.metric(model(self.task.clean)))
            self.corrupted_metric = float(self.task.metric(model(self.task.corrupted)))
            # post-norm layers: the base write is the write of the base z; the cached
            # residual holds the base hook_attn_out (the same for a real base run, not for
            # means), so receivers downstream get the difference added once
            self.base_write = {l: attn_write(model, l, self.corr[f"blocks.{l}.attn.hook_z"])
                               for l in g.post_norm}
            self.write_fix = {l: self.base_write[l] - self.corr[f"blocks.{l}.hook_attn_out"]
                              for l in g.post_norm} if ablation == "mean" else {}
        self.senders = g.senders()
        self.receivers = g.receivers()
        self.valid = g.valid()
        self._empty: float | None = None
        # index tables of the graph (sender name -> row; layer -> head rows; receiver columns
        # by (layer, input))
        self.sender_index = {n: i for i, n in enumerate(self.senders.name)}
        self.head_index = [[self.sender_index[f"L{l}H{h}"] for h in range(g.n_heads)]
                           for l in range(g.n_layers)]
        # per receiver column: 1 + its last possible sender's row (senders are in layer order)
        self._upto = [int(c.nonzero().max()) + 1 if c.any() else 0 for c in self.valid.T]
        self.receivers_of: dict[tuple[int, str], list[int]] = {}
        for j, r in enumerate(self.receivers.itertuples()):
            self.receivers_of.setdefault((r.layer, r.input), []).append(j)

    def upstream(self, cols: list[int]) -> int:
        """How many sender rows (a prefix, senders being in layer order) can feed ``cols``."""
        return max(self._upto[j] for j in cols)

    @property
    def empty_metric(self) -> float:
        """Metric of the empty circuit (= the corrupted metric with ``ablation="corrupted"``)."""
        if self._empty is None:
            self._empty = self.metric(torch.zeros_like(self.valid))
        return self._empty

    def normalised(self, value: float) -> float:
        """``value`` on the 0 = corrupted, 1 = clean scale of this task."""
        return normalise(value, self.clean_metric, self.corrupted_metric)

    @torch.no_grad()
    def metric(self, mask: torch.Tensor) -> float:
        """Metric of the run restricted to the edges in ``mask [senders, receivers]`` (bool):
        one forward of the corrupted tokens with every receiver input rebuilt (module doc)."""
        run = _CircuitForward(self, mask)
        with attach(self.model, run.hooks()):
            logits = self.model(self.task.corrupted)
        return float(self.task.metric(logits))


class _CircuitForward:
    """One forward of :meth:`CircuitRunner.metric`: the hooks that rebuild every receiver input
    from the base values plus the deltas of its senders in ``mask``, and the state they share
    while the forward runs layer by layer."""

    def __init__(self, runner: CircuitRunner, mask: torch.Tensor):
        g = runner.graph
        self.runner, self.model, self.g, self.corr = runner, runner.model, g, runner.corr
        self.mask = mask & runner.valid
        self.buf: torch.Tensor | None = None            # [n_senders, b, n, d], zero unless fed
        self.fed_rows = torch.zeros(len(runner.senders), dtype=torch.bool,
                                    device=runner.valid.device)
        self.record(0, runner.embed_delta)
        self.z_now: dict[int, torch.Tensor] = {}        # post-norm layers: z of this forward
        self.joint: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
        # heads whose q/k/v were fed (a head none of whose inputs is fed writes its base z)
        self.fed_heads = [torch.zeros(g.n_heads, dtype=torch.bool,
                                      device=runner.embed_delta.device)
                          for _ in range(g.n_layers)]
        self.fed_mlp = [False] * g.n_layers

    def post_delta(self, l: int, heads: tuple[int, ...]) -> torch.Tensor:
        """``[b, n, d_model]``: post-norm layer ``l``'s write with ``heads`` at this forward's z
        and the others at base, minus its base write."""
        r, corr = self.runner, self.corr
        if (l, heads) not in self.joint:
            z = corr[f"blocks.{l}.attn.hook_z"].expand_as(self.z_now[l]).clone()
            z[:, :, list(heads)] = self.z_now[l][:, :, list(heads)]
            self.joint[(l, heads)] = attn_write(self.model, l, z) - r.base_write[l]
        return self.joint[(l, heads)]

    def record(self, sender: int, delta: torch.Tensor) -> None:
        """Keep sender ``sender``'s delta ``[b, n, d_model]`` of this forward (a row of the
        buffer :meth:`summed` multiplies)."""
        if self.buf is None:
            self.buf = delta.new_zeros(len(self.runner.senders), *delta.shape)
        self.buf[sender] = delta
        self.fed_rows[sender] = True

    def summed(self, cols: list[int]) -> list[torch.Tensor | None]:
        """For each receiver column in ``cols``: the sum ``[b, n, d_model]`` of the deltas of
        its senders in the mask that were fed in this forward (None when there are none).
        One matrix product (columns x senders) @ (senders x activations) instead of a tensor
        sum per edge: senders are ordered by layer, so a receiver's senders are a prefix of
        the buffer; a sparse set of rows is gathered first, a dense one is read in place."""
        upto = self.runner.upstream(cols)
        fed = self.fed_rows[:upto]
        sub = self.mask[:upto, cols] & fed[:, None]                    # [upto, cols]
        got = sub.any(0).tolist()
        if not any(got):
            return [None] * len(cols)
        rows = sub.any(1).nonzero(as_tuple=True)[0]
        acts = self.buf[:upto]
        if 4 * len(rows) < upto:                                       # sparse: gather
            acts, sub = acts.index_select(0, rows), sub[rows]
        weights = sub.T.to(acts.dtype)                                  # [cols, senders]
        sums = (weights @ acts.flatten(1)).view(len(cols), *acts.shape[1:])
        return [sums[i] if g else None for i, g in enumerate(got)]

    def summed_per_edge(self, cols: list[int]) -> list[torch.Tensor | None]:
        """The naive reference of :meth:`summed`: each column's fed senders in the mask,
        their deltas added one at a time (tests and ``benchmarks/circuit_runner.py`` put it
        in :meth:`summed`'s place)."""
        out = []
        for j in cols:
            parts = [self.buf[s] for s in self.mask[:, j].nonzero().flatten().tolist()
                     if self.fed_rows[s]]
            out.append(sum(parts) if parts else None)
        return out

    def rebuilt(self, j: int, base: torch.Tensor,
                delta: torch.Tensor | None) -> torch.Tensor | None:
        """Receiver column ``j``'s input ``[b, n, d_model]``: ``base`` plus ``delta`` (the
        summed deltas of its senders in the mask, :meth:`summed`) plus, on post-norm layers,
        the joint writes of its heads (None when nothing is added)."""
        r, g, mask = self.runner, self.g, self.mask
        parts = [] if delta is None else [delta]
        for l in g.post_norm:
            if not r.valid[r.head_index[l][0], j]:
                continue                                     # not upstream of j
            if l in r.write_fix:
                base = base + r.write_fix[l]
            if l in self.z_now:
                heads = tuple(h for h in range(g.n_heads)
                              if mask[r.head_index[l][h], j] and self.fed_heads[l][h])
                if heads:
                    parts.append(self.post_delta(l, heads))
        return base + sum(parts) if parts else None

    def qkv_hook(self, l: int, x: str):
        """Hook on ``hook_{x}`` of layer ``l``: the base q/k/v, with every fed head's input
        recomputed from its rebuilt residual stream."""
        r, g, corr = self.runner, self.g, self.corr
        resid = corr[f"blocks.{l}.hook_resid_pre"]

        def put(act, hook):
            out = corr[f"blocks.{l}.attn.hook_{x}"].expand_as(act).clone()
            cols = r.receivers_of[(l, x)]
            for j, delta in zip(cols, self.summed(cols)):
                inp = self.rebuilt(j, resid.expand(act.shape[0], -1, -1), delta)
                if inp is not None:
                    h = int(r.receivers["head"].iat[j])
                    out[:, :, h] = project(self.model, l, x, inp, h).to(out.dtype)
                    heads = [h] if x == "q" else range(h * g.group, (h + 1) * g.group)
                    self.fed_heads[l][list(heads)] = True
            return out

        return put

    def z_hook(self, l: int):
        """Hook on ``hook_z`` of layer ``l``: unfed heads at base; records the fed heads' deltas
        (per head, or this forward's z on a post-norm layer)."""
        r, g, corr = self.runner, self.g, self.corr

        def grab_z(z, hook):
            base = corr[f"blocks.{l}.attn.hook_z"].expand_as(z)
            fed = self.fed_heads[l]
            z = torch.where(fed[None, None, :, None], z, base)
            if l in g.post_norm:
                self.z_now[l] = z
                return z
            outs = head_outputs(self.model, l, z - base)
            for h in fed.nonzero(as_tuple=True)[0].tolist():     # live senders only
                self.record(r.head_index[l][h], outs[h])
            return z

        return grab_z

    def mlp_hooks(self, l: int) -> list:
        """Hooks on layer ``l``'s MLP input (rebuilt) and output (base unless fed; records
        its delta)."""
        r, corr = self.runner, self.corr

        def mlp_in(act, hook):
            base = corr[f"blocks.{l}.ln2.hook_in"].expand_as(act)
            j = r.receivers_of[(l, "in")][0]
            inp = self.rebuilt(j, base, self.summed([j])[0])
            self.fed_mlp[l] = inp is not None
            return base.clone() if inp is None else inp

        def mlp_out(act, hook):
            base = corr[f"blocks.{l}.hook_mlp_out"].expand_as(act)
            if not self.fed_mlp[l]:
                return base.clone()
            self.record(r.sender_index[f"MLP{l}"], act - base)

        return [(f"blocks.{l}.ln2.hook_in", mlp_in), (f"blocks.{l}.hook_mlp_out", mlp_out)]

    def final(self, act, hook):
        """Hook on ``ln_final.hook_in``: the logits' rebuilt input."""
        base = self.corr["ln_final.hook_in"].expand_as(act)
        j = len(self.runner.receivers) - 1
        inp = self.rebuilt(j, base, self.summed([j])[0])
        return base.clone() if inp is None else inp

    def hooks(self) -> list:
        """Every hook of the forward, in layer order."""
        hooks = []
        for l in range(self.g.n_layers):
            hooks += [(f"blocks.{l}.attn.hook_{x}", self.qkv_hook(l, x)) for x in ("q", "k", "v")]
            hooks.append((f"blocks.{l}.attn.hook_z", self.z_hook(l)))
            if self.g.mlps:
                hooks += self.mlp_hooks(l)
        hooks.append(("ln_final.hook_in", self.final))
        return hooks


def base_cache(model, task: PatchingTask, names: list[str], ablation: str = "corrupted",
               reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Base values of the activations ``names``: the corrupted run (``[batch, ...]``) or, with
    ``ablation="mean"``, per-position means over the ``reference`` tokens (``[1, ...]``;
    ``reference`` defaults to the task's clean and corrupted tokens together)."""
    if ablation == "corrupted":
        return run_cache(model, task.corrupted, names)[1]
    if ablation != "mean":
        raise InputError(f"ablation must be 'corrupted' or 'mean', got {ablation!r}")
    ref = torch.cat([task.clean, task.corrupted]) if reference is None else reference
    ref = check_tokens(model, ref)
    if ref.shape[1] != task.clean.shape[1]:
        raise InputError(f"reference tokens have length {ref.shape[1]}, the task "
                         f"{task.clean.shape[1]}: per-position means need one length")
    _, c = run_cache(model, ref, names)
    return {k: v.mean(0, keepdim=True) for k, v in c.items()}


def run_circuit(model, task: PatchingTask, mask: torch.Tensor, ablation: str = "corrupted",
                reference: torch.Tensor | None = None) -> dict[str, float]:
    """Metric of ``task`` with only the edges in ``mask`` carrying clean information;
    returns ``{"metric", "normalised", "clean", "corrupted"}``."""
    r = CircuitRunner(model, task, ablation, reference)
    m = r.metric(mask)
    return {"metric": m, "normalised": r.normalised(m), "clean": r.clean_metric,
            "corrupted": r.corrupted_metric}
