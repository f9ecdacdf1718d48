"""The logit lens: the residual stream after every block read out through the model's own
final norm, unembedding and final soft-cap (nostalgebraist 2020).

Architecture
------------
:func:`residual_stack` caches the residual stream entering block 0 (the embeddings) and
leaving every block (``blocks.{l}.hook_resid_post``), only at the positions asked for.
:func:`logit_lens` maps each entry through :meth:`interp.families.base.Family.logits`: the
final norm is applied to *each layer's own residual* (its scale computed from that residual,
not frozen at the last layer's value, the mistake of TransformerLens #1076), then the
unembedding and, on Gemma 2, the final logit soft-cap. Entry ``L`` (after the last block) is
therefore the model's own logits. Encoders are refused (their masked-LM head transforms the
residual before the unembedding; the family adapter says so).

:func:`top_tokens` never holds ``[layers, positions, vocab]``: it unembeds one layer and a
block of positions at a time and keeps the top ``k``, so a long prompt costs
``O(layers * positions * d_model)`` (the residual cache) plus one block of logits.

Layer index convention (all functions here): ``0`` = the embeddings (input to block 0),
``l`` = the output of block ``l - 1``, ``n_layers`` = the final residual.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from interp.errors import InputError, Refused
from interp.families import family_of
from interp.hooks import attach
from interp.probes.common import to_tokens


def check_logits(model, who: str) -> None:
    """Refuse (:class:`~interp.errors.Refused`) a model whose residual stream does not become
    logits through final norm + unembedding (the family adapter's reason)."""
    why = family_of(model).logits_reason()
    if why is not None:
        raise Refused(f"{who}: refused for {model.cfg.model_name}: {why}")


def check_positions(positions: Sequence[int] | int | None, n: int, who: str) -> list[int]:
    """Positions (negative counts from the end) -> sorted-as-given non-negative ints; one
    outside ``[-n, n)`` is an InputError naming it."""
    if positions is None:
        return list(range(n))
    if isinstance(positions, int):
        positions = [positions]
    out = []
    for p in positions:
        if not isinstance(p, int) or isinstance(p, bool):
            raise InputError(f"{who}: position {p!r} is not an int")
        if not -n <= p < n:
            raise InputError(f"{who}: position {p} is outside the prompt ({n} tokens: "
                             f"positions 0..{n - 1}, or -{n}..-1 from the end)")
        out.append(p % n)
    return out


def check_lens_layers(layers: Sequence[int] | None, n_layers: int, who: str) -> list[int]:
    """Lens layer indices (``0`` = embeddings .. ``n_layers`` = final residual)."""
    if layers is None:
        return list(range(n_layers + 1))
    out = []
    for l in layers:
        if not isinstance(l, int) or not 0 <= l <= n_layers:
            raise InputError(f"{who}: layer {l!r} is not in 0..{n_layers} (0 = the embeddings, "
                             f"l = the output of block l-1)")
        out.append(l)
    return out


@torch.no_grad()
def residual_stack(model, tokens, positions: Sequence[int] | int | None = None,
                   layers: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream at every lens layer.

    Args:
        tokens: ``[batch, seq]`` ids, or a prompt / list of prompts (tokenized with the
            model's BOS convention).
        positions: positions to keep (default: all; negative from the end).
        layers: lens layers (default ``0..n_layers``; see the module doc).

    Returns:
        ``(logits [batch, seq, vocab], resid [len(layers), batch, len(positions), d_model])``.
    """
    tokens = to_tokens(model, tokens)
    L = model.cfg.n_layers
    layers = check_lens_layers(layers, L, "residual_stack")
    pos = check_positions(positions, tokens.shape[1], "residual_stack")
    idx = torch.tensor(pos)
    names = {0: "blocks.0.hook_resid_pre"}
    names.update({l + 1: f"blocks.{l}.hook_resid_post" for l in range(L)})
    got: dict[int, torch.Tensor] = {}

    def saver(i: int):
        def fn(act, hook):
            got[i] = act[:, idx.to(act.device)].detach().clone()
        return fn

    with attach(model, [(names[i], saver(i)) for i in sorted(set(layers))]):
        logits = model(tokens)
    return logits, torch.stack([got[i] for i in layers])


@torch.no_grad()
def logit_lens(model, tokens, layers: Sequence[int] | None = None,
               positions: Sequence[int] | int | None = None) -> torch.Tensor:
    """Logits of the residual stream after each block.

    Args:
        tokens: ``[batch, seq]`` ids or prompt(s).
        layers: lens layers, ``0`` = embeddings .. ``n_layers`` = final (default: all).
        positions: positions to read (default: all).

    Returns:
        ``[len(layers), batch, len(positions), vocab]`` float32; the entry for layer
        ``n_layers`` equals the model's logits.

    Raises:
        Refused: encoders (no next-token logits). InputError: a layer or position out of range.
    """
    check_logits(model, "logit_lens")
    _, resid = residual_stack(model, tokens, positions, layers)
    return family_of(model).logits(resid).float()


@torch.no_grad()
def top_tokens(model, tokens, k: int = 5, layers: Sequence[int] | None = None,
               positions: Sequence[int] | int | None = None,
               block_positions: int = 256) -> pd.DataFrame:
    """The top-``k`` tokens of the logit lens at every (layer, position).

    Holds one ``[batch, block_positions, vocab]`` block of logits at a time, never the whole
    ``[layers, positions, vocab]`` lens.

    Returns:
        DataFrame ``example, layer, position, rank, token_id, token, logit, prob`` (``prob``:
        softmax over the vocabulary at that layer and position; ``rank`` 0 = top).
    """
    check_logits(model, "top_tokens")
    if not isinstance(k, int) or k < 1:
        raise InputError(f"top_tokens: k must be a positive int, got {k!r}")
    tokens = to_tokens(model, tokens)
    pos = check_positions(positions, tokens.shape[1], "top_tokens")
    lay = check_lens_layers(layers, model.cfg.n_layers, "top_tokens")
    _, resid = residual_stack(model, tokens, pos, lay)
    fam, tok = family_of(model), getattr(model, "tokenizer", None)
    k = min(k, model.cfg.d_vocab)
    rows = []
    for li, layer in enumerate(lay):
        for s in range(0, len(pos), block_positions):
            logits = fam.logits(resid[li, :, s:s + block_positions]).float()
            logp = torch.log_softmax(logits, -1)
            val, ids = logits.topk(k, -1)
            prob = logp.gather(-1, ids).exp()
            for b in range(ids.shape[0]):
                for j in range(ids.shape[1]):
                    for r in range(k):
                        t = int(ids[b, j, r])
                        rows.append((b, layer, pos[s + j], r, t,
                                     tok.decode([t]) if tok is not None else str(t),
                                     float(val[b, j, r]), float(prob[b, j, r])))
    return pd.DataFrame(rows, columns=["example", "layer", "position", "rank", "token_id",
                                       "token", "logit", "prob"])
