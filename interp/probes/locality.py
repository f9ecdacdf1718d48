"""Locality probe: how much of each head's dense attention a sparse layout would keep.

For a sparse layout (any registered implementation with an allowed-key set: sliding window
with optional global tokens, sink + window, block-sparse) and each head, the share of the
head's dense softmax attention mass that falls on keys the layout allows, averaged over
queries and prompts. A head with little mass inside the layout is one a Longformer-style
swap would hurt. Long prompts are reduced a block of query rows at a time
(``method="blockwise"``, :mod:`interp.probes.blockwise`).
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import pandas as pd
import torch

from interp.models.loading import ensure_info
from interp.attention import AttentionImpl, get as get_attention
from interp.attention.base import SparseAttention
from interp.attention.rows import MAX_ROWS
from interp.probes.blockwise import choose_method, run_blockwise
from interp.probes.common import (ProbeWarning, check_prompt, layer_of, pattern_hook_name,
                                  run_probe, to_tokens)


def _sparse(layout: AttentionImpl, label: str | None = None) -> SparseAttention:
    """``layout`` itself when it has an allowed-key set, else ValueError naming it."""
    if not isinstance(layout, SparseAttention):
        raise ValueError(f"{f'{label}: ' if label else ''}{layout.name} has no sparse layout "
                         f"(no allowed-key mask)")
    return layout


def allowed_mask(layout: AttentionImpl, n: int, causal: bool = True) -> torch.Tensor:
    """``[n, n]`` bool: query i may attend key j under ``layout``."""
    return _sparse(layout).allowed_mask(n, causal)


def default_layouts(windows: Sequence[int] = (32, 128)) -> dict[str, AttentionImpl]:
    """Sliding windows of the given sizes, the same with the first token global, and a
    block-sparse layout."""
    out: dict[str, AttentionImpl] = {}
    for w in windows:
        out[f"window_{w}"] = get_attention("sliding_window", window=w)
        out[f"window_{w}+global0"] = get_attention("sliding_window", window=w, global_tokens=(0,))
    out["block_sparse_32"] = get_attention("block_sparse", block_size=32, local_blocks=1,
                                           global_blocks=1, random_blocks=1)
    return out


def _all_allowed(layouts: Mapping[str, AttentionImpl], n: int, causal: bool, device) -> bool:
    """Whether every layout allows every key a query can see (checked a block of rows at a
    time, never an ``[n, n]`` mask)."""
    rows = max(1, min(MAX_ROWS, (1 << 22) // n))
    for impl in layouts.values():
        mod = impl.flex_mask_mod(n, causal, device)
        for i0 in range(0, n, rows):
            i1 = min(n, i0 + rows)
            ok = impl.allowed_rows(n, (i0, i1), (0, n), causal, device, mod)
            if causal:
                ok = ok | (torch.arange(n, device=device)[None, :]
                           > torch.arange(i0, i1, device=device)[:, None])
            if not bool(ok.all()):
                return False
    return True


def _blockwise(model, tokens, layouts, layers, min_query, causal) -> list[dict]:
    """:func:`locality_scores` from row blocks of each layer's pattern
    (:mod:`interp.probes.blockwise`)."""
    b, n = tokens.shape
    mods = {name: impl.flex_mask_mod(n, causal, tokens.device) for name, impl in layouts.items()}
    sums: dict[tuple[int, str], torch.Tensor] = {}
    worst: dict[tuple[int, str], torch.Tensor] = {}

    def reduce(layer: int, i0: int, j0: int, p: torch.Tensor) -> None:     # [b, h, r, s]
        r, s = p.shape[2], p.shape[3]
        lo = max(i0, min_query)
        if lo >= i0 + r:
            return
        for name, impl in layouts.items():
            allowed = impl.allowed_rows(n, (lo, i0 + r), (j0, j0 + s), causal, tokens.device,
                                        mods[name])
            inside = (p[:, :, lo - i0:] * allowed).sum(-1)                  # [b, h, rows]
            key = (layer, name)
            sums[key] = sums.get(key, 0) + inside.double().sum(dim=(0, 2))
            low = inside.amin(dim=2).amin(dim=0)
            worst[key] = low if key not in worst else torch.minimum(worst[key], low)

    run_blockwise(model, tokens, layers, reduce)
    rows = []
    for layer in layers:
        for name in layouts:
            mean = sums[(layer, name)] / (b * (n - min_query))
            for h in range(mean.shape[0]):
                rows.append({"layer": layer, "head": h, "layout": name,
                             "mass_inside": float(mean[h]),
                             "min_mass_inside": float(worst[(layer, name)][h])})
    return rows


def locality_scores(model, prompts, layouts: Mapping[str, AttentionImpl] | None = None,
                    layers: Sequence[int] | None = None, min_query: int = 0,
                    method: str = "auto") -> pd.DataFrame:
    """Share of each head's dense attention mass inside each sparse layout.

    Args:
        model: a hooked model (decoder or encoder).
        prompts: text(s) or token ids ``[batch, seq]``.
        layouts: ``{label: implementation}``; default :func:`default_layouts`.
        layers: layers to probe (default all).
        min_query: average only over query positions ``>= min_query`` (e.g. the window size,
            to leave out queries whose whole context fits in the window).
        method: ``"pattern"`` (reduce each layer's ``hook_pattern`` against ``[n, n]`` layout
            masks), ``"blockwise"`` (a block of query rows at a time against the same rows of
            each layout, never an ``[n, n]`` pattern or mask: :mod:`interp.probes.blockwise`)
            or ``"auto"`` (blockwise for long prompts).

    Raises ValueError for fewer than 2 tokens; issues a
    :class:`~interp.probes.common.ProbeWarning` when the prompt is so short that every layout
    allows every key (``mass_inside`` is then 1 by definition).

    Returns:
        DataFrame with columns ``layer, head, layout, mass_inside, min_mass_inside`` (mean and
        worst query), one row per (layer, head, layout); sorted by layer, head.
    """
    tokens = check_prompt(to_tokens(model, prompts), "locality", 2,
                          why="with one token every layout keeps all attention")
    layouts = dict(layouts or default_layouts())
    n = tokens.shape[1]
    if not 0 <= min_query < n:
        raise ValueError(f"min_query must lie in [0, {n}), got {min_query}")
    causal = ensure_info(model).causal
    for name, impl in layouts.items():
        _sparse(impl, name)
    if _all_allowed(layouts, n, causal, tokens.device):
        warnings.warn(f"the prompt has {n} tokens, so every layout ({', '.join(layouts)}) "
                      f"allows every key and mass_inside is 1 by definition; use a prompt "
                      f"longer than the layouts' windows or omit --prompt for repeated random "
                      f"tokens", ProbeWarning, stacklevel=2)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    if choose_method(model, tokens, method) == "blockwise":
        rows = _blockwise(model, tokens, layouts, layers, min_query, causal)
        return pd.DataFrame(rows).sort_values(["layer", "head", "layout"]).reset_index(drop=True)
    masks = {name: allowed_mask(impl, n, causal).to(tokens.device).float()
             for name, impl in layouts.items()}
    rows: list[dict] = []

    def hook(pattern, hook):                         # pattern [batch, head, q, k]
        layer = layer_of(hook.name)
        for name, mask in masks.items():
            inside = (pattern.float() * mask).sum(-1)[:, :, min_query:]   # [batch, head, q]
            mean = inside.mean(dim=(0, 2))
            worst = inside.amin(dim=2).amin(dim=0)
            for h in range(pattern.shape[1]):
                rows.append({"layer": layer, "head": h, "layout": name,
                             "mass_inside": mean[h].item(), "min_mass_inside": worst[h].item()})

    run_probe(model, tokens, [(pattern_hook_name(layer), hook) for layer in layers])
    return pd.DataFrame(rows).sort_values(["layer", "head", "layout"]).reset_index(drop=True)
