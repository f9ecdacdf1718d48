"""Patching by position and by attention-pattern entry: the cells of
:func:`interp.circuits.activation.patch_heads` (``component``, ``by_position``) and
:func:`patch_pattern`.

Architecture
------------
A *cell* is what one row of a patching table patches: one head of one hook point, at every
position or at one position, or one ``[dest, src]`` entry of one head's pattern.
:func:`head_cells` / :func:`patch_pattern` turn the arguments into a list of cells (the table
columns of each) and a function that copies one cell from the source activation into a batch
block of the base activation; :func:`interp.circuits.activation._patch_layers` runs them,
several cells per forward, starting each forward at the patched layer.

Hook layouts on the TransformerLens 4 bridges (checked on every family by
``tests/circuits/test_patch_positions.py``):

===========  ===================================  ============================================
component    hook point (layer l)                 layout
===========  ===================================  ============================================
``z``        ``blocks.{l}.attn.hook_z``           ``[batch, pos, n_heads, d_head]``
``q``        ``blocks.{l}.attn.hook_q``           ``[batch, pos, n_heads, d_head]`` (pre-RoPE)
``k``, ``v`` ``blocks.{l}.attn.hook_k`` / ``_v``  ``[batch, pos, n_kv_heads, d_head]`` (GQA:
                                                  KV head ``g`` is read by query heads
                                                  ``g*group .. (g+1)*group-1``)
``pattern``  ``blocks.{l}.attn.hook_pattern``     ``[batch, n_heads, dest, src]`` (post-softmax)
===========  ===================================  ============================================

Whether a hook point's edits reach the output is the family adapter's
(:meth:`~interp.families.Family.patch_reason`): BERT's bridge fires ``hook_pattern`` after HF's
attention has used the pattern, so pattern patching is refused there by name.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch

from interp.circuits.model import is_causal, n_kv_heads
from interp.circuits.tasks import Direction, PatchingTask
from interp.errors import InputError, Refused
from interp.families import family_of

#: the head components :func:`~interp.circuits.activation.patch_heads` patches
COMPONENTS = ("z", "q", "k", "v", "pattern")


@dataclass
class Cells:
    """What a patching call patches: ``hook(layer)`` names the hook point, ``cells`` the table
    columns of each cell, ``patch(act, src, cell)`` copies one cell from the source activation
    ``src`` into a base batch block ``act`` (in place), ``tag`` names the cell list in sweep
    records (None: today's per-head ``hook_z`` table), ``check(src)`` verifies the source
    activation's layout."""

    hook: Callable[[int], str]
    cells: list[dict]
    patch: Callable[[torch.Tensor, torch.Tensor, dict], None]
    tag: str | None
    check: Callable[[torch.Tensor], None]


def check_component(model, component, who: str) -> None:
    """InputError for an unknown ``component``; :class:`~interp.errors.Refused` where the
    model's bridge discards edits of that hook point (the family adapter's reason)."""
    if not isinstance(component, str) or component not in COMPONENTS:
        raise InputError(f"{who}: component must be one of {', '.join(COMPONENTS)}, "
                         f"got {component!r}")
    why = family_of(model).patch_reason(component)
    if why is not None:
        raise Refused(f"{who}: {why}. Refusing rather than returning numbers that ignore the "
                      f"patch.")


def query_heads(model, kv_head: int) -> list[int]:
    """The query heads that read key/value head ``kv_head`` (``[kv_head]`` without GQA)."""
    group = model.cfg.n_heads // n_kv_heads(model)
    return list(range(kv_head * group, (kv_head + 1) * group))


def _index_list(values, n: int, what: str, who: str) -> list[int]:
    out = list(values)
    bad = [v for v in out if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n]
    if bad or not out or len(set(out)) != len(out):
        raise InputError(f"{who}: {what} must be distinct indices in [0, {n}), got {values!r}")
    return out


def _digest(kind: str, cells: list[dict]) -> str:
    return f"{kind}:" + hashlib.sha1(json.dumps(cells, sort_keys=True).encode()).hexdigest()[:12]


def _checker(axis: int, n: int, name: str, what: str, who: str):
    def check(src: torch.Tensor) -> None:
        if src.dim() != 4 or src.shape[axis] != n:
            raise Refused(f"{who}: {name} has shape {tuple(src.shape)}, expected {n} {what} "
                          f"on axis {axis}; this bridge lays the hook point out differently")

    return check


def head_cells(model, task: PatchingTask, component: str, by_position: bool,
               positions: Sequence[int] | None, who: str) -> Cells:
    """The cells of :func:`~interp.circuits.activation.patch_heads`: one per head (query head
    for z/q/pattern, KV head for k/v) and, with ``by_position``, per position of
    ``positions`` (default all of ``task``'s ``seq``)."""
    check_component(model, component, who)
    if not isinstance(by_position, bool):
        raise InputError(f"{who}: by_position must be True or False, got {by_position!r}")
    seq = int(task.clean.shape[1])
    if positions is not None and not by_position:
        raise InputError(f"{who}: positions are only used with by_position=True")
    pos = _index_list(range(seq) if positions is None else positions, seq, "positions", who)
    kv = component in ("k", "v")
    n = n_kv_heads(model) if kv else model.cfg.n_heads
    cells = []
    for h in range(n):
        head = {"head": h}
        if kv:
            head["query_heads"] = ",".join(map(str, query_heads(model, h)))
        cells += [dict(head, pos=p) for p in pos] if by_position else [head]
    pattern = component == "pattern"
    axis = 1 if pattern else 2

    if pattern and by_position:                  # [batch, head, dest, src]: one dest row
        def patch(act, src, c):
            act[:, c["head"], c["pos"]] = src[:, c["head"], c["pos"]]
    elif pattern:
        def patch(act, src, c):
            act[:, c["head"]] = src[:, c["head"]]
    elif by_position:                            # [batch, pos, head, d_head]
        def patch(act, src, c):
            act[:, c["pos"], c["head"]] = src[:, c["pos"], c["head"]]
    else:
        def patch(act, src, c):
            act[:, :, c["head"]] = src[:, :, c["head"]]

    tag = None if component == "z" and not by_position else \
        _digest(f"{component}{'/pos' if by_position else ''}", cells)
    name = f"hook_{component}"
    return Cells(lambda l: f"blocks.{l}.attn.{name}", cells, patch, tag,
                 _checker(axis, n, name, "KV heads" if kv else "heads", who))


def patch_pattern(model, task: PatchingTask, pairs: Sequence[tuple[int, int]],
                  layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                  direction: Direction = "denoise", renormalise: bool = False,
                  max_batch: int = 64, progress: bool = True, sweep=None) -> pd.DataFrame:
    """Patch single attention-pattern entries: for each layer, query head and ``(dest, src)``
    pair, the entry ``hook_pattern[:, head, dest, src]`` (``[batch, head, dest, src]``, after
    softmax) of the base run is set to the source run's, one entry per row.

    Semantics of the row ``A[dest, :]`` that holds the entry:

    - ``renormalise=False`` (default): TransformerLens' own
      ``get_act_patch_attn_head_pattern_dest_src_pos``
      (``layer_head_dest_src_pos_pattern_patch_setter`` in ``transformer_lens/patching.py``
      overwrites ``A[:, head, dest, src]`` with the clean value and nothing else), so the row is
      *not* re-normalised: it sums to ``1 - A[dest, src] + A_source[dest, src]``, and the head's
      output at ``dest`` gains ``(A_source - A)[dest, src] * v[src]`` alone.
    - ``renormalise=True``: the entry is set the same way and the other entries of the row are
      rescaled by ``(1 - A_source[dest, src]) / sum_{j != src} A[dest, j]``, so the row still
      sums to 1 and keeps its relative weights elsewhere (a row whose other entries are all
      zero, i.e. all weight on ``src``, is left with only the patched entry).

    Args:
        task: clean/corrupted ``[batch, seq]`` tokens and a metric.
        pairs: ``[(dest, src), ...]`` query (destination) and key (source) positions in
            ``[0, seq)``; causal models need ``src <= dest`` (later entries are masked to 0
            in both runs).
        layers: layers to patch (default: all).
        heads: query heads (default: all ``n_heads``).
        direction: ``"denoise"`` (clean entries into the corrupted run) or ``"noise"``.
        renormalise: rescale the rest of the row so it sums to 1 (see above).
        max_batch: rows per forward (``max_batch // batch`` cells at once).
        sweep: a :class:`~interp.results.Sweep` making the chunks resumable / sharded.

    Returns:
        DataFrame ``layer, head, dest, src, metric, normalised``; ``df.attrs``: ``clean``,
        ``corrupted``, ``direction``, ``renormalise``.

    Raises:
        InputError: bad ``pairs`` / ``heads`` / ``layers``.
        Refused: a model whose bridge discards edits of ``hook_pattern`` (BERT).
    """
    from interp.circuits.activation import _patch_layers

    who = "patch_pattern"
    check_component(model, "pattern", who)
    if not isinstance(renormalise, bool):
        raise InputError(f"{who}: renormalise must be True or False, got {renormalise!r}")
    seq, H = int(task.clean.shape[1]), model.cfg.n_heads
    heads = _index_list(range(H) if heads is None else heads, H, "heads", who)
    try:
        pairs = [(int(d), int(s)) for d, s in pairs]
        ok = all(0 <= d < seq and 0 <= s < seq for d, s in pairs)
    except (TypeError, ValueError):
        ok = False
    if not ok or not pairs or len(set(pairs)) != len(pairs):
        raise InputError(f"{who}: pairs must be distinct (dest, src) positions in [0, {seq}), "
                         f"got {pairs!r}")
    if is_causal(model) and any(s > d for d, s in pairs):
        raise InputError(f"{who}: pairs {[p for p in pairs if p[1] > p[0]]} have src > dest; "
                         f"a causal model masks those entries to 0 in both runs")
    cells = [{"head": h, "dest": d, "src": s} for h in heads for d, s in pairs]

    def patch(act, src, c):
        h, d, s = c["head"], c["dest"], c["src"]
        new = src[:, h, d, s]
        if renormalise:
            others = act[:, h, d].clone()
            others[:, s] = 0
            rest = others.sum(-1, keepdim=True)
            scale = torch.where(rest > 0, (1 - new[:, None]) / rest.clamp_min(1e-30),
                                torch.ones_like(rest))
            act[:, h, d] = others * scale
        act[:, h, d, s] = new

    tag = _digest(f"pattern-entry{'/renorm' if renormalise else ''}", cells)
    df = _patch_layers(model, task, direction, lambda l: f"blocks.{l}.attn.hook_pattern", cells,
                       patch, layers, max_batch, progress, "patch pattern", sweep, tag,
                       _checker(1, H, "hook_pattern", "heads", who))
    df.attrs["renormalise"] = renormalise
    return df
