"""The head-level computational graph and running a model restricted to a circuit.

Graph
-----
Senders (nodes that write into the residual stream): ``embed`` (token + positional embedding,
``blocks.0.hook_resid_pre``), every head ``L{l}H{h}`` (``z_h @ W_O[h]``) and, for models with
MLPs, every ``MLP{l}`` (``hook_mlp_out``). Receivers (inputs that read it): each head's
``q`` input, the ``k`` and ``v`` inputs of each KV head (``L{l}H{h}`` when every head has its
own KV head; ``L{l}KV{g}`` under GQA, shared by query heads ``g*group .. (g+1)*group-1``),
each ``MLP{l}`` input and ``logits``. An edge sender -> receiver exists when the sender runs
before the receiver. Edges are a boolean matrix ``[n_senders, n_receivers]``.

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
``empty_metric`` (everything at its mean). Normalisation stays 0 = corrupted, 1 = clean.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.circuits.patching import (PatchingTask, head_outputs, n_kv_heads, normalise,
                                      project, run_cache)
from interp.hooks import attach
from interp.probes.common import check_tokens


@dataclass
class HeadGraph:
    """Senders, receivers and which edges exist, for one model."""

    n_layers: int
    n_heads: int
    n_kv: int
    mlps: bool

    @classmethod
    def of(cls, model) -> "HeadGraph":
        """The graph of ``model``.

        Raises:
            NotImplementedError: a model where rebuilding receiver inputs by hand is not exact
                (Gemma's post-attention norms, parallel attention + MLP blocks, encoders);
                the message names the layer and why. Node-level patching
                (``patch_heads``, ``path_patch``) still works there.
        """
        from interp.circuits.patching import edges_exact

        why = edges_exact(model)
        if why is not None:
            raise NotImplementedError(
                f"edge-level circuits (ACDC, EAP, edge attribution, head_circuit) cannot "
                f"rebuild receiver inputs exactly on this model: {why}. Refusing rather than "
                f"computing a circuit the model does not have")
        return cls(model.cfg.n_layers, model.cfg.n_heads, n_kv_heads(model),
                   not bool(getattr(model.cfg, "attn_only", False)))

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
        the query head for q, the KV head for k/v)."""
        rows = []
        for l in range(self.n_layers):
            rows += [{"node": f"L{l}H{h}", "input": "q", "layer": l, "head": h,
                      "stage": 2 * l + 1} for h in range(self.n_heads)]
            for x in ("k", "v"):
                rows += [{"node": self.kv_name(l, g), "input": x, "layer": l, "head": g,
                          "stage": 2 * l + 1} for g in range(self.n_kv)]
            if self.mlps:
                rows.append({"node": f"MLP{l}", "input": "in", "layer": l, "head": -1,
                             "stage": 2 * l + 2})
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
                  f"blocks.{l}.attn.hook_q", f"blocks.{l}.attn.hook_k", f"blocks.{l}.attn.hook_v"]
        if g.mlps:
            names += [f"blocks.{l}.ln2.hook_in", f"blocks.{l}.hook_mlp_out"]
    return list(dict.fromkeys(names))


class CircuitRunner:
    """Caches the base values of a task once (the corrupted run, or per-position means over
    ``reference`` tokens with ``ablation="mean"``); :meth:`metric` then evaluates any edge mask
    with one forward (see module doc)."""

    def __init__(self, model, task: PatchingTask, ablation: str = "corrupted",
                 reference: torch.Tensor | None = None):
        self.model, self.task = model, task.checked(model)
        self.graph = HeadGraph.of(model)
        self.ablation = ablation
        self.corr = base_cache(model, self.task, _names(self.graph), ablation, reference)
        _, clean = run_cache(model, self.task.clean, ["blocks.0.hook_resid_pre"])
        self.embed_delta = clean["blocks.0.hook_resid_pre"] - self.corr["blocks.0.hook_resid_pre"]
        with torch.no_grad():
            self.clean_metric = float(self.task.metric(model(self.task.clean)))
            self.corrupted_metric = float(self.task.metric(model(self.task.corrupted)))
        self.senders = self.graph.senders()
        self.receivers = self.graph.receivers()
        self.valid = self.graph.valid()
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
        rows_by_layer: dict[tuple[int, str], list[int]] = {}
        for j, r in enumerate(self.receivers.itertuples()):
            rows_by_layer.setdefault((r.layer, r.input), []).append(j)

        def rebuilt(j: int, base: torch.Tensor) -> torch.Tensor | None:
            src = mask[:, j].nonzero(as_tuple=True)[0].tolist()
            src = [s for s in src if s in deltas]
            if not src:
                return None
            return base + sum(deltas[s] for s in src)

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
                outs = head_outputs(model, l, z - base)
                for h in fed.nonzero(as_tuple=True)[0].tolist():     # live senders only
                    deltas[sidx[f"L{l}H{h}"]] = outs[h]
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
