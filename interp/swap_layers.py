"""The swapped forward of one attention layer, per bridge class, exact to the layer or refused.

Architecture
------------
A swapped layer recomputes q/k/v with the layer's own modules, in the same order and through
the same hook points as the TransformerLens bridge, then hands them to the implementation
under the layer's own constraints (:class:`interp.families.layers.LayerAttention`):

    ROTARY (Llama, Mistral, Qwen2/3, Gemma 2/3):
        hook_in -> q/k/v LinearBridges -> [b, heads, n, d] -> q/k RMSNorm (hook_q_normed,
        hook_k_normed) -> RoPE, full or partial (hook_rot_q, hook_rot_k) -> attend -> o
    JOINT_QKV_ROTARY (GPT-NeoX, Phi-3): hook_in -> q/k/v -> RoPE (partial) -> attend -> o
    JOINT_QKV (GPT-2): hook_in -> q/k/v -> attend -> o
    DELEGATING (BERT): hook_in -> q/k/v -> attend (bidirectional) -> o -> LayerNorm(. + in)
    NATIVE (toy): q/k/v -> RoPE -> attend -> o

``attend`` applies what the layer does to its scores besides softmax: a per-layer sliding
window and tanh soft-capping. Masking implementations (softmax, sliding window, sink + window,
block-sparse) take them on exactly: the allowed set becomes the implementation's set AND the
layer's window, and capped scores go through the dense reference. Softmax on a sliding layer
without capping runs the O(n w) sliding-window kernel. Linear attention has no scores to mask
or cap: such a layer is refused by name unless the caller drops the feature knowingly
(``ignore=("sliding_window",)`` / ``("softcap",)``).

The 4-D mask HF hands a layer is checked, not trusted: it must equal the causal (and window)
mask the swap applies, so padded batches are refused rather than computed wrongly.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from interp.attention import AttentionImpl, repeat_kv
from interp.attention.base import SparseAttention, compute_dtype, safe_softmax
from interp.attention.softmax import SoftmaxAttention, dense_mask
from interp.families.layers import (
    DELEGATING,
    JOINT_QKV,
    JOINT_QKV_ROTARY,
    NATIVE,
    ROTARY,
    LayerAttention,
    refuse,
)

WHO = "swap_attention"
#: layer features a caller may drop knowingly with ``ignore=``
IGNORABLE = ("sliding_window", "softcap")


def _has_listeners(hook_point) -> bool:
    return bool(hook_point._forward_hooks) or bool(hook_point._forward_pre_hooks)


def masks_like(impl: AttentionImpl) -> bool:
    """Whether ``impl`` attends through a softmax over an allowed set of keys (so a layer's
    window and soft-capping can be applied to it exactly)."""
    return isinstance(impl, (SoftmaxAttention, SparseAttention))


def check_layer(spec: LayerAttention, impl: AttentionImpl, ignore: tuple[str, ...]) -> None:
    """Raise before swapping when ``impl`` cannot reproduce what layer ``spec`` does."""
    if spec.bridge not in (ROTARY, JOINT_QKV, JOINT_QKV_ROTARY, DELEGATING, NATIVE):
        raise refuse(spec, WHO, f"the attention bridge {spec.bridge}",
                     "swap_attention has no exact forward for it")
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
        diff = i[:, None] - i[None, :]
        mask = mask & ((diff < window) if causal else (diff.abs() < window))
    return mask


def check_mask(attention_mask, spec: LayerAttention, n: int, where: str) -> None:
    """Accept only masks that add nothing to what the swap applies itself (causal + the layer's
    window): no mask, an all-ones 2-D mask, or a 4-D mask equal to that structure. Anything
    else (padding) is refused."""
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
    raise ValueError(
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
        diff = j[i0:i0 + rows, None] - j[None, :]
        want = (diff >= 0) if spec.causal else torch.ones_like(diff, dtype=torch.bool)
        if spec.sliding_window is not None:
            want = want & ((diff.abs() if not spec.causal else diff) < spec.sliding_window)
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
            raise NotImplementedError(
                f"{where}: incremental decoding with a KV cache is not supported inside "
                f"swap_attention; run full sequences (e.g. generate with use_past_kv_cache=False)")


def attend(self, impl: AttentionImpl, spec: LayerAttention, q, k, v, ignore: tuple[str, ...]):
    """q ``[b, h, n, d]``, k/v ``[b, kv_h, n, d]`` -> ``(out [b, h, n, d], pattern or None)``,
    under layer ``spec``'s window and soft-capping. ``hook_pattern`` fires (and may edit the
    pattern) only when something listens to it."""
    window = None if "sliding_window" in ignore else spec.sliding_window
    softcap = None if "softcap" in ignore else spec.softcap
    listen = _has_listeners(self.hook_pattern)
    n = q.shape[2]
    if window is not None and window >= n:
        window = None                                     # the window cuts nothing here
    by_rows = getattr(impl, "attend_layer", None)
    if by_rows is not None and not listen:                # exact, O(rows * n) memory
        return by_rows(q, k, v, layer=spec.layer, causal=spec.causal, window=window,
                       softcap=softcap), None
    if not masks_like(impl) or (window is None and softcap is None):
        if listen:
            pattern = self.hook_pattern(impl.pattern(q, k, v, causal=spec.causal))
            vv = repeat_kv(v, q.shape[1] // v.shape[1]).to(pattern.dtype)
            return torch.matmul(pattern, vv).to(q.dtype), pattern
        return impl(q, k, v, causal=spec.causal), None
    scale = impl.get_scale(q.shape[-1])
    if (softcap is None and not listen and type(impl) is SoftmaxAttention and spec.causal):
        from interp.attention.local import local_attention

        return local_attention(q, k, v, window=window, causal=True, scale=scale).to(q.dtype), None
    ct = compute_dtype(q.dtype)
    kk = repeat_kv(k, q.shape[1] // k.shape[1]).to(ct)
    vv = repeat_kv(v, q.shape[1] // v.shape[1]).to(ct)
    scores = torch.matmul(q.to(ct), kk.transpose(-1, -2)) * scale          # [b, h, n, n]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    allowed = _allowed(impl, n, spec.causal, window, q.device)
    pattern = safe_softmax(scores.masked_fill(~allowed, float("-inf")))
    if listen:
        pattern = self.hook_pattern(pattern.to(q.dtype)).to(ct)
    return torch.matmul(pattern, vv).to(q.dtype), (pattern.to(q.dtype) if listen else None)


def check_scale(impl: AttentionImpl, spec: LayerAttention, where: str) -> None:
    ours = impl.get_scale(spec.head_dim)
    if not math.isclose(ours, spec.scaling, rel_tol=1e-6):
        raise ValueError(
            f"{where}: the model scales scores by {spec.scaling:g} but the implementation uses "
            f"{ours:g}; build it with scale={spec.scaling!r} (or pass the implementation by "
            f"name: swap_attention then uses each layer's own scale)")


def _hidden(args, kwargs):
    return kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]


def _rope(q, k, cos, sin, rotate):
    """Rotate the leading ``cos.shape[-1]`` dims of q/k (all of them, or a partial rotary)."""
    r = cos.shape[-1]
    if r == q.shape[-1]:
        return rotate(q, k, cos, sin)
    q_rot, k_rot = rotate(q[..., :r], k[..., :r], cos, sin)
    return torch.cat([q_rot, q[..., r:]], dim=-1), torch.cat([k_rot, k[..., r:]], dim=-1)


def forward_rotary(self, impl, spec, ignore, *args: Any, **kwargs: Any):
    """Swapped forward for ``PositionEmbeddingsAttentionBridge``."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    hidden = self.hook_in(_hidden(args, kwargs))
    b, n, _ = hidden.shape
    d = spec.head_dim
    check_no_cache(kwargs, n, self.name)
    check_mask(kwargs.get("attention_mask"), spec, n, self.name)
    q = self.q(hidden).view(b, n, -1, d).transpose(1, 2)           # [b, h, n, d]
    k = self.k(hidden).view(b, n, -1, d).transpose(1, 2)           # [b, kv_h, n, d]
    v = self.v(hidden).view(b, n, -1, d).transpose(1, 2)
    if spec.qk_norm:
        if self._qk_norm_phase != "post_reshape":
            raise refuse(spec, WHO, f"q/k norm in phase {self._qk_norm_phase}", "not reproduced")
        if self._qk_norm_per_head:
            q = self.hook_q_normed(self.q_norm(q.transpose(1, 2)).transpose(1, 2))
            k = self.hook_k_normed(self.k_norm(k.transpose(1, 2)).transpose(1, 2))
        else:
            q = self.hook_q_normed(self.q_norm(q))
            k = self.hook_k_normed(self.k_norm(k))
    pos = kwargs.get("position_embeddings")
    if pos is None:
        raise ValueError(f"{self.name}: no position_embeddings reached the attention layer")
    cos, sin = self._apply_position_embedding_hooks(pos)
    if cos.shape[-1] * 2 == d and spec.rotary_dim == d:
        raise refuse(spec, WHO, "half-width rotary tables (gpt-oss)", "not reproduced")
    q, k = _rope(q, k, cos, sin, apply_rotary_pos_emb)
    q = self.hook_rot_q(q)
    k = self.hook_rot_k(k)
    check_scale(impl, spec, self.name)
    out, pattern = attend(self, impl, spec, q, k, v, ignore)
    out = out.transpose(1, 2).reshape(b, n, -1)
    return self.hook_out(self.o(out)), pattern


