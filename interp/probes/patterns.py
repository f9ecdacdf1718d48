"""Attention patterns of chosen heads on one prompt, and the attention view built from them.

Architecture
------------
:class:`HeadPatterns` is a probe (:mod:`interp.probes.protocol`) whose reducer keeps, from a
block of query rows ``[batch, head, rows, keys]``, the part of the window ``[start, end)`` x
``[start, end)`` of the chosen heads of the first prompt; ``finish`` stacks them
``[len(pairs), w, w]``. :func:`attention_patterns` runs it (the model's own ``hook_pattern`` by
default; ``method="blockwise"`` for a long prompt never holds an ``[n, n]`` pattern).

:func:`attention_view` checks its arguments (heads, token window, the cell cap) before any
forward, collects the patterns and hands them to the renderer
:func:`interp.viz.attention.attention_html`, which runs no model.
"""
from __future__ import annotations

from typing import Sequence

import torch

from interp.errors import InputError
from interp.models.loading import ensure_info
from interp.probes.common import to_tokens
from interp.probes.protocol import RowProbe, run_probe
from interp.viz.attention import (MAX_CELLS, attention_html, check_cells, resolve_heads,
                                  resolve_window, token_strings)
from interp.viz.html import View


class HeadPatterns(RowProbe):
    """Keep queries and keys ``[start, end)`` of the chosen heads (batch item 0).

    Args:
        pairs: ``(layer, head)`` pairs, in the order of the result.
        window: ``(start, end)``.
    """

    def __init__(self, pairs: Sequence[tuple[int, int]], window: tuple[int, int]):
        self.pairs, self.window = list(pairs), window
        self.by_layer: dict[int, list[int]] = {}
        for layer, h in self.pairs:
            self.by_layer.setdefault(layer, []).append(h)
        self.layers = list(self.by_layer)
        self.kept: dict[int, torch.Tensor] = {}

    def reduce(self, layer: int, i0: int, j0: int, probs: torch.Tensor) -> None:
        start, end = self.window                                          # [b, h, r, s]
        w = end - start
        heads = self.by_layer[layer]
        out = self.kept.setdefault(layer, torch.zeros(len(heads), w, w))
        r0, r1 = max(i0, start), min(i0 + probs.shape[2], end)
        k0, k1 = max(j0, start), min(j0 + probs.shape[3], end)
        if r0 < r1 and k0 < k1:
            out[:, r0 - start:r1 - start, k0 - start:k1 - start] = (
                probs[0, heads, r0 - i0:r1 - i0, k0 - j0:k1 - j0].float().cpu())

    def finish(self) -> torch.Tensor:
        """``[len(pairs), w, w]`` float32 (CPU)."""
        rows = {layer: dict(zip(hs, self.kept[layer])) for layer, hs in self.by_layer.items()}
        return torch.stack([rows[layer][h] for layer, h in self.pairs])


@torch.no_grad()
def attention_patterns(model, prompt, pairs: Sequence[tuple[int, int]],
                       window: tuple[int, int] | None = None, method: str = "pattern"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Patterns of the given heads on one prompt.

    Args:
        model: a hooked model (:func:`interp.load_model`).
        prompt: a string or token ids ``[seq]`` / ``[1, seq]``.
        pairs: ``(layer, head)`` pairs.
        window: ``(start, end)`` of the queries and keys kept (default all tokens).
        method: ``"pattern"`` (default: the model's own ``hook_pattern``), ``"blockwise"`` or
            ``"auto"`` (:func:`interp.probes.protocol.run_probe`).

    Returns:
        ``(patterns [len(pairs), w, w] float32, tokens [n])`` where ``w`` is the window length
        (queries and keys both restricted to the window).
    """
    tokens = to_tokens(model, prompt)
    if tokens.shape[0] != 1:
        raise InputError(f"an attention view shows one prompt; got a batch of "
                         f"{tokens.shape[0]}")
    n = tokens.shape[1]
    probe = HeadPatterns(pairs, window if window is not None else (0, n))
    return run_probe(model, tokens, probe, method), tokens[0].cpu()


def attention_view(model, prompt_or_tokens, layers: Sequence[int] | int | None = None,
                   heads: Sequence[int] | Sequence[tuple[int, int]] | int | None = None,
                   token_window: int | tuple[int, int] | None = None,
                   max_cells: int = MAX_CELLS, title: str | None = None) -> View:
    """Attention patterns of chosen heads on one prompt as a circuitsvis view.

    Args:
        model: a hooked model (:func:`interp.load_model`).
        prompt_or_tokens: a string (tokenized with the model's BOS convention) or token ids
            ``[seq]`` / ``[1, seq]``.
        layers: layers to show (default all); with ``heads`` as indices, every listed head
            of every listed layer is shown.
        heads: head indices, or explicit ``(layer, head)`` pairs (then leave ``layers`` out).
        token_window: ``N`` (the first N tokens -- for a causal model exactly the patterns of
            the truncated prompt) or ``(start, end)`` (queries and keys in ``[start, end)``).
        max_cells: refuse views with more than this many pattern values
            (heads x window^2); a clear error says how to shrink the view.
        title: page title (default: model, heads and token range).

    Returns:
        :class:`~interp.viz.html.View` (:func:`interp.viz.attention.attention_html`):
        ``_repr_html_`` shows it in Jupyter, ``.save(path)`` writes a standalone ``.html``
        file with the circuitsvis bundle inline (no network).
    """
    tokens = to_tokens(model, prompt_or_tokens)
    n = tokens.shape[-1]
    pairs = resolve_heads(model.cfg.n_layers, model.cfg.n_heads, layers, heads)
    start, end = resolve_window(token_window, n)
    check_cells(len(pairs), (start, end), max_cells)
    pats, toks = attention_patterns(model, tokens, pairs, (start, end))
    info = ensure_info(model)
    names = [f"L{layer}H{h}" for layer, h in pairs]
    title = title or (f"{info.name or 'model'}: attention of {', '.join(names[:6])}"
                      f"{' ...' if len(names) > 6 else ''} on tokens {start}..{end - 1}")
    return attention_html(pats, token_strings(getattr(model, "tokenizer", None),
                                              toks[start:end]),
                          names, info.causal, title,
                          meta={"heads": pairs, "token_window": (start, end), "n_tokens": n,
                                "causal": info.causal})
