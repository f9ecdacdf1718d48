"""The core every swapped forward shares: attend with an implementation under a layer's own
constraints, and check what HF hands the layer.

Architecture
------------
Each family adapter's swapped forward (:meth:`interp.families.base.Family.swapped_forward`)
recomputes q/k/v with the layer's own modules, then calls :func:`attend`, which applies what
the layer does to its scores besides softmax: a per-layer sliding window and tanh
soft-capping (:class:`~interp.families.layers.LayerAttention`). Masking implementations
(softmax, sliding window, sink + window, block-sparse) take them on exactly: the allowed set
becomes the implementation's set AND the layer's window, and capped scores go through the
dense reference. Softmax on a sliding layer without capping runs the O(n w) sliding-window
kernel. Linear attention has no scores to mask or cap: such a layer is refused by name
(:func:`check_layer`) unless the caller drops the feature knowingly
(``ignore=("sliding_window",)`` / ``("softcap",)``).

The 4-D mask HF hands a layer is checked, not trusted (:func:`check_mask`): it must equal the
causal (and window) mask the swap applies, so padded batches are refused rather than computed
wrongly. A KV cache holding earlier tokens is refused (:func:`check_no_cache`). The sliding
window is the one rule of :func:`interp.attention.local.band_mask`.
"""
from __future__ import annotations

import math

import torch

from interp.attention import AttentionImpl, repeat_kv
from interp.attention.base import SparseAttention, compute_dtype, safe_softmax
from interp.attention.local import band_mask
from interp.attention.softmax import SoftmaxAttention, dense_mask
from interp.errors import InputError, Refused
from interp.families.layers import LayerAttention, refuse
from interp.families.tl import has_listeners

WHO = "swap_attention"
#: layer features a caller may drop knowingly with ``ignore=``
IGNORABLE = ("sliding_window", "softcap")


def masks_like(impl: AttentionImpl) -> bool:
    """Whether ``impl`` attends through a softmax over an allowed set of keys (so a layer's
    window and soft-capping can be applied to it exactly)."""
    return isinstance(impl, (SoftmaxAttention, SparseAttention))


def check_features(spec: LayerAttention, impl: AttentionImpl, ignore: tuple[str, ...]) -> None:
    """Raise before swapping when ``impl`` cannot apply a feature of layer ``spec`` (its
    unsupported features, a window or soft-capping for an implementation without scores)."""
    if spec.unsupported:
        raise refuse(spec, WHO, spec.unsupported[0], "no swapped forward reproduces it")
    if masks_like(impl):
        return
    if spec.sliding_window is not None and "sliding_window" not in ignore:
        raise refuse(spec, WHO, f"a sliding window of {spec.sliding_window} tokens",
                     f"{impl.name} attention has no scores to mask; pass "
                     f"ignore=('sliding_window',) to drop the window knowingly, or swap only "
                     f"the full-attention layers (layers=...)")
    if spec.softcap is not None and "softcap" not in ignore:
        raise refuse(spec, WHO, f"score soft-capping (tanh, cap {spec.softcap:g})",
                     f"{impl.name} attention has no scores to cap; pass ignore=('softcap',) "
                     f"to drop it knowingly")


def _allowed(impl: AttentionImpl, n: int, causal: bool, window: int | None, device) -> torch.Tensor:
    """``[n, n]`` bool: the implementation's allowed set AND the layer's window."""
    mask = (impl.allowed_mask(n, causal, device) if isinstance(impl, SparseAttention)
            else dense_mask(n, causal, device))
    if window is not None:
        i = torch.arange(n, device=device)
        mask = mask & band_mask(i[:, None], i[None, :], window, causal)
    return mask


def check_mask(attention_mask, spec: LayerAttention, n: int, where: str) -> None:
    """Accept only masks that add nothing to what the swap applies itself (causal + the layer's
    window): no mask, an all-ones 2-D mask, or a 4-D mask equal to that structure. Anything
    else (padding) is refused with an :class:`~interp.errors.InputError`."""
    if attention_mask is None:
        return
    if attention_mask.dim() == 2 and bool(attention_mask.bool().all()):
        return
    if attention_mask.dim() == 4 and attention_mask.shape[-2:] == (n, n):
        if _mask_is_structure(attention_mask, spec, n):
            return
    if attention_mask.dim() == 4 and attention_mask.shape[-2] == 1 and attention_mask.shape[-1] == n:
        if bool((attention_mask == 0).all()):           # encoder additive mask, no padding
            return
    raise InputError(
        f"{where}: swap_attention does not support padded batches (got an attention_mask of "
        f"shape {tuple(attention_mask.shape)} that masks more than the causal / sliding-window "
        f"structure); pass sequences of equal length without padding, or run them one at a "
        f"time")


