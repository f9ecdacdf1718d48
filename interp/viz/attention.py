"""Attention-pattern views (circuitsvis ``AttentionHeads``), always with the inline JS bundle.

:func:`attention_view` runs ONE forward with hooks on ``blocks.{l}.attn.hook_pattern``
(``[batch, head, query, key]``) of the chosen layers only, keeps the chosen heads and token
window inside the hook, and returns a :class:`interp.viz.html.View`. Values are rounded to
4 decimals and the number of pattern cells is capped (``max_cells``) so files stay small:
for long prompts pick a ``token_window`` and/or a few ``heads``.
"""
from __future__ import annotations

import html as _html
from typing import Sequence

import torch

from interp.models.loading import ensure_info
from interp.viz.html import CIRCUITSVIS, View, circuitsvis_fragment

MAX_CELLS = 1_500_000


def _resolve_window(token_window: int | tuple[int, int] | None, n: int) -> tuple[int, int]:
    """``None`` -> all tokens; ``N`` -> the first N tokens; ``(start, end)`` -> that slice."""
    if token_window is None:
        return 0, n
    if isinstance(token_window, int) and not isinstance(token_window, bool):
        if token_window < 1:
            raise ValueError(f"token_window must be >= 1, got {token_window}")
        return 0, min(token_window, n)
    try:
        start, end = (int(v) for v in token_window)
    except (TypeError, ValueError):
        raise ValueError(f"token_window must be N or (start, end), got {token_window!r}") from None
    if not 0 <= start < end <= n:
        raise ValueError(f"token_window {(start, end)} must satisfy 0 <= start < end <= {n} "
                         f"(the prompt has {n} tokens)")
    return start, end


def _resolve_heads(model, layers: Sequence[int] | int | None,
                   heads: Sequence[int] | Sequence[tuple[int, int]] | int | None
                   ) -> list[tuple[int, int]]:
    """(layer, head) pairs in order. ``heads`` may be head indices (applied to every layer in
    ``layers``) or explicit ``(layer, head)`` pairs (then ``layers`` must be None)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if isinstance(layers, int):
        layers = [layers]
    if isinstance(heads, int):
        heads = [heads]
    heads = list(heads) if heads is not None else None
    if heads and all(isinstance(h, (tuple, list)) for h in heads):
        if layers is not None:
            raise ValueError("give either layers + head indices, or (layer, head) pairs")
        pairs = [(int(lh[0]), int(lh[1])) for lh in heads]
    else:
        layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
        idx = list(range(n_heads)) if heads is None else [int(h) for h in heads]
        pairs = [(layer, h) for layer in layers for h in idx]
    for layer, h in pairs:
        if not (0 <= layer < n_layers and 0 <= h < n_heads):
            raise ValueError(f"head ({layer}, {h}) does not exist: the model has layers "
                             f"0..{n_layers - 1} and heads 0..{n_heads - 1}")
    if not pairs:
        raise ValueError("no heads selected")
    return list(dict.fromkeys(pairs))


def token_labels(model, tokens: torch.Tensor) -> list[str]:
    """One display string per token id of a 1-D ``tokens`` (decoded one at a time; ids as
    text for models without a tokenizer)."""
    tok = getattr(model, "tokenizer", None)
    ids = [int(t) for t in tokens]
    if tok is None:
        return [str(i) for i in ids]
    return [tok.decode([i]) for i in ids]


@torch.no_grad()
def attention_patterns(model, prompt, pairs: Sequence[tuple[int, int]],
                       window: tuple[int, int] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Patterns of the given heads on one prompt.

    Returns:
        ``(patterns [len(pairs), w, w] float32, tokens [n])`` where ``w`` is the window length
        (queries and keys both restricted to the window).
    """
    from interp.probes.common import layer_of, pattern_hook_name, run_probe, to_tokens

    tokens = to_tokens(model, prompt)
    if tokens.shape[0] != 1:
        raise ValueError(f"an attention view shows one prompt; got a batch of {tokens.shape[0]}")
    n = tokens.shape[1]
    start, end = window if window is not None else (0, n)
    by_layer: dict[int, list[int]] = {}
    for layer, h in pairs:
        by_layer.setdefault(layer, []).append(h)
    kept: dict[int, torch.Tensor] = {}

    def hook(pattern, hook):                     # [batch, head, query, key]
        layer = layer_of(hook.name)
        kept[layer] = pattern[0, by_layer[layer], start:end, start:end].float().cpu()

    run_probe(model, tokens, [(pattern_hook_name(layer), hook) for layer in by_layer])
    rows = {layer: dict(zip(hs, kept[layer])) for layer, hs in by_layer.items()}
    pats = torch.stack([rows[layer][h] for layer, h in pairs])   # [H, w, w]
    return pats, tokens[0].cpu()


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
        :class:`View`: ``_repr_html_`` shows it in Jupyter, ``.save(path)`` writes a
        standalone ``.html`` file with the circuitsvis bundle inline (no network).
    """
    from interp.probes.common import to_tokens

    tokens = to_tokens(model, prompt_or_tokens)
    n = tokens.shape[-1]
    pairs = _resolve_heads(model, layers, heads)
    start, end = _resolve_window(token_window, n)
    cells = len(pairs) * (end - start) ** 2
    if cells > max_cells:
        raise ValueError(
            f"this view would hold {len(pairs)} heads x {end - start}^2 tokens = {cells:,} "
            f"attention values (limit {max_cells:,}); choose fewer layers/heads or a token "
            f"window (e.g. token_window=128 / --window 128)")
    pats, toks = attention_patterns(model, tokens, pairs, (start, end))
    labels = token_labels(model, toks[start:end])
    causal = ensure_info(model).causal
    names = [f"L{layer}H{h}" for layer, h in pairs]
    name = ensure_info(model).name or "model"
    title = title or (f"{name}: attention of {', '.join(names[:6])}"
                      f"{' ...' if len(names) > 6 else ''} on tokens {start}..{end - 1}")
    props = {
        "attention": pats.double().round(decimals=4).tolist(),   # [heads, dest, src]
        "tokens": labels,
        "attentionHeadNames": names,
        "maskUpperTri": causal,
    }
    body = (f'<div class="interp-view-caption" style="font-family: sans-serif; '
            f'font-size: 0.9em; color: #555">{_html.escape(title)}</div>\n'
            + circuitsvis_fragment("AttentionHeads", props, min_height=200))
    return View(body=body, needs=frozenset({CIRCUITSVIS}), title=title,
                meta={"heads": pairs, "token_window": (start, end), "n_tokens": n,
                      "causal": causal})
