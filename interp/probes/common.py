"""Shared plumbing for probes: turning prompts into checked token batches and naming
per-layer hooks.

Every probe follows the same shape: build ``[batch, seq]`` tokens with :func:`to_tokens`
(clear errors for empty input or a sequence over the model's context; ``max_tokens`` cuts
a long text *before* the context check), validate them for the probe with
:func:`check_prompt` (too short: :class:`~interp.errors.InputError`; valid but uninformative,
e.g. no repeated token for induction: a :class:`ProbeWarning`, which the CLI prints as one
line), state its reduction once as a :class:`~interp.probes.protocol.RowProbe` run by
:func:`interp.probes.protocol.run_probe` (no grad, hooks removed even if the forward raises),
and return a tidy ``pandas.DataFrame``.

Every error caused by the input is an :class:`~interp.errors.InputError` (a ``ValueError``).
"""
from __future__ import annotations

import re
import warnings
from typing import Sequence

import torch

from interp.errors import InputError
from interp.models.loading import ensure_info

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
    model's device. Raises InputError naming the problem."""
    if not isinstance(tokens, torch.Tensor):
        tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2:
        raise InputError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise InputError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    if tokens.numel() == 0:
        raise InputError("tokens are empty")
    n_ctx = context_length(model)
    if tokens.shape[1] > n_ctx:
        raise InputError(f"sequence of {tokens.shape[1]} tokens is over the context length of "
                         f"{n_ctx} for this model; shorten it or split it")
    vocab = model.cfg.d_vocab
    if int(tokens.max()) >= vocab or int(tokens.min()) < 0:
        raise InputError(f"token ids must lie in [0, {vocab}); got range "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")
    device = next(model.parameters()).device
    return tokens.long().to(device)


class ProbeWarning(UserWarning):
    """A probe ran on valid input whose scores mean less than they seem (e.g. induction on a
    prompt with no repeated token: 0 by definition). ``interp probe`` prints each as one
    ``warning:`` line on stderr."""


NO_REPEATS = ("no token repeats in the prompt, so induction/prefix-matching scores are 0 by "
              "definition; use repeated text or omit --prompt for repeated random tokens")


def check_prompt_text(prompt, what: str = "the prompt") -> None:
    """Refuse an empty (or whitespace-only) text with ``InputError("the prompt is empty
    ...")``; the CLI calls it before loading a model."""
    if isinstance(prompt, str) and not prompt.strip():
        raise InputError(f"{what} is empty{' (only whitespace)' if prompt else ''}; give "
                         f"some text")


def encode(model, text: str, prepend_bos: bool | None = None,
           max_tokens: int | None = None) -> list[int]:
    """Token ids of one text with the model's special tokens (BOS for decoders that use one,
    ``[CLS] .. [SEP]`` for encoders), cut to at most ``max_tokens`` ids (specials included,
    the leading BOS / ``[CLS]`` and closing ``[SEP]`` kept). Not checked against the
    context length: :func:`check_tokens` does that, after the cut.

    A long text is tokenized in growing prefixes, so a book cut to 512 tokens costs about
    512 tokens of tokenizer work."""
    check_prompt_text(text)
    tok = model.tokenizer
    if tok is None:
        raise InputError("this model has no tokenizer; pass token ids")
    if max_tokens is not None and max_tokens < 1:
        raise InputError(f"max_tokens must be >= 1, got {max_tokens}")
    encoder = ensure_info(model).causal is False
    bos = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
    bos = bool(bos) and tok.bos_token_id is not None and not encoder

    def plain(s: str) -> list[int]:
        return tok(s, add_special_tokens=False, verbose=False).input_ids

    if encoder:
        if max_tokens is None:
            return list(tok(text, verbose=False).input_ids)
        # the tokenizer's own specials around a probe text: [CLS] ... [SEP]
        full, inner = tok("a", verbose=False).input_ids, plain("a")
        at = next((i for i in range(len(full)) if full[i:i + len(inner)] == inner), None)
        head, tail = (full[:at], full[at + len(inner):]) if at is not None else ([], [])
    else:
        head, tail = ([tok.bos_token_id] if bos else []), []
    budget = None if max_tokens is None else max(max_tokens - len(head) - len(tail), 0)

    if budget is None:
        ids = plain(text)
    else:
        chars = 16 * (budget + 16)
        while True:
            ids = plain(text[:chars])
            # a margin past the cut: the last kept tokens do not depend on where text stops
            if chars >= len(text) or len(ids) > budget + 8:
                break
            chars *= 4
        ids = ids[:budget]
    return [*head, *ids, *tail]


def to_tokens(model, prompts: str | Sequence[str] | torch.Tensor,
              prepend_bos: bool | None = None, max_tokens: int | None = None) -> torch.Tensor:
    """Prompts (a string, a list of strings of equal token length, or ids) -> ``[batch, seq]``.

    ``prepend_bos`` defaults to the model's convention (``model.cfg.default_prepend_bos``).
    ``max_tokens`` keeps only the first ``max_tokens`` tokens of each prompt (see
    :func:`encode`; ids are cut the same way), *then* the context length is checked.
    An empty prompt is refused (InputError "the prompt is empty ...").
    A list of strings whose token lengths differ is refused (probes average over positions;
    padding would silently change them): pass them one at a time or as ids.
    """
    if isinstance(prompts, torch.Tensor):
        if max_tokens is not None:
            if max_tokens < 1:
                raise InputError(f"max_tokens must be >= 1, got {max_tokens}")
            prompts = prompts[..., :max_tokens]
        return check_tokens(model, prompts)
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError("prompts must be a non-empty string or list of strings")
    rows = [encode(model, p, prepend_bos, max_tokens) for p in prompts]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise InputError(f"prompts have different token lengths {sorted(lengths)}; pass them "
                         f"one at a time")
    return check_tokens(model, torch.tensor(rows))


def check_prompt(tokens: torch.Tensor, probe: str, min_tokens: int = 2, *,
                 why: str | None = None, repeats: bool = False) -> torch.Tensor:
    """The one check every probe runs on its (already tokenized) input.

    Args:
        tokens: ``[batch, seq]`` ids from :func:`to_tokens` / :func:`check_tokens`.
        probe: the probe's name, for the messages.
        min_tokens: fewer tokens per row (special tokens included) -> InputError
            ``"the prompt has N tokens; the <probe> probe needs at least M (<why>)"``.
        repeats: the probe's scores need a token that occurs twice in a row of ``tokens``
            (induction, prefix matching, duplicate token); without one a
            :class:`ProbeWarning` (:data:`NO_REPEATS`) is issued and the probe goes on.

    Returns:
        ``tokens``, unchanged.
    """
    n = int(tokens.shape[-1])
    if n < min_tokens:
        raise InputError(f"the prompt has {n} token{'s' if n != 1 else ''}; the {probe} "
                         f"probe needs at least {min_tokens}{f' ({why})' if why else ''}; use a "
                         f"longer prompt")
    if repeats and tokens.dim() == 2:
        srt = tokens.sort(dim=-1).values
        if not bool((srt[:, 1:] == srt[:, :-1]).any()):
            warnings.warn(NO_REPEATS, ProbeWarning, stacklevel=3)
    return tokens
