"""Head ablation: replace heads' outputs (``hook_z``, ``[batch, pos, head, d_head]``) with zero
or with their mean, and measure a loss.

Mean ablation uses each head's mean ``z`` over the batch and positions of a clean run on the
same tokens (or on ``reference`` tokens), so it removes what the head computes for *these*
inputs while keeping its average contribution (a gentler baseline than zero).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Literal, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.hooks import attach
from interp.models.toy import token_losses
from interp.probes.common import check_tokens

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def repeated_half_loss(seg_len: int, offset: int = 1) -> LossFn:
    """Loss function: mean loss on the predictable tokens of copies 2..k of a repeated
    segment (targets at positions ``>= offset + seg_len + 1``; the first token of copy 2
    cannot be predicted)."""

    def fn(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        losses = token_losses(logits, tokens)                 # [b, n-1]; index = target - 1
        return losses[:, offset + seg_len:].mean()

    return fn


def first_half_loss(seg_len: int, offset: int = 1) -> LossFn:
    """Mean loss on the first copy's tokens (after the first one): a baseline that needs
    no in-context copying."""

    def fn(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return token_losses(logits, tokens)[:, offset:offset + seg_len - 1].mean()

    return fn


@torch.no_grad()
def mean_z(model, tokens: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Per-layer mean of ``hook_z`` over batch and positions: ``{layer: [head, d_head]}``."""
    out: dict[int, torch.Tensor] = {}

    def make(layer: int):
        def hook(z, hook):                                   # [b, n, h, dh]
            out[layer] = z.float().mean(dim=(0, 1))

        return hook

    with attach(model, [(f"blocks.{layer}.attn.hook_z", make(layer)) for layer in layers]):
        model(tokens)
    return out


def _check_heads(model, heads: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, head in heads:
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
            raise ValueError(f"head ({layer}, {head}) does not exist in a {model.cfg.n_layers}"
                             f"-layer, {model.cfg.n_heads}-head model")
        by_layer[layer].append(head)
    return by_layer


@torch.no_grad()
def ablate_heads(model, tokens: torch.Tensor, heads: Sequence[tuple[int, int]], loss_fn: LossFn,
                 mode: Literal["zero", "mean"] = "zero",
                 reference: torch.Tensor | None = None) -> float:
    """Loss with all ``heads`` (list of ``(layer, head)``) ablated at once."""
    tokens = check_tokens(model, tokens)
    by_layer = _check_heads(model, heads)
    means = mean_z(model, reference if reference is not None else tokens,
                   list(by_layer)) if mode == "mean" else {}
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")

    def make(layer: int):
        idx = by_layer[layer]

        def hook(z, hook):                                   # [b, n, h, dh]
            z = z.clone()
            z[:, :, idx] = 0.0 if mode == "zero" else means[layer][idx].to(z.dtype)
            return z

        return hook

    with attach(model, [(f"blocks.{layer}.attn.hook_z", make(layer)) for layer in by_layer]):
        logits = model(tokens)
    return float(loss_fn(logits, tokens))


@torch.no_grad()
def head_ablation_effects(model, tokens: torch.Tensor, loss_fn: LossFn,
                          mode: Literal["zero", "mean"] = "zero",
                          heads: Sequence[tuple[int, int]] | None = None,
                          progress: bool = True) -> pd.DataFrame:
    """Ablate each head alone; one row per head: ``layer, head, loss, delta`` (loss minus the
    clean loss), sorted by ``delta`` descending."""
    tokens = check_tokens(model, tokens)
    clean = float(loss_fn(model(tokens), tokens))
    if heads is None:
        heads = [(layer, h) for layer in range(model.cfg.n_layers)
                 for h in range(model.cfg.n_heads)]
    rows = []
    for layer, head in tqdm(heads, desc=f"{mode}-ablate heads", disable=not progress):
        loss = ablate_heads(model, tokens, [(layer, head)], loss_fn, mode=mode)
        rows.append({"layer": layer, "head": head, "loss": loss, "delta": loss - clean})
    df = pd.DataFrame(rows).sort_values("delta", ascending=False).reset_index(drop=True)
    df.attrs["clean_loss"] = clean
    return df
