"""Model plumbing of the circuit tools: the one module of :mod:`interp.circuits` that reads
what a model family does.

Architecture
------------
Everything a circuit tool needs to know about a layer beyond its hook points is asked here,
through small functions: how many KV heads there are (:func:`n_kv_heads`), a head's output
projection (:func:`w_out`, :func:`head_outputs`) and the layer's whole attention write with
its post-attention norm (:func:`attn_write`, :func:`post_attention_norm`), a head's q/k/v
rebuilt from the residual stream through the layer's own ``ln1`` and projection
(:func:`project`), the block wiring (:func:`parallel_blocks`, :func:`has_mlps`), whether the
model is causal (:func:`is_causal`), a forward that starts at a layer from a cached residual
(:func:`forward_from`, skipping the blocks before it where the family allows), and whether
the hand-built pieces reproduce the model (:func:`projection_exact`, :func:`edges_exact`).
The other circuit modules read hook points and call these; none of them looks at a module
name, a bridge class or a config flag.

**Exact on every family or refused.** The hand projection ``ln1(resid + delta)`` is exact
only where a head's write to the residual is linear in its ``z`` and the receiver reads
``ln1(resid_pre)``. Gemma 2/3 (and OLMo-2) normalise the attention output before adding it
(``ln1_post``): there a layer writes ``norm(sum_h z_h W_O[h] + b)``, which is not a sum of
per-head writes, so path patching reads receiver inputs from whole forwards instead and the
graph delivers a layer's heads together through :func:`attn_write`. Encoders (post-LN BERT:
``ln1`` follows attention) are refused.

**Checked, never assumed.** Before a tool uses what it rebuilds by hand, it is compared with
the activations of a real forward (:func:`check_inputs`: every head's q/k/v from
``hook_resid_pre``; :func:`check_writes`: the attention write from ``hook_z`` against
``hook_attn_out``, and the per-head writes where there is no post-attention norm); a model
where they differ is refused by name (:func:`close_or_refuse`), never approximated.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch

from interp.circuits.metrics import Metric
from interp.errors import Refused
from interp.families import describe_layers, family_of
from interp.hooks import attach
from interp.models.loading import ensure_info

INPUTS = ("q", "k", "v")


def is_causal(model) -> bool:
    """False for encoders (post-LN BERT: ``ln1`` follows attention, so receiver inputs are not
    ``ln1(resid_pre)``)."""
    return bool(ensure_info(model).causal)


def n_kv_heads(model) -> int:
    """Number of key/value heads per layer (``n_heads`` without GQA)."""
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def has_mlps(model) -> bool:
    """Whether the layers have MLPs whose output the graph sees (``hook_mlp_out``; False for
    attention-only models)."""
    return not bool(getattr(model.cfg, "attn_only", False)) and \
        "blocks.0.hook_mlp_out" in model.hook_dict


def parallel_blocks(model) -> bool:
    """Whether attention and MLP of a layer read the same residual stream (the family's block
    wiring), so a layer's heads do not feed its own MLP."""
    return family_of(model).parallel_blocks()


def w_out(model, layer: int) -> torch.Tensor:
    """``W_O`` of ``layer`` as ``[head, d_head, d_model]`` (head ``h`` writes ``z_h @ W_O[h]``)."""
    return family_of(model).w_out(layer)


def head_outputs(model, layer: int, z: torch.Tensor) -> torch.Tensor:
    """Per-head residual-stream writes ``[head, batch, pos, d_model]`` from ``z [b, pos, H, dh]``
    (without the shared output bias)."""
    return family_of(model).head_outputs(layer, z)


def project(model, layer: int, which: str, resid: torch.Tensor, head: int) -> torch.Tensor:
    """Recompute ``hook_{which}`` of one head (a query head for q, a KV head for k/v) from a
    residual-stream input ``resid [..., pos, d_model]`` through the layer's own ``ln1`` and
    projection; returns ``[..., pos, d_head]`` (before RoPE, as ``hook_q``/``hook_k`` are)."""
    return family_of(model).project(layer, which, resid, head)


def post_attention_norm(model, layer: int):
    """The raw module that normalises ``layer``'s attention output before the residual add,
    or None (the family's block wiring)."""
    return family_of(model).post_attention_norm(layer)


def attn_write(model, layer: int, z: torch.Tensor) -> torch.Tensor:
    """What ``layer``'s attention adds to the residual stream for head outputs
    ``z [..., pos, head, d_head]`` (``hook_z`` layout), through the layer's own modules: the
    output projection (with its bias) and, where the layer has one, the post-attention norm.
    Returns ``[..., pos, d_model]``. Not linear in ``z`` when there is a norm;
    :func:`check_writes` verifies it against ``hook_attn_out`` of a real forward."""
    return family_of(model).attn_write(layer, z)


