"""Greedy text generation for hooked bridges and plain HF models, with chat templates.

Why not ``TransformerBridge.generate``: with its default KV cache it produces wrong text on
the GQA model smollm2-135m (see DESIGN.md), and after booting a bridge the wrapped
``model.original_model`` is no longer usable with its own cache either (its cached steps
produce garbage too: checked on smollm2-135m). So there are two honest paths:

Architecture
------------
- **Bridge** (anything with a ``hook_dict``, i.e. a TransformerLens bridge):
  :func:`interp.decoding.generate`, the bridge's own forward with a KV cache inside its
  attention layers (one forward per new token, every hook firing for that token). Where
  layers are swapped to another attention implementation, a loop of full forwards
  (``model(ids)`` ``[1, seq, vocab]``, argmax of the last row, append, repeat; O(n^2)).
- **Plain HF causal LM** (e.g. from :func:`interp.models.registry.load_hf`): its own forward
  with its own cache (``use_cache=True``, feeding one token per step with
  ``past_key_values``). Much faster; hooks of a bridge do not fire (it is another module).

Refused (before any forward): an encoder (a bridge whose ``interp_info.causal`` is False, or an
HF model that cannot generate, e.g. ``BertForMaskedLM``): "continuing" a bidirectional model
token by token is not generation; and a plain HF model that a bridge has been booted around
(its modules are bridge components now and its own cache gives wrong tokens; pass the bridge,
or load a separate HF instance).

Both stop at the first stop token (default: the tokenizer's EOS and ``<|im_end|>``) or after
``max_new_tokens``, and both are tested token for token against HF
``generate(do_sample=False)`` (``tests/test_generation.py`` on smollm2;
``tests/test_generation_families.py`` on a tiny random model of every causal family in
``tests/families/tiny.py``, where the cached path's logits are also checked against full
forwards at every step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

from interp.errors import InputError, Refused
from interp.families import family_name

STOP_STRINGS = ("<|im_end|>", "<|endoftext|>")


@dataclass(frozen=True)
class Generation:
    """Result of :func:`greedy_generate`.

    Attributes:
        prompt_ids: the prompt's token ids.
        new_ids: generated ids, including the stop token when one ended the generation
            (as HF ``generate`` returns them).
        text: the generated text without the stop token (special tokens kept otherwise).
        stopped: whether a stop token ended it (False: ``max_new_tokens`` reached).
    """

    prompt_ids: tuple[int, ...]
    new_ids: tuple[int, ...]
    text: str
    stopped: bool


def stop_token_ids(tokenizer, extra: Iterable[str] = STOP_STRINGS) -> list[int]:
    """EOS plus the ids of ``extra`` special strings that the vocabulary has."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for s in extra:
        if s in vocab:
            ids.append(int(vocab[s]))
    return sorted(set(ids))


def chat_text(tokenizer, messages: str | Sequence[Mapping[str, str]]) -> str:
    """The chat-formatted prompt string (``add_generation_prompt=True``); a plain string is
    one user message."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                         tokenize=False)


def chat_ids(tokenizer, messages: str | Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of :func:`chat_text`. Tokenizing the formatted string (no extra special
    tokens) gives the same ids as ``apply_chat_template(tokenize=True)``; checked here."""
    text = chat_text(tokenizer, messages)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    ref = tokenizer.apply_chat_template(
        [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages),
        add_generation_prompt=True, tokenize=True)
    ref = ref["input_ids"] if isinstance(ref, Mapping) or hasattr(ref, "keys") else ref
    if list(ref) != list(ids):
        raise RuntimeError("tokenizing the chat-formatted text does not reproduce "
                           "apply_chat_template's ids; offsets would be wrong")
    return ids


