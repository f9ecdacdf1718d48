"""Put an attention implementation into a hooked model, and take it out again exactly.

Architecture
------------
``swap_attention(model, impl, layers)`` is a context manager. For each chosen layer it
shadows the bridge attention component's ``forward`` with an instance attribute (the
class method stays untouched), so on exit deleting that attribute restores the model
bit for bit; nothing else of the model changes (no weights, no hooks). The swapped
forward reuses the layer's own pieces, in the same order as TransformerLens:

    hidden [b, n, d_model] -> hook_in -> q/k/v LinearBridges (hook_q/hook_k/hook_v fire)
    -> RoPE from the model's own rotary tables (hook_rot_q/hook_rot_k fire, after RoPE)
    -> impl(q [b, h, n, d], k [b, kv_h, n, d], v [b, kv_h, n, d], causal)  (GQA as is)
    -> o LinearBridge (hook_z fires) -> hook_out

The model's dense N x N attention is never computed underneath: for decoder models the HF
config is switched to ``sdpa`` mask creation while swapped, so no ``[n, n]`` mask is built
for unpadded inputs, and the swapped forward calls only ``impl``. ``hook_attn_scores`` does
not fire in swapped layers (linear attention has no scores). ``hook_pattern`` fires only
when something listens to it: then the implementation's effective pattern
``impl.pattern(...)`` ``[b, h, n, n]`` is materialised, passed through the hook, and the
output is computed from the (possibly edited) pattern, so pattern patching still works.

Supported: decoder models whose attention is TransformerLens'
``PositionEmbeddingsAttentionBridge`` (Llama family: smollm2-135m) and the native toy
models. Padded batches and incremental decoding with a KV cache are refused with a clear
error rather than computed wrongly.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from interp.attention import AttentionImpl, get as get_attention, repeat_kv

_ACTIVE = "_interp_swapped_layers"


def _kind(attn) -> str:
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (  # noqa: E501
        PositionEmbeddingsAttentionBridge,
    )
    from transformer_lens.model_bridge.sources.native.model import NativeAttention

    if isinstance(attn, PositionEmbeddingsAttentionBridge):
        return "rotary_hf"
    if isinstance(getattr(attn, "original_component", None), NativeAttention):
        return "native"
    raise NotImplementedError(
        f"swap_attention supports Llama-style (PositionEmbeddingsAttentionBridge) and native "
        f"toy attention; this layer is {type(attn).__name__} wrapping "
        f"{type(getattr(attn, 'original_component', None)).__name__}"
    )


def _has_listeners(hook_point) -> bool:
    return bool(hook_point._forward_hooks) or bool(hook_point._forward_pre_hooks)


def _check_no_padding(attention_mask, where: str) -> None:
    if attention_mask is None:
        return
    if attention_mask.dim() == 2 and bool(attention_mask.bool().all()):
        return
    raise ValueError(
        f"{where}: swap_attention does not support padded batches (got an attention_mask of "
        f"shape {tuple(attention_mask.shape)}); pass sequences of equal length without "
        f"padding, or run them one at a time"
    )


def _check_no_cache(kwargs: dict, where: str) -> None:
    for key in ("past_key_values", "past_key_value", "cache", "layer_past"):
        cache = kwargs.get(key)
        if cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0:
            raise NotImplementedError(
                f"{where}: incremental decoding with a KV cache is not supported inside "
                f"swap_attention; run full sequences (e.g. generate with use_past_kv_cache=False)"
            )


def _attend(self, impl: AttentionImpl, q, k, v, causal: bool):
    """q ``[b, h, n, d]``, k/v ``[b, kv_h, n, d]`` -> ``(out [b, h, n, d], pattern or None)``."""
    if _has_listeners(self.hook_pattern):
        pattern = impl.pattern(q, k, v, causal=causal)              # [b, h, n, n]
        pattern = self.hook_pattern(pattern)
        vv = repeat_kv(v, q.shape[1] // v.shape[1]).to(pattern.dtype)
        return torch.matmul(pattern, vv).to(q.dtype), pattern
    return impl(q, k, v, causal=causal), None


def _forward_rotary_hf(self, impl: AttentionImpl, causal: bool, *args: Any, **kwargs: Any):
    """Swapped forward for PositionEmbeddingsAttentionBridge (HF Llama-family layers)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    hidden = kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]
    _check_no_padding(kwargs.get("attention_mask"), self.name)
    _check_no_cache(kwargs, self.name)
    hf_attn = self.original_component
    hidden = self.hook_in(hidden)
    b, n, _ = hidden.shape
    d = hf_attn.head_dim
    q = self.q(hidden).view(b, n, -1, d).transpose(1, 2)           # [b, h, n, d]
    k = self.k(hidden).view(b, n, -1, d).transpose(1, 2)           # [b, kv_h, n, d]
    v = self.v(hidden).view(b, n, -1, d).transpose(1, 2)
    pos = kwargs.get("position_embeddings")
    if pos is None:
        raise ValueError(f"{self.name}: no position_embeddings reached the attention layer")
    cos, sin = self._apply_position_embedding_hooks(pos)
    if cos.shape[-1] != d:
        raise NotImplementedError(f"{self.name}: partial rotary is not supported by the swap")
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    q = self.hook_rot_q(q)
    k = self.hook_rot_k(k)
    _check_scale(impl, getattr(hf_attn, "scaling", d ** -0.5), d, self.name)
    out, pattern = _attend(self, impl, q, k, v, causal)
    out = out.transpose(1, 2).reshape(b, n, -1)
    out = self.hook_out(self.o(out))
    return out, pattern


