"""Shared plumbing for probes: turning prompts into checked token batches, running one
forward with only the hooks a probe needs, and naming layers/heads.

Every probe follows the same shape: build ``[batch, seq]`` tokens with :func:`to_tokens`
(clear errors for empty input or a sequence over the model's context), register reducing
hooks through :func:`interp.hooks.attach` inside :func:`run_probe` (no grad, hooks removed
even if the forward raises), and return a tidy ``pandas.DataFrame``.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch

from interp.models.loading import ensure_info
from interp.hooks import attach

_LAYER = re.compile(r"blocks\.(\d+)\.")


def layer_of(hook_name: str) -> int:
    """``"blocks.7.attn.hook_pattern"`` -> 7."""
    m = _LAYER.search(hook_name)
    if not m:
        raise ValueError(f"{hook_name!r} is not a per-layer hook name")
    return int(m.group(1))


def pattern_hook_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def context_length(model) -> int:
    return int(ensure_info(model).n_ctx)


def check_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    """Validate a ``[batch, seq]`` LongTensor of token ids for ``model``; returns it on the
    model's device. Raises ValueError naming the problem."""
    if not isinstance(tokens, torch.Tensor):
        tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    if tokens.numel() == 0:
        raise ValueError("tokens are empty")
    n_ctx = context_length(model)
    if tokens.shape[1] > n_ctx:
        raise ValueError(f"sequence of {tokens.shape[1]} tokens is over the context length of "
                         f"{n_ctx} for this model; shorten it or split it")
    vocab = model.cfg.d_vocab
    if int(tokens.max()) >= vocab or int(tokens.min()) < 0:
        raise ValueError(f"token ids must lie in [0, {vocab}); got range "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")
    device = next(model.parameters()).device
    return tokens.long().to(device)


def to_tokens(model, prompts: str | Sequence[str] | torch.Tensor,
              prepend_bos: bool | None = None) -> torch.Tensor:
    """Prompts (a string, a list of strings of equal token length, or ids) -> ``[batch, seq]``.

    ``prepend_bos`` defaults to the model's convention (``model.cfg.default_prepend_bos``).
    A list of strings whose token lengths differ is refused (probes average over positions;
    padding would silently change them): pass them one at a time or as ids.
    """
    if isinstance(prompts, torch.Tensor):
        return check_tokens(model, prompts)
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty string or list of strings")
    tok = model.tokenizer
    if tok is None:
        raise ValueError("this model has no tokenizer; pass token ids")
    bos = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
    rows = []
    for p in prompts:
        ids = tok(p, add_special_tokens=False).input_ids
        if ensure_info(model).causal is False:      # encoders: [CLS] .. [SEP]
            ids = tok(p).input_ids
        elif bos and tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]
        rows.append(ids)
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"prompts have different token lengths {sorted(lengths)}; pass them "
                         f"one at a time")
    return check_tokens(model, torch.tensor(rows))


@torch.no_grad()
def run_probe(model, tokens: torch.Tensor,
              hooks: Sequence[tuple[str | Callable[[str], bool], Callable]]) -> torch.Tensor:
    """One forward of ``tokens`` with ``hooks`` attached; returns the model output."""
    with attach(model, hooks):
        return model(tokens)