def _is_bridge(model) -> bool:
    return hasattr(model, "hook_dict")


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _check_can_generate(model) -> None:
    """Refuse models whose greedy continuation would be silently meaningless or wrong."""
    if _is_bridge(model):
        info = getattr(model, "interp_info", None)
        if info is not None and not info.causal:
            raise Refused(
                f"greedy generation: {info.name} (family {family_name(model)}) is a bidirectional "
                f"encoder; it predicts masked tokens from both sides and does not generate "
                f"text left to right")
        return
    can = getattr(model, "can_generate", None)
    if callable(can) and not can():
        raise Refused(
            f"greedy generation: {type(model).__name__} (family {family_name(model)}) is not a "
            f"causal LM (transformers says it cannot generate); an encoder predicts masked "
            f"tokens and does not generate text left to right")
    wrapped = next((m for m in model.modules()
                    if type(m).__module__.startswith("transformer_lens.")), None)
    if wrapped is not None:
        raise InputError(
            f"greedy generation: this {type(model).__name__} has a TransformerLens bridge "
            f"booted around it (its modules are bridge components now, e.g. "
            f"{type(wrapped).__name__}), and its own KV cache then gives wrong tokens; "
            f"pass the bridge itself (full forwards) or load a separate HF instance")


@torch.no_grad()
def greedy_ids(model, prompt_ids: Sequence[int], max_new_tokens: int = 64,
               stop_ids: Iterable[int] = ()) -> tuple[list[int], bool]:
    """Greedy continuation of ``prompt_ids`` (no BOS added). Returns ``(new_ids, stopped)``;
    ``new_ids`` ends with the stop token when ``stopped``."""
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if len(prompt_ids) == 0:
        raise InputError("prompt is empty")
    _check_can_generate(model)
    stops = set(int(s) for s in stop_ids)
    dev = _device(model)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=dev)     # [1, seq]
    new: list[int] = []
    if _is_bridge(model):
        if not model.__dict__.get("_interp_swapped_layers"):
            from interp.decoding import generate

            out = generate(model, [list(prompt_ids)], max_new_tokens, stop_ids=sorted(stops),
                           progress=False)
            return out.new_ids[0], out.stopped[0]
        for _ in range(max_new_tokens):
            logits = model(ids)                                              # [1, seq, vocab]
            nxt = int(logits[0, -1].argmax())
            new.append(nxt)
            if nxt in stops:
                return new, True
            ids = torch.cat([ids, torch.tensor([[nxt]], device=dev)], dim=1)
        return new, False
    import inspect

    # transformers >= 5.2x names the cache argument/output ``cache`` (``past_key_values``
    # is deprecated); older versions only know ``past_key_values``.
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    past = None
    step = ids
    for _ in range(max_new_tokens):
        out = model(input_ids=step, use_cache=True, **({key: past} if past is not None else {}))
        past = getattr(out, key, None)
        if past is None:
            past = out.past_key_values
        nxt = int(out.logits[0, -1].argmax())                               # logits [1, s, V]
        new.append(nxt)
        if nxt in stops:
            return new, True
        step = torch.tensor([[nxt]], device=dev)
    return new, False


def greedy_generate(model, prompt: str | Sequence[Mapping[str, str]] | Sequence[int],
                    tokenizer=None, max_new_tokens: int = 64, chat: bool = True,
                    stop_ids: Iterable[int] | None = None) -> Generation:
    """Greedy generation from a bridge (full forwards) or a plain HF model (own cache).

    Args:
        model: a TransformerLens bridge (:func:`interp.load_model`) or an HF causal LM.
        prompt: a string (one user message when ``chat``, raw text otherwise), a list of
            chat messages ``[{"role": ..., "content": ...}]``, or token ids.
        tokenizer: default ``model.tokenizer`` (bridges have one).
        max_new_tokens: at most this many new tokens.
        chat: format a string prompt with the tokenizer's chat template
            (``add_generation_prompt=True``).
        stop_ids: default :func:`stop_token_ids` (EOS and ``<|im_end|>``).
    """
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise InputError("no tokenizer: pass tokenizer= (plain HF models carry none)")
    if isinstance(prompt, str):
        ids = chat_ids(tok, prompt) if chat else tok(prompt, add_special_tokens=False).input_ids
    elif len(prompt) and isinstance(prompt[0], Mapping):
        ids = chat_ids(tok, prompt)
    else:
        ids = [int(i) for i in prompt]
    stops = stop_token_ids(tok) if stop_ids is None else list(stop_ids)
    new, stopped = greedy_ids(model, ids, max_new_tokens, stops)
    body = new[:-1] if stopped else new
    return Generation(tuple(ids), tuple(new), tok.decode(body), stopped)
