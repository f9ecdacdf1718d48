"""Batched greedy generation on a hooked model with a KV cache: :func:`generate`.

Architecture
------------
A bridge's own forward recomputes every position per new token (O(n^2) per sequence), and
TransformerLens' cached ``generate`` gives wrong text on GQA models (DESIGN.md). Here the cache
lives inside the attention layers, put there with the one swap mechanism
(:func:`interp.swap.swap_attention`): every layer gets a :class:`CachedSoftmax` bound to one
shared :class:`KVCache`. The rest of the forward is the bridge's own, so every hook fires on
every step, for the positions that step feeds::

    prompts -> left-padded ids [b, P], valid [b, P] (False on padding)
    step 0 (prefill): model(ids [b, P], position_ids [b, P])   hooks see [b, P, ...]
    step t:           model(next [b, 1], position_ids [b, 1])  hooks see [b, 1, ...]
        in each layer (family adapter's swapped forward, then CachedSoftmax):
            q/k/v of the new tokens (after q/k norm and RoPE at their positions)
            cache.keys[l][:, :, L:L+n] = k ;  cache.values[l][:, :, L:L+n] = v
            scores = q . keys[:, :, :L+n] * scale   (tanh soft-capped where the layer caps)
            key slot j visible from query slot i iff valid[j] and j <= i and
                i - j < window (the layer's own sliding window, counted in slots)
            hook_pattern fires with [b, h, n, L+n] when something listens

Positions follow HF ``generate`` on a left-padded batch: a token's position is the number of
real tokens before it in its row (``cumsum(valid) - 1``), padding gets 1; sliding windows count
cache slots, padding included, as HF's masks do. Rows that hit a stop token keep being fed
the pad token (as HF does) and their output ends at the stop token. A padding query (which
would see no key) is allowed to see itself, so no row is ever fully masked (no NaN reaches
the residual stream of padding positions).

Exactness: token for token equal to HF ``generate(do_sample=False)`` on mixed-length left-padded
batches for every causal family of ``tests/families/tiny.py``, and the step logits equal full
forwards (``tests/test_decoding.py``). Refused by name: encoders; layers already swapped to
another implementation (a cache needs the softmax; ``use_cache=False`` runs full forwards
through whatever is swapped in, one prompt at a time).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.attention.softmax import SoftmaxAttention
from interp.errors import InputError
from interp.families.attend import dense_attend
from interp.families.tl import has_listeners


class KVCache:
    """Keys and values of every layer for a batch being generated, in preallocated buffers.

    Attributes:
        capacity: slots per row (prompt length + new tokens).
        length: slots filled by completed forwards (the same for every row: left padding).
        valid: ``[batch, capacity]`` bool, True where a slot holds a real token (prompt
            padding is False; every generated slot is True, as HF extends its mask with ones).
        keys, values: per layer ``[batch, kv_heads, capacity, d_head]`` (allocated at the
            layer's first write, in the dtype of its keys), keys after RoPE.
    """

    def __init__(self, n_layers: int, valid: Tensor, capacity: int) -> None:
        b, p = valid.shape
        if capacity < p:
            raise InputError(f"KVCache: capacity {capacity} < prompt length {p}")
        self.capacity, self.length = capacity, 0
        self.valid = torch.ones(b, capacity, dtype=torch.bool, device=valid.device)
        self.valid[:, :p] = valid.bool()
        self.keys: list[Tensor | None] = [None] * n_layers
        self.values: list[Tensor | None] = [None] * n_layers

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k``/``v`` ``[b, kv_h, n, d]`` of the new tokens at slots
        ``length .. length + n`` of ``layer``; return the layer's keys/values so far
        ``[b, kv_h, length + n, d]`` (views of the buffers)."""
        n, end = k.shape[2], self.length + k.shape[2]
        if end > self.capacity:
            raise InputError(f"KVCache: {end} slots needed, capacity {self.capacity}")
        if self.keys[layer] is None:
            b, h, _, d = k.shape
            self.keys[layer] = k.new_empty(b, h, self.capacity, d)
            self.values[layer] = v.new_empty(b, h, self.capacity, v.shape[-1])
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def allowed(self, n: int, window: int | None) -> Tensor:
        """``[b, 1, n, length + n]`` bool: which cached slots each of the ``n`` new query
        slots may see (valid key, causal, within ``window`` slots; a query always sees
        itself)."""
        end = self.length + n
        qi = torch.arange(self.length, end, device=self.valid.device)[:, None]
        kj = torch.arange(end, device=self.valid.device)[None, :]
        ok = kj <= qi
        if window is not None:
            ok = ok & (qi - kj < window)
        allowed = ok[None] & self.valid[:, None, :end]
        return (allowed | (qi == kj)[None])[:, None]

    def advance(self, n: int) -> None:
        """Mark ``n`` more slots filled (after every layer of a forward has written them)."""
        self.length += n


class CachedSoftmax(SoftmaxAttention):
    """Softmax attention of one layer over a :class:`KVCache` (not in the registry: built by
    :func:`generate`). Its :meth:`attend_cached` is what
    :func:`interp.families.attend.attend` calls instead of a from-scratch attention."""

    name = "softmax (KV cache)"

    def __init__(self, cache: KVCache, *, scale: float | None = None, d_head: int = 64) -> None:
        super().__init__(scale=scale, d_head=d_head)
        self.cache = cache

    def attend_cached(self, attn, spec, q: Tensor, k: Tensor, v: Tensor,
                      window: int | None, softcap: float | None):
        """q ``[b, h, n, d]``, k/v ``[b, kv_h, n, d]`` of the new tokens ->
        ``(out [b, h, n, d], pattern [b, h, n, L + n] or None)``."""
        if not spec.causal:
            raise InputError(f"{attn.name}: a KV cache needs causal attention")
        keys, values = self.cache.write(spec.layer, k, v)
        allowed = self.cache.allowed(q.shape[2], window)              # [b, 1, n, T]
        scale = self.get_scale(q.shape[-1])
        listen = has_listeners(attn.hook_pattern)
        if softcap is None and not listen:
            return F.scaled_dot_product_attention(
                q, keys, values, attn_mask=allowed, scale=scale,
                enable_gqa=q.shape[1] != keys.shape[1]), None
        return dense_attend(attn, q, keys, values, allowed, scale, softcap, listen)


@dataclass
class BatchGeneration:
    """Result of :func:`generate`, one entry per prompt.

    Attributes:
        prompt_ids: each prompt's token ids (no padding).
        new_ids: generated ids, ending with the stop token when one ended the row.
        texts: generated text without the stop token (None for a model without a tokenizer,
            e.g. the toy, prompted with token ids).
        stopped: whether a stop token ended the row (False: ``max_new_tokens`` reached).
        steps: with ``cache_hooks``: one ``{hook name: activation}`` per forward; step 0 is
            the prefill (``[batch, P, ...]`` over the left-padded prompts), step t >= 1 the
            token fed at that step (``[batch, 1, ...]``; ``hook_pattern`` ``[batch, heads, 1,
            P + t]``). Rows are the prompts' order; padded rows' values are not meaningful.
        padding: ``[batch]`` left-padding length of each row in the prefill step.
        scores: with ``scores=True``: ``[batch, steps, vocab]`` float logits of the last
            position at each step (what the argmax picked from; HF ``generate``'s
            ``output_logits``); rows that had stopped carry the logits of the pad they were
            fed.
    """

    prompt_ids: list[list[int]]
    new_ids: list[list[int]]
    texts: list[str] | None
    stopped: list[bool]
    steps: list[dict[str, Tensor]] | None = None
    padding: list[int] = field(default_factory=list)
    scores: Tensor | None = None


def _prompt_ids(tok, prompts, chat: bool) -> list[list[int]]:
    from interp.generation import chat_ids

    if isinstance(prompts, str) or (len(prompts) and isinstance(prompts[0], int)):
        prompts = [prompts]
    out = []
    for p in prompts:
        if isinstance(p, str) and tok is None:
            raise InputError("generate: text prompts need a tokenizer (pass tokenizer=, or "
                             "token ids)")
        if isinstance(p, str):
            ids = chat_ids(tok, p) if chat else tok(p, add_special_tokens=False).input_ids
        else:
            ids = [int(i) for i in p]
        if not ids:
            raise InputError("generate: a prompt is empty")
        out.append(ids)
    if not out:
        raise InputError("generate: no prompts")
    return out


def _left_pad(rows: list[list[int]], pad: int, device) -> tuple[Tensor, Tensor]:
    """``ids [b, P]`` left-padded with ``pad`` and ``valid [b, P]``."""
    p = max(len(r) for r in rows)
    ids = torch.full((len(rows), p), pad, dtype=torch.long)
    valid = torch.zeros(len(rows), p, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, p - len(r):] = torch.tensor(r)
        valid[i, p - len(r):] = True
    return ids.to(device), valid.to(device)


def _check(model, max_new_tokens: int, use_cache: bool) -> None:
    from interp.generation import _check_can_generate, _is_bridge

    if not _is_bridge(model):
        raise InputError("generate: expects a hooked model (interp.load_model); for a plain HF "
                         "model use its own generate() or interp.generation.greedy_generate")
    _check_can_generate(model)
    if max_new_tokens < 0:
        raise InputError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    swapped = model.__dict__.get("_interp_swapped_layers") or {}
    if use_cache and swapped:
        raise InputError(
            f"generate: layers {sorted(swapped)} are swapped to {sorted(set(swapped.values()))}; "
            f"the KV cache needs each layer's own softmax. Generate outside the swap, or pass "
            f"use_cache=False (full forwards through the swapped layers, one prompt at a time)")


@torch.no_grad()
def generate(model, prompts: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
             max_new_tokens: int = 64, *, chat: bool = False, stop_ids=None, tokenizer=None,
             cache_hooks: Sequence[str] = (), use_cache: bool = True,
             scores: bool = False, progress: bool | None = None) -> BatchGeneration:
    """Greedy generation for a batch of prompts on a hooked model, with a KV cache.

    Args:
        model: a causal hooked model (:func:`interp.load_model`).
        prompts: a string, a list of strings (raw text, or one user message each with
            ``chat=True``), one list of token ids, or a list of them. Token ids are used as
            given (no BOS added); text is tokenized without special tokens.
        max_new_tokens: at most this many new tokens per prompt.
        chat: format string prompts with the tokenizer's chat template.
        stop_ids: token ids that end a row (default: EOS and ``<|im_end|>``, see
            :func:`interp.generation.stop_token_ids`; none without a tokenizer); ``()`` for
            none.
        tokenizer: default ``model.tokenizer`` (a model without one takes token ids).
        cache_hooks: hook names whose activations are returned per step (``steps``).
        use_cache: False runs a full forward per token and prompt (works with swapped
            layers; O(n^2)); ``cache_hooks`` then needs a single prompt.
        scores: also return each step's last-position logits (``scores``; cached path).
        progress: a bar over the new tokens once generation has run 2 s (None: the
            :mod:`interp.progress` setting).

    Returns:
        :class:`BatchGeneration`.

    Raises:
        Refused: an encoder. InputError: a plain HF model, an empty prompt, negative
        ``max_new_tokens``, swapped layers with ``use_cache=True``, a prompt plus new tokens
        longer than the model's context, an unknown hook name.
    """
    from interp.generation import stop_token_ids
    from interp.hooks import attach

    _check(model, max_new_tokens, use_cache)
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    rows = _prompt_ids(tok, prompts, chat)
    if tok is None and stop_ids is None:
        stop_ids = ()                       # a model without a tokenizer (the toy) has no EOS
    stops = set(int(s) for s in (stop_token_ids(tok) if stop_ids is None else stop_ids))
    n_ctx = getattr(model.cfg, "n_ctx", None)
    longest = max(len(r) for r in rows) + max_new_tokens
    if n_ctx and longest > n_ctx:
        raise InputError(f"generate: prompt + new tokens = {longest} tokens, over the model's "
                         f"context of {n_ctx}")
    steps: list[dict[str, Tensor]] = []
    logits_seen: list[Tensor] = []

    def recorder(name: str):
        def record(act, hook):              # keyed by the name asked for (aliases included)
            steps[-1][name] = act.detach().clone()
        return record

    with attach(model, [(h, recorder(h)) for h in cache_hooks]):
        if use_cache:
            new = _cached_loop(model, rows, max_new_tokens, stops, tok, steps, bool(cache_hooks),
                               logits_seen if scores else None, progress)
        else:
            if cache_hooks and len(rows) > 1:
                raise InputError("generate: cache_hooks with use_cache=False needs one prompt")
            if scores:
                raise InputError("generate: scores=True needs use_cache=True")
            new = [_full_loop(model, r, max_new_tokens, stops, steps, bool(cache_hooks))
                   for r in rows]
    stopped = [bool(n) and n[-1] in stops for n in new]
    texts = (None if tok is None else
             [tok.decode(n[:-1] if s else n) for n, s in zip(new, stopped)])
    longest_prompt = max(len(r) for r in rows)
    return BatchGeneration(rows, new, texts, stopped, steps if cache_hooks else None,
                           [longest_prompt - len(r) for r in rows],
                           torch.stack(logits_seen, 1) if logits_seen else None)


def _pad_id(tok, stops: set[int]) -> int:
    """The id fed on padding and after a row's stop (masked out, so any valid id works)."""
    known = (tok.pad_token_id, tok.eos_token_id) if tok is not None else ()
    for cand in (*known, *sorted(stops)):
        if cand is not None:
            return int(cand)
    return 0


def _cached_loop(model, rows, max_new_tokens, stops, tok, steps, record,
                 logits_seen: list[Tensor] | None, progress: bool | None) -> list[list[int]]:
    from interp.families import describe_layers
    from interp.progress import bar
    from interp.swap import swap_attention

    device = next(model.parameters()).device
    pad = _pad_id(tok, stops)
    ids, valid = _left_pad(rows, pad, device)
    new: list[list[int]] = [[] for _ in rows]
    if max_new_tokens == 0:
        return new
    cache = KVCache(model.cfg.n_layers, valid, ids.shape[1] + max_new_tokens)
    impls = [CachedSoftmax(cache, scale=s.scaling, d_head=s.head_dim)
             for s in describe_layers(model)]
    pos = (valid.long().cumsum(-1) - 1).masked_fill(~valid, 1)        # [b, P]
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    stop_ids = torch.tensor(sorted(stops), dtype=torch.long, device=device)
    with swap_attention(model, impls), bar(total=max_new_tokens, desc="generate", unit="token",
                                           delay=2.0, show=progress) as shown:
        feed = ids
        for _ in range(max_new_tokens):
            shown.update(1)
            if record:
                steps.append({})
            logits = model(feed, position_ids=pos)                     # [b, n, vocab]
            cache.advance(feed.shape[1])
            if logits_seen is not None:
                logits_seen.append(logits[:, -1].float())
            nxt = logits[:, -1].argmax(-1).masked_fill(done, pad)      # [b]
            for i in torch.nonzero(~done).flatten().tolist():
                new[i].append(int(nxt[i]))
            done |= torch.isin(nxt, stop_ids)      # a finished row's pad changes nothing
            if bool(done.all()):
                break
            pos = pos[:, -1:] + 1
            feed = nxt[:, None]
    return new


def _full_loop(model, ids, max_new_tokens, stops, steps, record) -> list[int]:
    """Today's reference loop: a full forward of one prompt per new token."""
    device = next(model.parameters()).device
    seq = torch.tensor([ids], dtype=torch.long, device=device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        if record:
            steps.append({})
        nxt = int(model(seq)[0, -1].argmax())
        new.append(nxt)
        if nxt in stops:
            break
        seq = torch.cat([seq, torch.tensor([[nxt]], device=device)], dim=1)
    return new
