"""Head ablation: replace heads' outputs (``hook_z``, ``[batch, pos, head, d_head]``) with zero,
their mean, or their value on other inputs, and measure a loss.

Mean ablation uses each head's mean ``z`` over the batch and positions of a clean run on the
same tokens (or on ``reference`` tokens), so it removes what the head computes for *these*
inputs while keeping its average contribution (a gentler baseline than zero). Resample
ablation (Chan et al. 2022, causal scrubbing) gives each head the ``z`` it computes on another
prompt (``reference``, same shape; by default the previous row of the batch), keeping the
distribution of its output but not its information about this prompt.

Every mode is a hook on ``hook_z`` in the model's own forward, so it is exact on every family
(the output projection, its bias, Gemma's post-attention norm and everything downstream run
as the model runs them; zeroing ``z`` is zeroing the head's columns of ``W_O``, the output
bias stays). ``tests/circuits/test_tools_families.py`` checks it per family against the same
forward with the head's ``W_O`` columns zeroed in the weights.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Literal, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.errors import InputError
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
            raise InputError(f"head ({layer}, {head}) does not exist in a {model.cfg.n_layers}"
                             f"-layer, {model.cfg.n_heads}-head model")
        by_layer[layer].append(head)
    return by_layer


@torch.no_grad()
def resample_z(model, reference: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """``hook_z`` of ``layers`` on ``reference`` tokens: ``{layer: [b, n, head, d_head]}``."""
    out: dict[int, torch.Tensor] = {}

    def make(layer: int):
        def hook(z, hook):
            out[layer] = z.detach().clone()

        return hook

    with attach(model, [(f"blocks.{layer}.attn.hook_z", make(layer)) for layer in layers]):
        model(reference)
    return out


Mode = Literal["zero", "mean", "resample"]


@torch.no_grad()
def ablate_heads(model, tokens: torch.Tensor, heads: Sequence[tuple[int, int]], loss_fn: LossFn,
                 mode: Mode = "zero", reference: torch.Tensor | None = None) -> float:
    """Loss with all ``heads`` (list of ``(layer, head)``) ablated at once.

    Args:
        mode: ``"zero"``, ``"mean"`` (mean ``z`` over ``reference``, default ``tokens``) or
            ``"resample"`` (``z`` of the same position on ``reference``, which must have the
            shape of ``tokens``; default: each row gets the previous row's, needs
            ``batch >= 2``).
    """
    if mode not in ("zero", "mean", "resample"):
        raise InputError(f"mode must be 'zero', 'mean' or 'resample', got {mode!r}")
    tokens = check_tokens(model, tokens)
    by_layer = _check_heads(model, heads)
    values: dict[int, torch.Tensor] = {}
    if mode == "mean":
        values = mean_z(model, reference if reference is not None else tokens, list(by_layer))
    elif mode == "resample":
        if reference is None:
            if tokens.shape[0] < 2:
                raise InputError("resample ablation without reference tokens takes each row's "
                                 "activations from another row: it needs batch >= 2")
            reference = tokens.roll(1, dims=0)
        reference = check_tokens(model, reference)
        if reference.shape != tokens.shape:
            raise InputError(f"resample ablation needs reference tokens of the tokens' shape "
                             f"{tuple(tokens.shape)}, got {tuple(reference.shape)}")
        values = resample_z(model, reference, list(by_layer))

    def make(layer: int):
        idx = by_layer[layer]

        def hook(z, hook):                                   # [b, n, h, dh]
            z = z.clone()
            if mode == "zero":
                z[:, :, idx] = 0.0
            elif mode == "mean":
                z[:, :, idx] = values[layer][idx].to(z.dtype)
            else:
                z[:, :, idx] = values[layer][:, :, idx].to(z.dtype)
            return z

        return hook

    with attach(model, [(f"blocks.{layer}.attn.hook_z", make(layer)) for layer in by_layer]):
        logits = model(tokens)
    return float(loss_fn(logits, tokens))


@torch.no_grad()
def head_ablation_effects(model, tokens: torch.Tensor, loss_fn: LossFn,
                          mode: Mode = "zero",
                          heads: Sequence[tuple[int, int]] | None = None,
                          progress: bool = True,
                          reference: torch.Tensor | None = None) -> pd.DataFrame:
    """Ablate each head alone; one row per head: ``layer, head, loss, delta`` (loss minus the
    clean loss), sorted by ``delta`` descending (``mode``, ``reference``: see
    :func:`ablate_heads`)."""
    tokens = check_tokens(model, tokens)
    clean = float(loss_fn(model(tokens), tokens))
    if heads is None:
        heads = [(layer, h) for layer in range(model.cfg.n_layers)
                 for h in range(model.cfg.n_heads)]
    rows = []
    for layer, head in tqdm(heads, desc=f"{mode}-ablate heads", disable=not progress):
        loss = ablate_heads(model, tokens, [(layer, head)], loss_fn, mode=mode,
                            reference=reference)
        rows.append({"layer": layer, "head": head, "loss": loss, "delta": loss - clean})
    df = pd.DataFrame(rows).sort_values("delta", ascending=False).reset_index(drop=True)
    df.attrs["clean_loss"] = clean
    return df
