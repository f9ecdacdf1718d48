"""The head-level computational graph and running a model restricted to a circuit.

Graph
-----
Senders (nodes that write into the residual stream): ``embed`` (token + positional embedding,
``blocks.0.hook_resid_pre``), every head ``L{l}H{h}`` (its part of the layer's attention
write) and, for models with MLPs, every ``MLP{l}`` (``hook_mlp_out``, after Gemma's
post-feedforward norm). Receivers (inputs that read it): each head's ``q`` input, the ``k``
and ``v`` inputs of each KV head (``L{l}H{h}`` when every head has its own KV head;
``L{l}KV{g}`` under GQA, shared by query heads ``g*group .. (g+1)*group-1``), each ``MLP{l}``
input and ``logits``. An edge sender -> receiver exists when the sender runs before the
receiver: in parallel blocks (GPT-NeoX ``use_parallel_residual``) a layer's MLP reads the
same residual as its heads, so the heads of layer ``l`` do not feed ``MLP{l}``. Edges are a
boolean matrix ``[n_senders, n_receivers]``.

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

**Post-attention norms** (Gemma 2/3 ``post_attention_layernorm``): there a layer writes
``norm(sum_h z_h W_O[h] + b)``, which is not a sum of per-head writes. The heads of such a
layer that feed receiver ``r`` are delivered together: ``r`` gets
``write(z with those heads at "now", the others at base) - write(z at base)``, computed with
the layer's own output projection and norm (:func:`~interp.circuits.patching.attn_write`).
One edge is exactly the sender's output difference delivered to that input (as in path
patching), every edge reproduces the clean run and none the corrupted one; on layers without
such a norm the rule is the per-head sum above, unchanged.

**Checked, never assumed.** Before anything runs, what the runner rebuilds by hand is compared
with a real forward of the task (:func:`check_graph`): every head's q/k/v from
``hook_resid_pre``, every layer's attention write from ``hook_z``, the per-head writes of
layers without a post-attention norm, and the residual stream as the sum of the writes
(``ln2.hook_in``, the next layer's ``hook_resid_pre``, ``ln_final.hook_in``). A model where
any differs is refused by name (``NotImplementedError``); encoders (post-LN BERT) are refused
up front.

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
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.circuits.patching import (PatchingTask, attn_write, check_inputs, check_writes,
                                      close_or_refuse, head_outputs, n_kv_heads, normalise,
                                      post_attention_norm, project, run_cache)
from interp.hooks import attach
from interp.probes.common import check_tokens


@dataclass
class HeadGraph:
    """Senders, receivers and which edges exist, for one model.

    Attributes:
        parallel: attention and MLP of a layer read the same residual (GPT-NeoX).
        post_norm: layers whose attention output is normalised before the residual add.
    """

    n_layers: int
    n_heads: int
    n_kv: int
    mlps: bool
    parallel: bool = False
    post_norm: tuple[int, ...] = ()

    @classmethod
    def of(cls, model) -> "HeadGraph":
        """The graph of ``model``.

        Raises:
            NotImplementedError: encoders (post-LN: receivers do not read the residual
                stream) and layers with features no interp consumer reproduces; the message
                names the layer and why. Node-level tools (``patch_heads``,
                ``node_attribution``, ablation) still work there.
        """
        from interp.circuits.patching import edges_exact

        why = edges_exact(model)
        if why is not None:
            raise NotImplementedError(
                f"edge-level circuits (ACDC, EAP, edge attribution, head_circuit) cannot "
                f"rebuild receiver inputs exactly on this model: {why}. Refusing rather than "
                f"computing a circuit the model does not have")
        L = model.cfg.n_layers
        mlps = not bool(getattr(model.cfg, "attn_only", False)) and \
            "blocks.0.hook_mlp_out" in model.hook_dict
        return cls(L, model.cfg.n_heads, n_kv_heads(model), mlps,
                   parallel=bool(getattr(model.cfg, "parallel_attn_mlp", False)),
                   post_norm=tuple(l for l in range(L)
                                   if post_attention_norm(model, l) is not None))

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv

    def kv_name(self, layer: int, g: int) -> str:
        return f"L{layer}H{g}" if self.group == 1 else f"L{layer}KV{g}"

    def senders(self) -> pd.DataFrame:
        """One row per sender: ``name, kind, layer, head, stage``."""
        rows = [{"name": "embed", "kind": "embed", "layer": -1, "head": -1, "stage": 0}]
        for l in range(self.n_layers):
            rows += [{"name": f"L{l}H{h}", "kind": "head", "layer": l, "head": h,
                      "stage": 2 * l + 1} for h in range(self.n_heads)]
            if self.mlps:
                rows.append({"name": f"MLP{l}", "kind": "mlp", "layer": l, "head": -1,
                             "stage": 2 * l + 2})
        return pd.DataFrame(rows)

    def receivers(self) -> pd.DataFrame:
        """One row per receiver input: ``name, node, input, layer, head, stage`` (``head`` is
        the query head for q, the KV head for k/v). A receiver reads everything of a smaller
        stage: in parallel blocks an MLP has its own layer's heads' stage."""
        rows = []
        for l in range(self.n_layers):
            rows += [{"node": f"L{l}H{h}", "input": "q", "layer": l, "head": h,
                      "stage": 2 * l + 1} for h in range(self.n_heads)]
            for x in ("k", "v"):
                rows += [{"node": self.kv_name(l, g), "input": x, "layer": l, "head": g,
                          "stage": 2 * l + 1} for g in range(self.n_kv)]
            if self.mlps:
                rows.append({"node": f"MLP{l}", "input": "in", "layer": l, "head": -1,
                             "stage": 2 * l + (1 if self.parallel else 2)})
        rows.append({"node": "logits", "input": "in", "layer": self.n_layers, "head": -1,
                     "stage": 2 * self.n_layers + 3})
        df = pd.DataFrame(rows)
        df.insert(0, "name", [n if x == "in" else f"{n}.{x}" for n, x in zip(df.node, df.input)])
        return df

    def valid(self) -> torch.Tensor:
        """``[n_senders, n_receivers]`` bool: which edges exist."""
        s = torch.tensor(self.senders().stage.to_numpy())
        r = torch.tensor(self.receivers().stage.to_numpy())
        return s[:, None] < r[None, :]

    def edges_frame(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> pd.DataFrame:
        """A tidy edge table from a ``[senders, receivers]`` score matrix (valid edges, or those
        in ``mask``): ``sender, receiver, input, score``, sorted by ``|score|`` descending."""
        snd, rcv = self.senders(), self.receivers()
        keep = self.valid() if mask is None else mask & self.valid()
        si, ri = keep.nonzero(as_tuple=True)
        df = pd.DataFrame({"sender": snd.name.to_numpy()[si.numpy()],
                           "receiver": rcv.node.to_numpy()[ri.numpy()],
                           "input": rcv.input.to_numpy()[ri.numpy()],
                           "sender_layer": snd.layer.to_numpy()[si.numpy()],
                           "receiver_layer": rcv.layer.to_numpy()[ri.numpy()],
                           "score": scores[si, ri].double().numpy()})
        return df.reindex(df.score.abs().sort_values(ascending=False).index).reset_index(drop=True)


def _names(g: HeadGraph) -> list[str]:
    names = ["blocks.0.hook_resid_pre", "ln_final.hook_in"]
    for l in range(g.n_layers):
        names += [f"blocks.{l}.hook_resid_pre", f"blocks.{l}.attn.hook_z",
                  f"blocks.{l}.attn.hook_q", f"blocks.{l}.attn.hook_k", f"blocks.{l}.attn.hook_v",
                  f"blocks.{l}.hook_attn_out"]
        if g.mlps:
            names += [f"blocks.{l}.ln2.hook_in", f"blocks.{l}.hook_mlp_out"]
    return list(dict.fromkeys(names))


def check_graph(model, g: HeadGraph, cache: dict, who: str = "edge-level circuits") -> None:
    """Refuse (``NotImplementedError``) unless everything the runner and edge attribution
    rebuild by hand equals the real forward whose activations are in ``cache`` (names of
    :func:`_names`): receiver inputs, attention writes, per-head writes, and the residual
    stream as embed + attention writes + MLP outputs at every read point."""
    for l in range(g.n_layers):
        check_inputs(model, l, cache, who)
        check_writes(model, l, cache, who)
        pre, att = cache[f"blocks.{l}.hook_resid_pre"], cache[f"blocks.{l}.hook_attn_out"]
        after = pre + att
        if g.mlps:
            mid = pre if g.parallel else after
            close_or_refuse(mid, cache[f"blocks.{l}.ln2.hook_in"], who,
                            f"layer {l}: the MLP's input as the residual stream "
                            f"{'before' if g.parallel else 'after'} the layer's attention")
            after = after + cache[f"blocks.{l}.hook_mlp_out"]
        nxt = (cache[f"blocks.{l + 1}.hook_resid_pre"] if l + 1 < g.n_layers
               else cache["ln_final.hook_in"])
        close_or_refuse(after, nxt, who, f"layer {l}: the residual stream after the layer as "
                                         f"its input plus the attention and MLP writes")


class CircuitRunner:
    """Caches the base values of a task once (the corrupted run, or per-position means over
    ``reference`` tokens with ``ablation="mean"``); :meth:`metric` then evaluates any edge mask
    with one forward (see module doc)."""

    def __init__(self, model, task: PatchingTask, ablation: str = "corrupted",
                 reference: torch.Tensor | None = None):
        self.model, self.task = model, task.checked(model)
        self.graph = g = HeadGraph.of(model)
        self.ablation = ablation
        names = _names(g)
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

    @property
    def empty_metric(self) -> float:
        """Metric of the empty circuit (= the corrupted metric with ``ablation="corrupted"``)."""
        if self._empty is None:
            self._empty = self.metric(torch.zeros_like(self.valid))
        return self._empty

    def normalised(self, value: float) -> float:
        return normalise(value, self.clean_metric, self.corrupted_metric)

    @torch.no_grad()
    def metric(self, mask: torch.Tensor) -> float:
        """Metric of the run restricted to the edges in ``mask [senders, receivers]``."""
        model, g, corr = self.model, self.graph, self.corr
        mask = mask & self.valid
        deltas: dict[int, torch.Tensor] = {0: self.embed_delta}       # sender idx -> [b, n, d]
        sidx = {n: i for i, n in enumerate(self.senders.name)}
        head_idx = [[sidx[f"L{l}H{h}"] for h in range(g.n_heads)] for l in range(g.n_layers)]
        rows_by_layer: dict[tuple[int, str], list[int]] = {}
        for j, r in enumerate(self.receivers.itertuples()):
            rows_by_layer.setdefault((r.layer, r.input), []).append(j)
        z_now: dict[int, torch.Tensor] = {}        # post-norm layers: z of this forward
        joint: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}

        def post_delta(l: int, heads: tuple[int, ...]) -> torch.Tensor:
            if (l, heads) not in joint:
                z = corr[f"blocks.{l}.attn.hook_z"].expand_as(z_now[l]).clone()
                z[:, :, list(heads)] = z_now[l][:, :, list(heads)]
                joint[(l, heads)] = attn_write(model, l, z) - self.base_write[l]
            return joint[(l, heads)]

        def rebuilt(j: int, base: torch.Tensor) -> torch.Tensor | None:
            src = mask[:, j].nonzero(as_tuple=True)[0].tolist()
            parts = [deltas[s] for s in src if s in deltas]
            for l in g.post_norm:
                if not self.valid[head_idx[l][0], j]:
                    continue                                     # not upstream of j
                if l in self.write_fix:
                    base = base + self.write_fix[l]
                if l in z_now:
                    heads = tuple(h for h in range(g.n_heads)
                                  if mask[head_idx[l][h], j] and fed_heads[l][h])
                    if heads:
                        parts.append(post_delta(l, heads))
            return base + sum(parts) if parts else None

        fed_heads = [torch.zeros(g.n_heads, dtype=torch.bool, device=self.embed_delta.device)
                     for _ in range(g.n_layers)]
        fed_mlp = [False] * g.n_layers
        hooks = []
        for l in range(g.n_layers):
            resid = corr[f"blocks.{l}.hook_resid_pre"]
            for x in ("q", "k", "v"):
                def put(act, hook, l=l, x=x, resid=resid):
                    out = corr[f"blocks.{l}.attn.hook_{x}"].expand_as(act).clone()
                    for j in rows_by_layer[(l, x)]:
                        inp = rebuilt(j, resid.expand(act.shape[0], -1, -1))
                        if inp is not None:
                            h = int(self.receivers["head"].iat[j])
                            out[:, :, h] = project(model, l, x, inp, h).to(out.dtype)
                            heads = [h] if x == "q" else range(h * g.group, (h + 1) * g.group)
                            fed_heads[l][list(heads)] = True
                    return out

                hooks.append((f"blocks.{l}.attn.hook_{x}", put))

            def grab_z(z, hook, l=l):
                base = corr[f"blocks.{l}.attn.hook_z"].expand_as(z)
                fed = fed_heads[l]
                z = torch.where(fed[None, None, :, None], z, base)
                if l in g.post_norm:
                    z_now[l] = z
                    return z
                outs = head_outputs(model, l, z - base)
                for h in fed.nonzero(as_tuple=True)[0].tolist():     # live senders only
                    deltas[head_idx[l][h]] = outs[h]
                return z

            hooks.append((f"blocks.{l}.attn.hook_z", grab_z))
            if g.mlps:
                def mlp_in(act, hook, l=l):
                    base = corr[f"blocks.{l}.ln2.hook_in"].expand_as(act)
                    inp = rebuilt(rows_by_layer[(l, "in")][0], base)
                    fed_mlp[l] = inp is not None
                    return base.clone() if inp is None else inp

                def mlp_out(act, hook, l=l):
                    base = corr[f"blocks.{l}.hook_mlp_out"].expand_as(act)
                    if not fed_mlp[l]:
                        return base.clone()
                    deltas[sidx[f"MLP{l}"]] = act - base

                hooks += [(f"blocks.{l}.ln2.hook_in", mlp_in),
                          (f"blocks.{l}.hook_mlp_out", mlp_out)]

        def final(act, hook):
            base = corr["ln_final.hook_in"].expand_as(act)
            inp = rebuilt(len(self.receivers) - 1, base)
            return base.clone() if inp is None else inp

        hooks.append(("ln_final.hook_in", final))
        with attach(model, hooks):
            logits = model(self.task.corrupted)
        return float(self.task.metric(logits))


def base_cache(model, task: PatchingTask, names: list[str], ablation: str = "corrupted",
               reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Base values of the activations ``names``: the corrupted run (``[batch, ...]``) or, with
    ``ablation="mean"``, per-position means over the ``reference`` tokens (``[1, ...]``;
    ``reference`` defaults to the task's clean and corrupted tokens together)."""
    if ablation == "corrupted":
        return run_cache(model, task.corrupted, names)[1]
    if ablation != "mean":
        raise ValueError(f"ablation must be 'corrupted' or 'mean', got {ablation!r}")
    ref = torch.cat([task.clean, task.corrupted]) if reference is None else reference
    ref = check_tokens(model, ref)
    if ref.shape[1] != task.clean.shape[1]:
        raise ValueError(f"reference tokens have length {ref.shape[1]}, the task "
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
