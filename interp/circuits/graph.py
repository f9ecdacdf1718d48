"""The head-level computational graph of a model: senders, receivers and edges.

Graph
-----
Senders (nodes that write into the residual stream): ``embed`` (token + positional embedding,
``blocks.0.hook_resid_pre``), every head ``L{l}H{h}`` (its part of the layer's attention
write) and, for models with MLPs, every ``MLP{l}`` (``hook_mlp_out``, after Gemma's
post-feedforward norm). Receivers (inputs that read it): each head's ``q`` input, the ``k``
and ``v`` inputs of each KV head (``L{l}H{h}`` when every head has its own KV head;
``L{l}KV{g}`` under GQA, shared by query heads ``g*group .. (g+1)*group-1``), each ``MLP{l}``
input and ``logits``. An edge sender -> receiver exists when the sender runs before the
receiver: in parallel blocks (GPT-NeoX's parallel residual) a layer's MLP reads the
same residual as its heads, so the heads of layer ``l`` do not feed ``MLP{l}``. Edges are a
boolean matrix ``[n_senders, n_receivers]``.

What evaluates a sub-circuit of this graph is :class:`~interp.circuits.runner.CircuitRunner`
(:mod:`interp.circuits.runner`).

**Checked, never assumed.** Before anything runs, what the runner rebuilds by hand is compared
with a real forward of the task (:func:`check_graph`): every head's q/k/v from
``hook_resid_pre``, every layer's attention write from ``hook_z``, the per-head writes of
layers without a post-attention norm, and the residual stream as the sum of the writes
(``ln2.hook_in``, the next layer's ``hook_resid_pre``, ``ln_final.hook_in``). A model where
any differs is refused by name (:class:`~interp.errors.Refused`); encoders (post-LN BERT) are
refused up front.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.circuits.model import (check_inputs, check_writes, close_or_refuse, edges_exact,
                                   has_mlps, n_kv_heads, parallel_blocks, post_attention_norm)
from interp.errors import Refused


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
            Refused: (a ``NotImplementedError``) encoders (post-LN: receivers do not read the
                residual stream) and layers with features no interp consumer reproduces; the
                message names the layer and why. Node-level tools (``patch_heads``,
                ``node_attribution``, ablation) still work there.
        """
        why = edges_exact(model)
        if why is not None:
            raise Refused(
                f"edge-level circuits (ACDC, EAP, edge attribution, head_circuit) cannot "
                f"rebuild receiver inputs exactly on this model: {why}. Refusing rather than "
                f"computing a circuit the model does not have")
        L = model.cfg.n_layers
        return cls(L, model.cfg.n_heads, n_kv_heads(model), has_mlps(model),
                   parallel=parallel_blocks(model),
                   post_norm=tuple(l for l in range(L)
                                   if post_attention_norm(model, l) is not None))

    @property
    def group(self) -> int:
        """Query heads per KV head (1 without GQA)."""
        return self.n_heads // self.n_kv

    def kv_name(self, layer: int, g: int) -> str:
        """Node name of KV head ``g`` of ``layer`` (``L{l}H{g}`` without GQA, else
        ``L{l}KV{g}``)."""
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


def activation_names(g: HeadGraph) -> list[str]:
    """The activations the runner caches and :func:`check_graph` compares: every layer's
    ``hook_resid_pre``, ``hook_z``, ``hook_q/k/v``, ``hook_attn_out`` (and ``ln2.hook_in``,
    ``hook_mlp_out`` with MLPs), the embedding and ``ln_final.hook_in``."""
    names = ["blocks.0.hook_resid_pre", "ln_final.hook_in"]
    for l in range(g.n_layers):
        names += [f"blocks.{l}.hook_resid_pre", f"blocks.{l}.attn.hook_z",
                  f"blocks.{l}.attn.hook_q", f"blocks.{l}.attn.hook_k", f"blocks.{l}.attn.hook_v",
                  f"blocks.{l}.hook_attn_out"]
        if g.mlps:
            names += [f"blocks.{l}.ln2.hook_in", f"blocks.{l}.hook_mlp_out"]
    return list(dict.fromkeys(names))


def check_graph(model, g: HeadGraph, cache: dict, who: str = "edge-level circuits") -> None:
    """Refuse (:class:`~interp.errors.Refused`, a ``NotImplementedError``) unless everything
    the runner and edge attribution rebuild by hand equals the real forward whose activations
    are in ``cache`` (names of :func:`activation_names`, ``[batch, pos, ...]``): receiver
    inputs, attention writes, per-head writes, and the residual stream as embed + attention
    writes + MLP outputs at every read point."""
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