def forward_joint_qkv(self, impl, spec, ignore, *args: Any, **kwargs: Any):
    """Swapped forward for ``JointQKVAttentionBridge`` (GPT-2) and
    ``JointQKVPositionEmbeddingsAttentionBridge`` (GPT-NeoX, Phi-3)."""
    hidden = self._apply_attention_input_hook(*args, **kwargs)
    q, k, v, b, n, d = self._reshape_qkv_to_heads(self.q(hidden), self.k(hidden), self.v(hidden),
                                                   spec.n_heads, spec.n_kv_heads)
    check_no_cache(kwargs, n, self.name)
    check_mask(kwargs.get("attention_mask"), spec, n, self.name)
    if spec.bridge == JOINT_QKV_ROTARY:
        pos = kwargs.get("position_embeddings")
        if not isinstance(pos, tuple):
            raise ValueError(f"{self.name}: no position_embeddings reached the attention layer")
        cos, sin = self._apply_position_embedding_hooks(pos)
        q, k = self._apply_rotary_pos_emb(q, k, cos, sin)
    check_scale(impl, spec, self.name)
    out, pattern = attend(self, impl, spec, q, k, v, ignore)
    out = self._apply_output_projection(self._reshape_attn_output(out, b, n, spec.n_heads, d))
    return self._process_output((out, pattern))