def _forward_native(self, impl: AttentionImpl, causal: bool, *args: Any, **kwargs: Any):
    """Swapped forward for the native toy attention (NativeAttention inside AttentionBridge)."""
    hidden = kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]
    _check_no_padding(kwargs.get("attention_mask"), self.name)
    att = self.original_component
    hidden = self.hook_in(hidden)
    b, n, _ = hidden.shape
    q = att.q(hidden).view(b, n, att.n_heads, att.d_head).transpose(1, 2)
    k = att.k(hidden).view(b, n, att.n_kv_heads, att.d_head).transpose(1, 2)
    v = att.v(hidden).view(b, n, att.n_kv_heads, att.d_head).transpose(1, 2)
    if att.rotary is not None:
        q, k = att.rotary.apply_rope(q, k, position_ids=kwargs.get("position_ids"))
    _check_scale(impl, 1.0 / att.scale, att.d_head, self.name)
    out, pattern = _attend(self, impl, q, k, v, causal and att.causal)
    out = att.o(out.transpose(1, 2).reshape(b, n, -1))
    return self.hook_out(out), pattern


def _check_scale(impl: AttentionImpl, model_scale: float, d_head: int, where: str) -> None:
    ours = impl.get_scale(d_head)
    if not math.isclose(ours, model_scale, rel_tol=1e-6):
        raise ValueError(
            f"{where}: the model scales scores by {model_scale:g} but the implementation uses "
            f"{ours:g}; build it with scale={model_scale!r}"
        )


_FORWARDS = {"rotary_hf": _forward_rotary_hf, "native": _forward_native}


def _resolve_layers(model, layers: int | Sequence[int] | None) -> list[int]:
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        if not isinstance(layer, int) or not -n <= layer < n:
            raise ValueError(f"layer {layer!r} is out of range for a {n}-layer model")
        out.append(layer % n)
    if len(set(out)) != len(out):
        raise ValueError(f"layers {list(layers)} names a layer twice")
    return sorted(out)


@contextmanager
def swap_attention(model, impl: AttentionImpl | str, layers: int | Sequence[int] | None = None,
                   **options: Any) -> Iterator[AttentionImpl]:
    """Make ``layers`` of ``model`` use attention implementation ``impl`` inside the block.

    Args:
        model: a hooked model from :func:`interp.load_model` (decoder or toy).
        impl: an :class:`~interp.attention.AttentionImpl`, or a registry name built with
            ``options`` (e.g. ``"linear", feature_map="elu", form="chunked"``).
        layers: layer index, list of indices, or None for all layers.

    Yields:
        The implementation in use.

    On exit -- normal or by exception -- every swapped layer gets its own forward back; the
    model is bitwise the original and holds no extra hooks.

    Raises:
        ValueError: bad layer indices, a layer already swapped, a score scale mismatch
            (inside the forward), padded batches.
        NotImplementedError: an attention type the swap does not support (e.g. BERT).
    """
    if isinstance(impl, str):
        impl = get_attention(impl, **options)
    elif options:
        raise ValueError("options are only accepted with an implementation name")
    if not isinstance(impl, AttentionImpl):
        raise TypeError(f"impl must be an AttentionImpl or a registry name, got {type(impl)}")
    chosen = _resolve_layers(model, layers)
    active: dict[int, str] = model.__dict__.setdefault(_ACTIVE, {})
    clash = [layer for layer in chosen if layer in active]
    if clash:
        raise ValueError(f"layers {clash} are already swapped ({active}); nest swaps on "
                         f"disjoint layers only")
    attns = [model.blocks[layer].attn for layer in chosen]
    kinds = [_kind(a) for a in attns]
    causal = bool(getattr(getattr(model, "interp_info", None), "causal", True))
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    old_impl = getattr(hf_config, "_attn_implementation", None) if hf_config else None
    impl = impl.to(next(model.parameters()).device)
    done: list = []
    try:
        for layer, attn, kind in zip(chosen, attns, kinds):
            fwd = _FORWARDS[kind]

            def swapped(*args, _attn=attn, _fwd=fwd, **kwargs):
                return _fwd(_attn, impl, causal, *args, **kwargs)

            object.__setattr__(attn, "forward", swapped)
            done.append(attn)
            active[layer] = impl.name
        if hf_config is not None and old_impl == "eager":
            hf_config._attn_implementation = "sdpa"   # no dense [n, n] mask for unpadded input
        yield impl
    finally:
        for attn in done:
            object.__delattr__(attn, "forward")
        for layer in chosen:
            active.pop(layer, None)
        if hf_config is not None and old_impl is not None:
            hf_config._attn_implementation = old_impl
