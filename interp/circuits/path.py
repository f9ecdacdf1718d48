"""Path patching: sender head -> receiver head through the receiver's q, k or v input.

Architecture
------------
**Path patching** (:func:`path_patch`, Wang et al. 2022): the sender's output difference
``(z_src - z_base)[sender] @ W_O[sender]`` is added to the base residual stream entering the
receiver's layer and reaches ONLY the receiver's chosen input (q, k or v), which is
recomputed with the model's own modules (``ln1`` and the q/k/v projection); everything else
upstream stays at its base value, everything downstream of the receiver runs freely.

**GQA** (smollm2: 3 KV heads for 9 query heads): k and v exist per KV head, so patching a
receiver's k/v changes the shared KV head; to keep the effect to the ONE receiver query head,
the other query heads of that KV group get their base ``hook_z`` back in the same forward.

**Exact on every family or refused.** The hand projection ``ln1(resid + delta)`` is exact
only where a head's write to the residual is linear in its ``z`` and the receiver reads
``ln1(resid_pre)``. Gemma 2/3 (and OLMo-2) normalise the attention output before adding it
(a post-attention norm), so there (``method="auto"``) the receiver's input is instead read
from a whole forward of the base tokens with the sender's ``z`` from the source run and every
other head output and MLP output between sender and receiver frozen at base; the projection is
refused by name if asked for. Encoders (post-LN BERT) are refused. Before the projection
is used, what it rebuilds is checked against the base run's own activations (every head's
q/k/v from ``hook_resid_pre``, the per-head writes against ``hook_attn_out``); a model
where they differ is refused, never approximated. The forwards are the definition itself
and need no check. ``tests/circuits/test_tools_families.py`` compares both against the
brute force on every family of ``tests/families/tiny.py``.

Steps of :func:`path_patch`: choose the method (:func:`_choose_method`), one base run caching
what it needs and checking what the projection rebuilds (:func:`_base_run`), one source run
(the senders' ``hook_z``), then per (receiver, input) the receiver's new input for every
sender at once (:func:`_inputs_by_projection` or :func:`_inputs_by_forward`, ``[S*b, n, dh]``)
and one forward of the base batch repeated per sender with it patched in
(:func:`_patched_metrics`).
"""
from __future__ import annotations

from typing import Literal, Sequence

import pandas as pd
import torch

from interp.circuits.metrics import baseline, chunked_metric, normalise
from interp.circuits.model import (INPUTS, check_inputs, check_writes, is_causal, n_kv_heads,
                                   project, projection_exact, run_cache, w_out)
from interp.circuits.tasks import Direction, PatchingTask, base_and_source
from interp.errors import InputError, Refused
from interp.hooks import attach

Method = Literal["auto", "projection", "forward"]


def _choose_method(model, senders: Sequence[tuple[int, int]],
                   receivers: Sequence[tuple[int, int]], method: str) -> str:
    """``"projection"`` or ``"forward"``: ``method``, with ``"auto"`` resolved to the projection
    where it is exact (:func:`~interp.circuits.model.projection_exact`); refuses encoders and
    an inexact projection asked for by name."""
    if not is_causal(model):
        raise Refused("path_patch: encoders (post-LN BERT) are not supported: ln1 "
                      "follows attention there, so receiver inputs are not "
                      "ln1(resid_pre)")
    involved = sorted({l for l, _ in senders} | {l for l, _ in receivers})
    why = projection_exact(model, involved)
    if method == "auto":
        method = "projection" if why is None else "forward"
    elif method == "projection" and why is not None:
        raise Refused(f"path_patch: the hand projection is not exact here: {why}; "
                      f"use method='forward' (or 'auto')")
    elif method not in ("projection", "forward"):
        raise InputError(f"method must be 'auto', 'projection' or 'forward', got {method!r}")
    return method