def close_or_refuse(got: torch.Tensor, want: torch.Tensor, who: str, what: str) -> None:
    """Refuse (:class:`~interp.errors.Refused`, a ``NotImplementedError``) when a quantity a
    tool rebuilds from the model's modules (``got``) is not what the model's own forward
    computed (``want``, same shape): relative tolerance 1e-3 of ``want``'s scale in float32
    (3e-2 in half precision)."""
    half = min(got.element_size(), want.element_size()) < 4      # before the float32 copies
    got, want = got.detach().float(), want.detach().float()
    scale = float(want.abs().max().clamp_min(1e-6))
    err = float((got - want).abs().max())
    tol = (3e-2 if half else 1e-3) * scale
    if not err <= tol:
        raise Refused(
            f"{who}: {what} rebuilt from the layer's own modules differs from the model's "
            f"forward by {err:.3g} (scale {scale:.3g}), so this model computes something the "
            f"tool does not reproduce. Refusing rather than computing something different "
            f"from the model.")


def check_inputs(model, layer: int, cache: dict, who: str) -> None:
    """Every head's q/k/v of ``layer`` (``[batch, pos, head, d_head]``), rebuilt by
    :func:`project` from ``blocks.{layer}.hook_resid_pre``, equals ``hook_q/k/v`` in ``cache``
    (a real forward)."""
    spec = describe_layers(model)[layer]
    resid = cache[f"blocks.{layer}.hook_resid_pre"]
    for x in INPUTS:
        want = cache[f"blocks.{layer}.attn.hook_{x}"]
        got = torch.stack([project(model, layer, x, resid, h) for h in range(want.shape[2])], 2)
        close_or_refuse(got, want, who, f"{spec.describe()}: hook_{x} (ln1 + {x} projection "
                                        f"of the residual stream)")


def check_writes(model, layer: int, cache: dict, who: str, per_head: bool = True) -> None:
    """``layer``'s attention write rebuilt from ``hook_z`` (:func:`attn_write`) equals
    ``hook_attn_out`` (``[batch, pos, d_model]``); with ``per_head`` (layers without a
    post-attention norm) the per-head writes of :func:`head_outputs` plus the output bias
    also add up to it."""
    spec = describe_layers(model)[layer]
    z, want = cache[f"blocks.{layer}.attn.hook_z"], cache[f"blocks.{layer}.hook_attn_out"]
    close_or_refuse(attn_write(model, layer, z), want, who,
                    f"{spec.describe()}: the attention output written to the residual stream")
    if per_head and post_attention_norm(model, layer) is None:
        bias = family_of(model).output_bias(layer, z)
        close_or_refuse(head_outputs(model, layer, z).sum(0) + bias, want, who,
                        f"{spec.describe()}: the sum of per-head writes z_h @ W_O[h]")


def run_cache(model, tokens: torch.Tensor, names: Sequence[str],
              grad_metric: Metric | None = None) -> tuple[float, dict[str, torch.Tensor]]:
    """One forward of ``tokens [batch, seq]`` caching the activations ``names`` (detached, in
    their hook layouts); returns ``(metric, cache)`` (metric NaN without ``grad_metric``).
    With ``grad_metric``, also backpropagates it and caches gradients as ``"grad:" + name``."""
    cache: dict[str, torch.Tensor] = {}

    def saver(key: str):          # keyed by the name asked for (hook.name may be an alias)
        def fn(act, hook):
            cache[key] = act.detach()

        return fn

    fwd = [(n, saver(n)) for n in names]
    if grad_metric is None:
        with torch.no_grad(), attach(model, fwd):
            model(tokens)
        return float("nan"), cache
    live: dict[str, torch.Tensor] = {}
    with torch.enable_grad(), attach(model, grad_hooks(names, live, cache)):
        logits = model(tokens)
        m = grad_metric(logits)
    cache.update(activation_grads(m, live))
    return float(m.detach()), cache


def grad_hooks(names: Sequence[str], live: dict[str, torch.Tensor],
               cache: dict[str, torch.Tensor] | None = None) -> list:
    """Forward hooks for :func:`activation_grads`: each keeps its activation in ``live`` as a
    fresh alias node and returns it, so downstream reads that node and its gradient is what
    flows through this hook point only (one tensor may pass several hook points, e.g. the q/k/v
    inputs, and a bridge may hand a hook a reshaped view, e.g. ``hook_z``); with ``cache``,
    also the detached value, keyed by the name asked for."""
    def keeper(key: str):
        def fn(act, hook):
            if cache is not None:
                cache[key] = act.detach()
            live[key] = act.view_as(act)
            return live[key]

        return fn

    return [(n, keeper(n)) for n in names]


