"""Activation patching: one (layer, position) of the residual stream or one head's output at a
time, from the source run into the base run.

Architecture
------------
:func:`patch_residual` patches ``blocks.{l}.hook_resid_pre`` (``[batch, pos, d_model]``) at one
position, :func:`patch_heads` one head's ``hook_z`` (``[batch, pos, head, d_head]``) at every
position. One forward per chunk of cells of one layer: the base batch is repeated once per
position (or head) and each copy gets one patch, so every (layer, position) / (layer, head)
cell is one batch row block. The direction (``"denoise"``: corrupted run, clean activations;
``"noise"``: the reverse) is that of :mod:`interp.circuits.tasks`; the normalised score is
0 = corrupted, 1 = clean either way. Each patch is a hook in the model's own forward, so it is
exact on every family (``tests/circuits/test_tools_families.py`` checks it against one hooked
forward per cell).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from interp.circuits.metrics import baseline, chunked_metric, normalise
from interp.circuits.model import run_cache
from interp.circuits.tasks import Direction, PatchingTask, base_and_source
from interp.hooks import attach


def _patch_layers(model, task, direction, hook_name, n_cells, cell_patch, layers, max_batch,
                  progress, desc, sweep=None):
    """Patch ``n_cells`` cells of each layer's ``hook_name``, ``max_batch // batch`` cells per
    forward. The unit of work is one forward (a chunk of cells of one layer): with a
    ``sweep`` the chunks go through ``sweep.pending`` (resumable; in a sharded run each rank
    computes its share and :meth:`~interp.results.Sweep.table` gathers them), and a chunk is
    the same forward whichever rank runs it, so the table equals a one-process run's."""
    task = task.checked(model)
    base_tokens, src_tokens = base_and_source(task, direction)
    ref = baseline(model, task)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    b = task.batch
    per_fwd = max(1, max_batch // b)
    chunks = [{"layer": layer, "start": start, "stop": min(n_cells, start + per_fwd)}
              for layer in layers for start in range(0, n_cells, per_fwd)]
    todo = chunks if sweep is None else list(sweep.pending(chunks))
    from tqdm.auto import tqdm

    src_layer, src_act = None, None
    computed = {}
    for chunk in tqdm(todo, desc=desc, disable=not progress):
        layer, name = chunk["layer"], hook_name(chunk["layer"])
        if layer != src_layer:
            _, src = run_cache(model, src_tokens, [name])
            src_layer, src_act = layer, src[name]
        cells = list(range(chunk["start"], chunk["stop"]))

        def hook(act, hook, cells=cells, src_act=src_act):
            act = act.clone()
            for i, c in enumerate(cells):
                cell_patch(act[i * b:(i + 1) * b], src_act, c)
            return act

        with torch.no_grad(), attach(model, [(name, hook)]):
            logits = model(base_tokens.repeat(len(cells), 1))
        result = {"metric": chunked_metric(logits, task.metric, b)}
        computed[(layer, chunk["start"], chunk["stop"])] = result["metric"]
        if sweep is not None:
            sweep.record(chunk, result)
    if sweep is not None:
        table = sweep.table()
        computed = {(int(r["layer"]), int(r["start"]), int(r["stop"])): r["metric"]
                    for r in table.to_dict("records")
                    if "start" in r and isinstance(r.get("metric"), list)}
    rows = []
    for chunk in chunks:
        metrics = computed[(chunk["layer"], chunk["start"], chunk["stop"])]
        for c, m in zip(range(chunk["start"], chunk["stop"]), metrics):
            rows.append({"layer": chunk["layer"], "cell": c, "metric": float(m),
                         "normalised": normalise(float(m), ref["clean"], ref["corrupted"])})
    df = pd.DataFrame(rows)[["layer", "cell", "metric", "normalised"]]
    df.attrs.update(ref, direction=direction)
    return df


def patch_residual(model, task: PatchingTask, direction: Direction = "denoise",
                   layers: Sequence[int] | None = None, max_batch: int = 64,
                   progress: bool = True, sweep=None) -> pd.DataFrame:
    """Patch the residual stream (``blocks.{l}.hook_resid_pre``, ``[batch, pos, d_model]``) at
    one (layer, position) at a time.

    Args:
        task: clean/corrupted ``[batch, seq]`` tokens and a metric.
        direction: ``"denoise"`` (patch clean activations into the corrupted run) or
            ``"noise"`` (the reverse).
        layers: layers to patch (default: all).
        max_batch: rows per forward (``max_batch // batch`` cells at once).
        sweep: a :class:`~interp.results.Sweep` making the chunks resumable / sharded.

    Returns:
        DataFrame ``layer, pos, metric, normalised`` (normalised: 0 = corrupted, 1 = clean);
        ``df.attrs`` holds ``clean``, ``corrupted`` and ``direction``.
    """
    n = task.clean.shape[1]

    def patch(act, src, pos):
        act[:, pos] = src[:, pos]

    df = _patch_layers(model, task, direction, lambda l: f"blocks.{l}.hook_resid_pre", n, patch,
                       layers, max_batch, progress, "patch resid", sweep)
    return df.rename(columns={"cell": "pos"})


def patch_heads(model, task: PatchingTask, direction: Direction = "denoise",
                layers: Sequence[int] | None = None, max_batch: int = 64,
                progress: bool = True, sweep=None) -> pd.DataFrame:
    """Patch each head's output ``hook_z`` (``[batch, pos, head, d_head]``, all positions) one
    head at a time (arguments as :func:`patch_residual`).

    Returns:
        DataFrame ``layer, head, metric, normalised``.
    """
    def patch(act, src, head):
        act[:, :, head] = src[:, :, head]

    df = _patch_layers(model, task, direction, lambda l: f"blocks.{l}.attn.hook_z",
                       model.cfg.n_heads, patch, layers, max_batch, progress, "patch heads", sweep)
    return df.rename(columns={"cell": "head"})