def _base_run(model, base_tokens: torch.Tensor, senders: Sequence[tuple[int, int]],
              receivers: Sequence[tuple[int, int]], method: str) -> dict[str, torch.Tensor]:
    """The base run's cache: ``hook_z`` and ``hook_resid_pre`` of the involved layers; for the
    forwards also every ``hook_z`` / ``hook_mlp_out`` in between (the frozen values); for the
    projection also what it rebuilds (receivers' ``hook_q/k/v``, senders' ``hook_attn_out``),
    checked against :func:`~interp.circuits.model.project` and the per-head writes first."""
    layers = sorted({l for l, _ in senders} | {l for l, _ in receivers})
    names = [f"blocks.{l}.attn.hook_z" for l in layers]
    names += [f"blocks.{l}.hook_resid_pre" for l in layers]
    if method == "forward":
        between = range(min(layers), max(layers) + 1)
        names = sorted({*names, *(f"blocks.{l}.attn.hook_z" for l in between),
                        *(f"blocks.{l}.hook_mlp_out" for l in between
                          if f"blocks.{l}.hook_mlp_out" in model.hook_dict)})
    if method == "projection":               # what the projection rebuilds, checked first
        rls, sls = sorted({l for l, _ in receivers}), sorted({l for l, _ in senders})
        names += [f"blocks.{l}.attn.hook_{x}" for l in rls for x in INPUTS]
        names += [f"blocks.{l}.hook_attn_out" for l in sls]
    _, base = run_cache(model, base_tokens, list(dict.fromkeys(names)))
    if method == "projection":
        for l in rls:
            check_inputs(model, l, base, "path_patch")
        for l in sls:
            check_writes(model, l, base, "path_patch")
    return base


def _inputs_by_projection(model, src, base, snd, rl: int, x: str, target: int) -> torch.Tensor:
    """Receiver input ``hook_{x}`` of head ``target`` at layer ``rl`` ``[S*b, n, dh]``, rebuilt
    by hand (one row block per sender): ``project(resid_pre_base[rl] + (z_src - z_base)[sender]
    @ W_O[sender])``."""
    resid = base[f"blocks.{rl}.hook_resid_pre"]                   # [b, n, d]
    deltas = []
    for sl, sh in snd:
        dz = (src[f"blocks.{sl}.attn.hook_z"]
              - base[f"blocks.{sl}.attn.hook_z"])[:, :, sh]
        deltas.append(dz @ w_out(model, sl)[sh].to(dz.dtype))
    x_in = resid[None] + torch.stack(deltas)                        # [S, b, n, d]
    return project(model, rl, x, x_in, target).flatten(0, 1)       # [S*b, n, dh]


def _inputs_by_forward(model, base_tokens, src, base, snd, rl: int, x: str, target: int):
    """Receiver input ``hook_{x}`` of head ``target`` at layer ``rl`` ``[S*b, n, dh]``, read
    from whole forwards (one per sender): base tokens, the sender's z from the source run,
    every other head's z and every MLP output in layers ``[sender, rl)`` frozen at base."""
    outs = []
    for sl, sh in snd:
        def sender(z, hook, sl=sl, sh=sh):
            z = base[f"blocks.{sl}.attn.hook_z"].clone()
            z[:, :, sh] = src[f"blocks.{sl}.attn.hook_z"][:, :, sh]
            return z

        def frozen(name):
            return lambda act, hook: base[name]

        grab = {}

        def read(act, hook):
            grab["x"] = act[:, :, target].clone()
            return act

        hooks = [(f"blocks.{sl}.attn.hook_z", sender)]
        hooks += [(f"blocks.{l}.attn.hook_z", frozen(f"blocks.{l}.attn.hook_z"))
                  for l in range(sl + 1, rl)]
        hooks += [(f"blocks.{l}.hook_mlp_out", frozen(f"blocks.{l}.hook_mlp_out"))
                  for l in range(sl, rl) if f"blocks.{l}.hook_mlp_out" in base]
        hooks.append((f"blocks.{rl}.attn.hook_{x}", read))
        with torch.no_grad(), attach(model, hooks):
            model(base_tokens)
        outs.append(grab["x"])
    return torch.stack(outs).flatten(0, 1)