def forward_delegating(self, impl, spec, ignore, *args: Any, **kwargs: Any):
    """Swapped forward for the delegating ``AttentionBridge`` around HF ``BertAttention``:
    self-attention, then BERT's output block ``LayerNorm(dense(z) + input)``."""
    hf_attn = self.original_component
    if not (hasattr(hf_attn, "self") and hasattr(hf_attn, "output")
            and hasattr(hf_attn.output, "LayerNorm")):
        raise refuse(spec, WHO, f"the HF module {type(hf_attn).__name__}",
                     "only BERT-style attention (self + output.LayerNorm) is reproduced")
    hidden = self.hook_in(_hidden(args, kwargs))
    b, n, _ = hidden.shape
    d = spec.head_dim
    check_mask(kwargs.get("attention_mask"), spec, n, self.name)
    q = self.q(hidden).view(b, n, -1, d).transpose(1, 2)
    k = self.k(hidden).view(b, n, -1, d).transpose(1, 2)
    v = self.v(hidden).view(b, n, -1, d).transpose(1, 2)
    check_scale(impl, spec, self.name)
    out, pattern = attend(self, impl, spec, q, k, v, ignore)
    out = self.o(out.transpose(1, 2).reshape(b, n, -1))
    out = hf_attn.output.LayerNorm(hf_attn.output.dropout(out) + hidden)
    return self.hook_out(out), pattern


def forward_native(self, impl, spec, ignore, *args: Any, **kwargs: Any):
    """Swapped forward for the native toy attention (NativeAttention inside AttentionBridge)."""
    hidden = _hidden(args, kwargs)
    att = self.original_component
    hidden = self.hook_in(hidden)
    b, n, _ = hidden.shape
    check_mask(kwargs.get("attention_mask"), spec, n, self.name)
    q = att.q(hidden).view(b, n, att.n_heads, att.d_head).transpose(1, 2)
    k = att.k(hidden).view(b, n, att.n_kv_heads, att.d_head).transpose(1, 2)
    v = att.v(hidden).view(b, n, att.n_kv_heads, att.d_head).transpose(1, 2)
    if att.rotary is not None:
        q, k = att.rotary.apply_rope(q, k, position_ids=kwargs.get("position_ids"))
    check_scale(impl, spec, self.name)
    out, pattern = attend(self, impl, spec, q, k, v, ignore)
    out = att.o(out.transpose(1, 2).reshape(b, n, -1))
    return self.hook_out(out), pattern


FORWARDS = {ROTARY: forward_rotary, JOINT_QKV: forward_joint_qkv,
            JOINT_QKV_ROTARY: forward_joint_qkv, DELEGATING: forward_delegating,
            NATIVE: forward_native}
