"""Activation patching: one (layer, position) of the residual stream, or one head's output,
query, key, value or attention pattern (at every position or one position at a time), from
the source run into the base run.

Architecture
------------
:func:`patch_residual` patches ``blocks.{l}.hook_resid_pre`` (``[batch, pos, d_model]``) at one
position, :func:`patch_heads` one head's ``hook_z`` / ``hook_q`` / ``hook_k`` / ``hook_v``
(``[batch, pos, head, d_head]``; k/v by key/value head under GQA) or ``hook_pattern``
(``[batch, head, dest, src]``) at every position or at one position; single pattern entries
are :func:`interp.circuits.positions.patch_pattern`. The cells (what one row of the table
patches) are built in :mod:`interp.circuits.positions`; :func:`_patch_layers` runs them.

- **Batched.** One forward per chunk of cells of one layer: the base batch is repeated once
  per cell and each copy gets one patch, so every cell is one block of batch rows.
- **Starts at the patched layer.** A patched forward runs only the blocks from the patched
  layer on: the blocks before it are skipped and the residual entering the layer is the base
  run's, cached (:func:`interp.circuits.model.forward_from`; the family adapter says whether
  its block loop allows it, else whole forwards). Nothing before the patched layer depends on
  the patch, so the result is the whole hooked forward's; the cost falls with depth. The
  residuals are carried from one patched layer to the next (two partial forwards per layer,
  base and source, which also cache the source activation), so memory stays at one layer's.
- **Direction.** ``"denoise"``: corrupted run, clean activations; ``"noise"``: the reverse (as
  in :mod:`interp.circuits.tasks`); the normalised score is 0 = corrupted, 1 = clean either way.
- **Exact or refused.** Each patch is a hook in the model's own forward, so it is what one
  hooked forward per cell gives (``tests/circuits/test_tools_families.py``,
  ``tests/circuits/test_patch_positions.py``). A hook point whose edits the bridge discards
  (BERT's ``hook_pattern`` fires after HF's attention used the pattern) is refused by name
  (:class:`~interp.errors.Refused`, from the family adapter's ``patch_reason``).
- **Resumable.** With a ``sweep`` the unit of work is one forward (a chunk of cells); chunks of
  anything but today's per-head ``hook_z`` table carry a ``cells`` field naming the component
  and a digest of the cell list, so two tables never share records.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from interp.circuits.metrics import baseline, chunked_metric, normalise
from interp.circuits.model import forward_from, resid_name, skip_reason
from interp.circuits.tasks import Direction, PatchingTask, base_and_source
from interp.errors import InputError

CellPatch = Callable[[torch.Tensor, torch.Tensor, dict], None]


def check_layers(model, layers: Sequence[int] | None) -> list[int]:
    """``layers`` as a list of valid layer indices (default: all); InputError otherwise."""
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    out = list(layers) if not isinstance(layers, int) else [layers]
    bad = [l for l in out if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l < n]
    if bad or not out:
        raise InputError(f"layers must be layer indices in [0, {n}), got {layers!r}")
    return out


def _cache(model, tokens, layer, resid, names) -> dict[str, torch.Tensor]:
    """The activations ``names`` of one forward of ``tokens`` started at ``layer`` from
    ``resid`` (:func:`~interp.circuits.model.forward_from`)."""
    cache: dict[str, torch.Tensor] = {}

    def saver(key):
        def fn(act, hook):
            cache[key] = act.detach()

        return fn

    forward_from(model, tokens, layer, resid, [(n, saver(n)) for n in names])
    return cache


def _patch_layers(model, task: PatchingTask, direction: Direction,
                  hook_name: Callable[[int], str], cells: list[dict], cell_patch: CellPatch,
                  layers, max_batch: int, progress: bool, desc: str, sweep=None,
                  tag: str | None = None,
                  check_source: Callable[[torch.Tensor], None] | None = None) -> pd.DataFrame:
    """Patch every cell of ``cells`` (one dict of table columns each) in each layer's
    ``hook_name(layer)``, ``max_batch // batch`` cells per forward:
    ``cell_patch(act [batch, ...], source act, cell)`` edits one batch block in place.

    The unit of work is one forward (a chunk of cells of one layer): with a ``sweep`` the
    chunks go through ``sweep.pending`` (resumable; in a sharded run each rank computes its
    share and :meth:`~interp.results.Sweep.table` gathers them), and a chunk is the same
    forward whichever rank runs it, so the table equals a one-process run's. ``tag`` (a
    string naming the cell list) goes into every chunk point, so tables of different cells
    never share sweep records; ``check_source`` sees each layer's source activation first."""
    task = task.checked(model)
    base_tokens, src_tokens = base_and_source(task, direction)
    layers = check_layers(model, layers)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InputError(f"max_batch must be a positive int, got {max_batch!r}")
    ref = baseline(model, task)
    b = task.batch
    per_fwd = max(1, max_batch // b)
    n = len(cells)
    extra = {} if tag is None else {"cells": tag}
    chunks = [{"layer": layer, "start": start, "stop": min(n, start + per_fwd), **extra}
              for layer in layers for start in range(0, n, per_fwd)]
    todo = chunks if sweep is None else list(sweep.pending(chunks))
    from tqdm.auto import tqdm

    skip = skip_reason(model) is None
    at = {"layer": None, "base": None, "src": None}     # the layer whose residuals are held
    computed = {}
    for chunk in tqdm(todo, desc=desc, disable=not progress):
        layer, name = chunk["layer"], hook_name(chunk["layer"])
        if layer != at["layer"]:
            # carry the residuals from the last layer when it came before this one
            frm = at["layer"] if skip and at["layer"] is not None and at["layer"] < layer else 0
            want = [resid_name(layer)] if skip and layer > 0 else []
            held = (at["base"], at["src"]) if frm else (None, None)
            base = _cache(model, base_tokens, frm, held[0], want) if want else {}
            src = _cache(model, src_tokens, frm, held[1], want + [name])
            at = {"layer": layer, "base": base.get(resid_name(layer)),
                  "src": src.get(resid_name(layer)), "act": src[name]}
            if check_source is not None:
                check_source(at["act"])
        part = cells[chunk["start"]:chunk["stop"]]

        def hook(act, hook, part=part, src_act=at["act"]):
            act = act.clone()
            for i, c in enumerate(part):
                cell_patch(act[i * b:(i + 1) * b], src_act, c)
            return act

        k = len(part)
        start = None if at["base"] is None else at["base"].repeat(k, 1, 1)
        logits = forward_from(model, base_tokens.repeat(k, 1), layer, start, [(name, hook)])
        result = {"metric": chunked_metric(logits, task.metric, b)}
        computed[(layer, chunk["start"], chunk["stop"])] = result["metric"]
        if sweep is not None:
            sweep.record(chunk, result)
    if sweep is not None:
        computed = {}
        for r in sweep.table().to_dict("records"):
            mine = r.get("cells") == tag if tag is not None \
                else not isinstance(r.get("cells"), str)
            if "start" in r and isinstance(r.get("metric"), list) and mine:
                computed[(int(r["layer"]), int(r["start"]), int(r["stop"]))] = r["metric"]
    rows = []
    for chunk in chunks:
        metrics = computed[(chunk["layer"], chunk["start"], chunk["stop"])]
        for cell, m in zip(cells[chunk["start"]:chunk["stop"]], metrics):
            rows.append({"layer": chunk["layer"], **cell, "metric": float(m),
                         "normalised": normalise(float(m), ref["clean"], ref["corrupted"])})
    columns = ["layer", *(cells[0] if cells else {}), "metric", "normalised"]
    df = pd.DataFrame(rows, columns=columns)
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
    def patch(act, src, cell):
        act[:, cell["pos"]] = src[:, cell["pos"]]

    cells = [{"pos": p} for p in range(task.clean.shape[1])]
    return _patch_layers(model, task, direction, resid_name, cells, patch, layers, max_batch,
                         progress, "patch resid", sweep)


def patch_heads(model, task: PatchingTask, direction: Direction = "denoise",
                layers: Sequence[int] | None = None, component: str = "z",
                by_position: bool = False, max_batch: int = 64, progress: bool = True,
                sweep=None, positions: Sequence[int] | None = None) -> pd.DataFrame:
    """Patch one head's ``component`` at a time, at every position or one position at a time.

    ``component`` is the hook point ``blocks.{l}.attn.hook_{component}``:

    - ``"z"`` (the head's output, ``[batch, pos, head, d_head]``), ``"q"`` (query, before
      RoPE / q-norm as the bridge hooks it): one row per query head;
    - ``"k"``, ``"v"`` (``[batch, pos, kv_head, d_head]``): one row per key/value head. Under
      GQA (fewer KV heads than query heads) ``head`` is the KV head and ``query_heads`` names
      the query heads that read it (``"0,1"``: query heads ``g*group .. (g+1)*group - 1`` for
      KV head ``g``, ``group = n_heads / n_kv_heads``); without GQA ``query_heads`` is the
      head itself;
    - ``"pattern"`` (``[batch, head, dest, src]``, after softmax): the whole pattern of a query
      head, or with ``by_position`` one destination (query) row ``[dest, :]`` at a time, as
      TransformerLens' ``get_act_patch_attn_head_pattern_by_pos``. Single entries:
      :func:`~interp.circuits.positions.patch_pattern`.

    Args:
        task: clean/corrupted ``[batch, seq]`` tokens and a metric.
        direction: ``"denoise"`` (clean activations into the corrupted run) or ``"noise"``.
        layers: layers to patch (default: all).
        component: ``"z" | "q" | "k" | "v" | "pattern"``.
        by_position: one row per (layer, head, position) with a ``pos`` column (for
            ``"pattern"`` the destination row); False: every position of the head at once.
        max_batch: rows per forward (``max_batch // batch`` cells at once).
        sweep: a :class:`~interp.results.Sweep` making the chunks resumable / sharded.
        positions: with ``by_position``, the positions to patch (default: all ``seq``).

    Returns:
        DataFrame ``layer, head, [query_heads,] [pos,] metric, normalised`` (``query_heads``
        for k/v, ``pos`` with ``by_position``); ``by_position=False`` with ``"z"`` is the
        table ``layer, head, metric, normalised``. ``df.attrs``: ``clean``, ``corrupted``,
        ``direction``, ``component``.

    Raises:
        InputError: an unknown ``component``, bad ``layers`` / ``positions`` / ``max_batch``.
        Refused: a component whose hook edits the model's bridge discards (named).
    """
    from interp.circuits.positions import head_cells

    spec = head_cells(model, task, component, by_position, positions, "patch_heads")
    df = _patch_layers(model, task, direction, spec.hook, spec.cells, spec.patch, layers,
                       max_batch, progress, f"patch heads ({component})", sweep, spec.tag,
                       spec.check)
    df.attrs["component"] = component
    return df
