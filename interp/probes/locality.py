"""Locality probe: how much of each head's dense attention a sparse layout would keep.

For a sparse layout (any registered implementation with an allowed-key set: sliding window
with optional global tokens, sink + window, block-sparse) and each head, the share of the
head's dense softmax attention mass that falls on keys the layout allows, averaged over
queries and prompts. A head with little mass inside the layout is one a Longformer-style
swap would hurt.

:class:`LocalityProbe` states the reduction once (:mod:`interp.probes.protocol`): from a
block of query rows ``[batch, head, rows, keys]`` it sums, per layout, the mass on the keys
the layout allows for those rows (``allowed_rows``, never an ``[n, n]`` mask in the blockwise
method); the runner feeds it each layer's whole ``hook_pattern`` (``method="pattern"``) or, for
long prompts, row blocks (``"blockwise"``, :mod:`interp.probes.blockwise`).
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
from interp.errors import InputError
from interp.probes.common import ProbeWarning, check_prompt, to_tokens
from interp.probes.protocol import RowProbe, as_float, run_probe


def _sparse(layout: AttentionImpl, label: str | None = None) -> SparseAttention:
    """``layout`` itself when it has an allowed-key set, else InputError naming it."""
    if not isinstance(layout, SparseAttention):
        raise InputError(f"{f'{label}: ' if label else ''}{layout.name} has no sparse layout "
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


class LocalityProbe(RowProbe):
    """The locality reduction: per (layer, layout), the sum over (batch, query >= min_query)
    of each head's mass inside the layout ``[h]`` (float64) and its smallest value ``[h]``,
    from a block of query rows; ``finish`` gives the mean and the worst query.

    Args:
        tokens: ``[b, n]``. layouts: ``{label: sparse implementation}``.
        layers: the probed layers. min_query: the first query averaged over.
        causal: the model's attention is causal.
    """

    def __init__(self, tokens: torch.Tensor, layouts: Mapping[str, SparseAttention],
                 layers: list[int], min_query: int, causal: bool):
        self.layouts, self.layers, self.min_query, self.causal = layouts, layers, min_query, causal
        self.b, self.n = tokens.shape
        self.device = tokens.device
        self.mods = {name: impl.flex_mask_mod(self.n, causal, self.device)
                     for name, impl in layouts.items()}
        self.sums: dict[tuple[int, str], torch.Tensor] = {}
        self.worst: dict[tuple[int, str], torch.Tensor] = {}

    def reduce(self, layer: int, i0: int, j0: int, probs: torch.Tensor) -> None:
        p = as_float(probs)                                                # [b, h, r, s]
        r, s = p.shape[2], p.shape[3]
        lo = max(i0, self.min_query)
        if lo >= i0 + r:
            return
        for name, impl in self.layouts.items():
            allowed = impl.allowed_rows(self.n, (lo, i0 + r), (j0, j0 + s), self.causal,
                                        self.device, self.mods[name])     # [rows, s]
            inside = (p[:, :, lo - i0:] * allowed).sum(-1)                 # [b, h, rows]
            key = (layer, name)
            self.sums[key] = self.sums.get(key, 0) + inside.double().sum(dim=(0, 2))
            low = inside.amin(dim=2).amin(dim=0)
            self.worst[key] = low if key not in self.worst else torch.minimum(self.worst[key],
                                                                              low)

    def finish(self) -> pd.DataFrame:
        """One row per (layer, head, layout): ``mass_inside``, ``min_mass_inside``."""
        rows = []
        for layer in self.layers:
            for name in self.layouts:
                mean = self.sums[(layer, name)] / (self.b * (self.n - self.min_query))
                for h in range(mean.shape[0]):
                    rows.append({"layer": layer, "head": h, "layout": name,
                                 "mass_inside": float(mean[h]),
                                 "min_mass_inside": float(self.worst[(layer, name)][h])})
        return pd.DataFrame(rows).sort_values(["layer", "head", "layout"]).reset_index(drop=True)


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

    Raises :class:`~interp.errors.InputError` for fewer than 2 tokens, a layout without an
    allowed-key set or ``min_query`` outside the prompt; issues a
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
        raise InputError(f"min_query must lie in [0, {n}), got {min_query}")
    causal = ensure_info(model).causal
    for name, impl in layouts.items():
        _sparse(impl, name)
    if _all_allowed(layouts, n, causal, tokens.device):
        warnings.warn(f"the prompt has {n} tokens, so every layout ({', '.join(layouts)}) "
                      f"allows every key and mass_inside is 1 by definition; use a prompt "
                      f"longer than the layouts' windows or omit --prompt for repeated random "
                      f"tokens", ProbeWarning, stacklevel=2)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    probe = LocalityProbe(tokens, layouts, layers, min_query, causal)
    return run_probe(model, tokens, probe, method)