def _mask_is_structure(attention_mask, spec: LayerAttention, n: int) -> bool:
    """Whether a 4-D ``[.., n, n]`` mask (bool, or additive float) allows exactly the causal
    (and window) structure; compared a block of rows at a time (no ``[n, n]`` temporaries
    beside the mask itself)."""
    rows = max(1, (1 << 22) // n)
    j = torch.arange(n, device=attention_mask.device)
    for i0 in range(0, n, rows):
        block = attention_mask[..., i0:i0 + rows, :]
        allowed = (block if block.dtype == torch.bool
                   else block > torch.finfo(block.dtype).min / 2)
        qpos, kpos = j[i0:i0 + rows, None], j[None, :]
        if spec.sliding_window is not None:
            want = band_mask(qpos, kpos, spec.sliding_window, spec.causal)
        else:
            want = (qpos >= kpos) if spec.causal else torch.ones_like(qpos == kpos)
        if not bool((allowed == want).all()):
            return False
    return True


def check_no_cache(kwargs: dict, n: int, where: str) -> None:
    """Refuse incremental decoding: a KV cache that already holds tokens from an earlier call
    (a from-scratch forward only has this call's ``n`` tokens in the layers before this one)."""
    for key in ("past_key_values", "past_key_value", "cache", "layer_past"):
        cache = kwargs.get(key)
        if cache is None or not hasattr(cache, "get_seq_length"):
            continue
        n_layers = len(getattr(cache, "layers", ())) or 1
        longest = max(cache.get_seq_length(i) for i in range(n_layers))
        if longest > n:
            raise Refused(
                f"{where}: incremental decoding with a KV cache is not supported inside "
                f"swap_attention; run full sequences (e.g. generate with use_past_kv_cache=False)")


def check_scale(impl: AttentionImpl, spec: LayerAttention, where: str) -> None:
    """The implementation's score scale must be the layer's (else InputError)."""
    ours = impl.get_scale(spec.head_dim)
    if not math.isclose(ours, spec.scaling, rel_tol=1e-6):
        raise InputError(
            f"{where}: the model scales scores by {spec.scaling:g} but the implementation uses "
            f"{ours:g}; build it with scale={spec.scaling!r} (or pass the implementation by "
            f"name: swap_attention then uses each layer's own scale)")


def attend(attn, impl: AttentionImpl, spec: LayerAttention, q, k, v, ignore: tuple[str, ...]):
    """q ``[b, h, n, d]``, k/v ``[b, kv_h, n, d]`` -> ``(out [b, h, n, d], pattern or None)``,
    under layer ``spec``'s window and soft-capping. ``attn.hook_pattern`` fires (and may edit
    the pattern) only when something listens to it."""
    window = None if "sliding_window" in ignore else spec.sliding_window
    softcap = None if "softcap" in ignore else spec.softcap
    cached = getattr(impl, "attend_cached", None)
    if cached is not None:                                # interp.decoding: keys from a KV cache
        return cached(attn, spec, q, k, v, window, softcap)
    listen = has_listeners(attn.hook_pattern)
    n = q.shape[2]
    if window is not None and window >= n:
        window = None                                     # the window cuts nothing here
    by_rows = getattr(impl, "attend_layer", None)
    if by_rows is not None and not listen:                # exact, O(rows * n) memory
        return by_rows(q, k, v, layer=spec.layer, causal=spec.causal, window=window,
                       softcap=softcap), None
    if not masks_like(impl) or (window is None and softcap is None):
        if listen:
            pattern = attn.hook_pattern(impl.pattern(q, k, v, causal=spec.causal))
            vv = repeat_kv(v, q.shape[1] // v.shape[1]).to(pattern.dtype)
            return torch.matmul(pattern, vv).to(q.dtype), pattern
        return impl(q, k, v, causal=spec.causal), None
    scale = impl.get_scale(q.shape[-1])
    if (softcap is None and not listen and type(impl) is SoftmaxAttention and spec.causal):
        from interp.attention.local import local_attention

        return local_attention(q, k, v, window=window, causal=True, scale=scale).to(q.dtype), None
    allowed = _allowed(impl, n, spec.causal, window, q.device)
    return dense_attend(attn, q, k, v, allowed, scale, softcap, listen)


def dense_attend(attn, q, k, v, allowed, scale: float, softcap: float | None, listen: bool):
    """The dense reference every masked path shares: q ``[b, h, n, d]``, k/v ``[b, kv_h, T,
    d]``, ``allowed`` bool broadcastable to ``[b, h, n, T]`` -> ``(out [b, h, n, d], pattern
    [b, h, n, T] or None)``; scores scaled, tanh soft-capped where ``softcap``, masked,
    softmaxed (fully masked rows give zeros); ``attn.hook_pattern`` fires when ``listen``."""
    ct = compute_dtype(q.dtype)
    kk = repeat_kv(k, q.shape[1] // k.shape[1]).to(ct)
    vv = repeat_kv(v, q.shape[1] // v.shape[1]).to(ct)
    scores = torch.matmul(q.to(ct), kk.transpose(-1, -2)) * scale          # [b, h, n, T]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    pattern = safe_softmax(scores.masked_fill(~allowed, float("-inf")))
    if listen:
        pattern = attn.hook_pattern(pattern.to(q.dtype)).to(ct)
    return torch.matmul(pattern, vv).to(q.dtype), (pattern.to(q.dtype) if listen else None)


def hidden_states(args, kwargs):
    """The hidden states a layer's forward was called with (positional or keyword)."""
    return kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]