def activation_grads(metric: torch.Tensor,
                     acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"grad:" + name: d metric / d act}`` (detached, zeros where the metric does not depend
    on it) for the activations ``acts`` of the forward that gave the scalar ``metric``.

    ``torch.autograd.grad`` with these activations as its inputs runs only the backward paths
    that reach them: no parameter gradient is computed or stored (``metric.backward()`` would
    fill a ``.grad`` as large as the model: 7 GB on a 1.5B model in float32)."""
    names = [n for n, a in acts.items() if a.requires_grad]
    grads = torch.autograd.grad(metric, [acts[n] for n in names], allow_unused=True)
    out = {"grad:" + n: torch.zeros_like(a) for n, a in acts.items()}
    for n, g in zip(names, grads):
        if g is not None:
            out["grad:" + n] = g.detach()
    return out


def resid_name(layer: int) -> str:
    """The hook point of the residual stream entering block ``layer``."""
    return f"blocks.{layer}.hook_resid_pre"


def skip_reason(model) -> str | None:
    """None when :func:`forward_from` can skip the blocks before its layer on ``model``, else
    the family's reason (a forward from a layer then runs every block)."""
    return family_of(model).skip_reason()


@torch.no_grad()
def forward_from(model, tokens: torch.Tensor, layer: int, resid: torch.Tensor | None,
                 hooks=()) -> torch.Tensor:
    """The logits ``[n, seq, vocab]`` of ``tokens [n, seq]`` with ``hooks`` (``(name, fn)``
    pairs) attached, where the residual stream entering block ``layer``
    (``blocks.{layer}.hook_resid_pre``) is ``resid [n, seq, d_model]``: the residual a whole
    forward of ``tokens`` has there, cached beforehand (``None``: a whole forward).

    Blocks ``0 .. layer-1`` are skipped (the family adapter's
    :meth:`~interp.families.Family.skipping_blocks`; embeddings, positions and masks are still
    made by the model itself, from ``tokens``), so the forward costs the blocks from ``layer``
    on. Since those blocks see exactly what a whole forward gives them, the logits equal the
    whole forward's with the same hooks, as long as no hook sits in a skipped block (a hook on
    ``blocks.{layer}.hook_resid_pre`` itself sees ``resid``). Where the family cannot skip
    (:func:`skip_reason`) this is a whole forward with ``resid`` set at ``layer``."""
    if resid is None or layer == 0:
        with attach(model, hooks):
            return model(tokens)
    fired = []

    def enter(act, hook):
        fired.append(tuple(act.shape))
        return resid.to(act.dtype)

    skip = family_of(model).skipping_blocks(range(layer)) if skip_reason(model) is None \
        else nullcontext()
    with skip, attach(model, [(resid_name(layer), enter), *hooks]):
        out = model(tokens)
    if len(fired) != 1 or fired[0][:2] != tuple(resid.shape[:2]):
        raise RuntimeError(f"forward_from: {resid_name(layer)} fired {len(fired)} times with "
                           f"shapes {fired} (expected once, {tuple(resid.shape)})")
    return out


@torch.no_grad()
def projection_exact(model, layers: Sequence[int]) -> str | None:
    """None when :func:`project` reproduces the receiver inputs of ``layers`` exactly, else the
    reason it does not (a norm after attention, an encoder, an unsupported layer), from the
    family adapter."""
    family, specs = family_of(model), describe_layers(model)
    return next((why for why in (family.projection_reason(specs[layer]) for layer in layers)
                 if why is not None), None)


def edges_exact(model) -> str | None:
    """None when the edge-level graph (:mod:`interp.circuits.graph`: ACDC, EAP, edge
    attribution, ``head_circuit``) applies to ``model``, else the family's reason: encoders
    (post-LN: ``ln1`` follows attention, so receivers do not read the residual stream) and
    layers with features no interp consumer reproduces. Post-attention norms and parallel
    attention + MLP blocks are handled by the graph itself; what it rebuilds is checked
    against a real forward before use (:func:`check_inputs`, :func:`check_writes`)."""
    family = family_of(model)
    return next((why for why in map(family.edges_reason, describe_layers(model))
                 if why is not None), None)