def _patched_metrics(model, task: PatchingTask, base_tokens: torch.Tensor, base: dict,
                     receiver: tuple[int, int], x: str, target: int, new: torch.Tensor,
                     n_snd: int, group: int) -> list[float]:
    """One forward of ``base_tokens`` repeated ``n_snd`` times (``[S*b, seq]``) with the
    receiver's ``hook_{x}`` of head ``target`` replaced by ``new [S*b, n, dh]``; for k/v the
    other query heads of the KV group get their base ``hook_z`` back. Returns the metric of
    each sender's row block (``n_snd`` floats)."""
    rl, rh = receiver
    z_base = base[f"blocks.{rl}.attn.hook_z"].repeat(n_snd, 1, 1, 1)
    keep = [h for h in range(model.cfg.n_heads) if h // group == target and h != rh]

    def put(act, hook):
        act = act.clone()
        act[:, :, target] = new.to(act.dtype)
        return act

    def restore(z, hook):
        if x == "q" or not keep:
            return z
        z = z.clone()
        z[:, :, keep] = z_base[:, :, keep]
        return z

    hooks = [(f"blocks.{rl}.attn.hook_{x}", put), (f"blocks.{rl}.attn.hook_z", restore)]
    with torch.no_grad(), attach(model, hooks):
        logits = model(base_tokens.repeat(n_snd, 1))
    return chunked_metric(logits, task.metric, task.batch)


def path_patch(model, task: PatchingTask, senders: Sequence[tuple[int, int]],
               receivers: Sequence[tuple[int, int]], inputs: Sequence[str] = INPUTS,
               direction: Direction = "denoise", progress: bool = False,
               method: Method = "auto") -> pd.DataFrame:
    """Path patching sender head -> receiver head through the receiver's q, k or v input.

    For each (sender, receiver, input) with ``sender_layer < receiver_layer``: the base run
    (corrupted for ``"denoise"``) with the receiver's ``input`` recomputed from
    ``resid_pre_base[receiver_layer] + (z_src - z_base)[sender] @ W_O[sender]`` -- only the
    sender's output difference reaches only that input; heads in between are frozen at their
    base value (they see the unmodified base residual). For k/v under GQA the KV head is shared;
    the other query heads of the group are restored to their base ``hook_z`` (see module doc).

    ``method``: ``"projection"`` recomputes the receiver input by hand (one forward per
    receiver for all senders), ``"forward"`` reads it from whole forwards with everything else
    frozen (one more forward per sender), ``"auto"`` takes the projection where it is exact
    (:func:`~interp.circuits.model.projection_exact`) and the forwards elsewhere.

    Args:
        task: clean/corrupted ``[batch, seq]`` tokens and a metric.
        senders, receivers: ``(layer, head)`` query heads.
        inputs: receiver inputs to patch, any of ``"q"``, ``"k"``, ``"v"``.

    Returns:
        DataFrame ``sender_layer, sender_head, receiver_layer, receiver_head, input, metric,
        normalised`` (``attrs["method"]``: the method used).

    Raises:
        Refused: (a ``NotImplementedError``) ``method="projection"`` on a model where it is not
            exact, or an encoder.
        InputError: an unknown ``method`` or ``direction``.
    """
    task = task.checked(model)
    method = _choose_method(model, senders, receivers, method)
    base_tokens, src_tokens = base_and_source(task, direction)
    ref = baseline(model, task)
    group = model.cfg.n_heads // n_kv_heads(model)
    layers = sorted({l for l, _ in senders} | {l for l, _ in receivers})
    base = _base_run(model, base_tokens, senders, receivers, method)
    _, src = run_cache(model, src_tokens, [f"blocks.{l}.attn.hook_z" for l in layers])
    rows = []
    from tqdm.auto import tqdm

    jobs = [(r, x) for r in receivers for x in inputs]
    for (rl, rh), x in tqdm(jobs, desc="path patching", disable=not progress):
        snd = [s for s in senders if s[0] < rl]
        if not snd:
            continue
        target = rh if x == "q" else rh // group
        if method == "forward":
            new = _inputs_by_forward(model, base_tokens, src, base, snd, rl, x, target)
        else:
            new = _inputs_by_projection(model, src, base, snd, rl, x, target)
        metrics = _patched_metrics(model, task, base_tokens, base, (rl, rh), x, target, new,
                                   len(snd), group)
        for (sl, sh), m in zip(snd, metrics):
            rows.append({"sender_layer": sl, "sender_head": sh, "receiver_layer": rl,
                         "receiver_head": rh, "input": x, "metric": m,
                         "normalised": normalise(m, ref["clean"], ref["corrupted"])})
    df = pd.DataFrame(rows, columns=["sender_layer", "sender_head", "receiver_layer",
                                     "receiver_head", "input", "metric", "normalised"])
    df.attrs.update(ref, direction=direction, method=method)
    return df
