"""Attention-pattern views (circuitsvis ``AttentionHeads``), always with the inline JS bundle.

Rendering only: :func:`attention_html` takes patterns ``[heads, w, w]`` already collected, the
tokens' display strings and the heads' names, and returns a :class:`interp.viz.html.View`.
Nothing here runs a model: :func:`interp.probes.patterns.attention_view` collects the patterns
of chosen heads on one prompt (a probe, :mod:`interp.probes.patterns`) and calls
:func:`attention_html`. The pure helpers that probe uses to read its arguments live here too:
:func:`resolve_heads`, :func:`resolve_window`, :func:`check_cells` (the size cap) and
:func:`token_strings` (display strings of token ids).

Values are rounded to 4 decimals and the number of pattern cells is capped (:data:`MAX_CELLS`)
so files stay small: for long prompts pick a ``token_window`` and/or a few ``heads``.
"""
from __future__ import annotations

import html as _html
from typing import Any, Sequence

import torch

from interp.errors import InputError
from interp.viz.html import CIRCUITSVIS, View, circuitsvis_fragment

MAX_CELLS = 1_500_000


def resolve_window(token_window: int | tuple[int, int] | None, n: int) -> tuple[int, int]:
    """``None`` -> all tokens; ``N`` -> the first N tokens; ``(start, end)`` -> that slice.
    Returns ``(start, end)`` of a prompt of ``n`` tokens; InputError when it does not fit."""
    if token_window is None:
        return 0, n
    if isinstance(token_window, int) and not isinstance(token_window, bool):
        if token_window < 1:
            raise InputError(f"token_window must be >= 1, got {token_window}")
        return 0, min(token_window, n)
    try:
        start, end = (int(v) for v in token_window)
    except (TypeError, ValueError):
        raise InputError(f"token_window must be N or (start, end), got {token_window!r}") from None
    if not 0 <= start < end <= n:
        raise InputError(f"token_window {(start, end)} must satisfy 0 <= start < end <= {n} "
                         f"(the prompt has {n} tokens)")
    return start, end


def resolve_heads(n_layers: int, n_heads: int, layers: Sequence[int] | int | None,
                  heads: Sequence[int] | Sequence[tuple[int, int]] | int | None
                  ) -> list[tuple[int, int]]:
    """(layer, head) pairs in order, of a model with ``n_layers`` x ``n_heads`` heads.
    ``heads`` may be head indices (applied to every layer in ``layers``) or explicit
    ``(layer, head)`` pairs (then ``layers`` must be None). InputError for a head that does
    not exist or an empty selection."""
    if isinstance(layers, int):
        layers = [layers]
    if isinstance(heads, int):
        heads = [heads]
    heads = list(heads) if heads is not None else None
    if heads and all(isinstance(h, (tuple, list)) for h in heads):
        if layers is not None:
            raise InputError("give either layers + head indices, or (layer, head) pairs")
        pairs = [(int(lh[0]), int(lh[1])) for lh in heads]
    else:
        layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
        idx = list(range(n_heads)) if heads is None else [int(h) for h in heads]
        pairs = [(layer, h) for layer in layers for h in idx]
    for layer, h in pairs:
        if not (0 <= layer < n_layers and 0 <= h < n_heads):
            raise InputError(f"head ({layer}, {h}) does not exist: the model has layers "
                             f"0..{n_layers - 1} and heads 0..{n_heads - 1}")
    if not pairs:
        raise InputError("no heads selected")
    return list(dict.fromkeys(pairs))


def check_cells(n_pairs: int, window: tuple[int, int], max_cells: int = MAX_CELLS) -> None:
    """Refuse (InputError) a view of ``n_pairs`` heads over ``window`` with more than
    ``max_cells`` pattern values (heads x window^2), saying how to shrink it."""
    start, end = window
    cells = n_pairs * (end - start) ** 2
    if cells > max_cells:
        raise InputError(
            f"this view would hold {n_pairs} heads x {end - start}^2 tokens = {cells:,} "
            f"attention values (limit {max_cells:,}); choose fewer layers/heads or a token "
            f"window (e.g. token_window=128 / --window 128)")


def token_strings(tokenizer, ids: torch.Tensor | Sequence[int]) -> list[str]:
    """One display string per token id of a 1-D ``ids`` (decoded one at a time; the ids as
    text when ``tokenizer`` is None)."""
    ids = [int(t) for t in ids]
    if tokenizer is None:
        return [str(i) for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def attention_html(patterns: torch.Tensor, tokens: Sequence[str], head_names: Sequence[str],
                   causal: bool, title: str, meta: dict[str, Any] | None = None) -> View:
    """A circuitsvis ``AttentionHeads`` view of collected patterns.

    Args:
        patterns: ``[heads, w, w]`` attention of each head (query rows, key columns) over
            the same ``w`` tokens.
        tokens: ``w`` display strings (:func:`token_strings`).
        head_names: one name per head (e.g. ``"L1H2"``).
        causal: mask the upper triangle (a causal model's future keys).
        title: the caption and page title.
        meta: facts stored on the view (:attr:`View.meta`).

    Returns:
        :class:`View`: ``_repr_html_`` shows it in Jupyter, ``.save(path)`` writes a
        standalone ``.html`` file with the circuitsvis bundle inline (no network).
    """
    props = {
        "attention": patterns.double().round(decimals=4).tolist(),   # [heads, dest, src]
        "tokens": list(tokens),
        "attentionHeadNames": list(head_names),
        "maskUpperTri": causal,
    }
    body = (f'<div class="interp-view-caption" style="font-family: sans-serif; '
            f'font-size: 0.9em; color: #555">{_html.escape(title)}</div>\n'
            + circuitsvis_fragment("AttentionHeads", props, min_height=200))
    return View(body=body, needs=frozenset({CIRCUITSVIS}), title=title, meta=dict(meta or {}))
