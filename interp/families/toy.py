"""interp's toy models: TransformerLens' native attention (``NativeAttention``) inside the
delegating ``AttentionBridge``, built from a config by :mod:`interp.models.toy`.

Architecture
------------
Attention-only (or with MLP) pre-LN decoders with separate q/k/v/o linears, optional RoPE
(full rotary), no window or soft-capping. The swapped forward::

    hook_in -> q/k/v (the native module's linears) -> RoPE -> attend -> o -> hook_out

Described from the native module itself (it carries no HF config).
"""
from __future__ import annotations

from typing import Any

from interp.families.attend import attend, check_mask, check_scale, hidden_states
from interp.families.base import Family
from interp.families.layers import LayerAttention
from interp.families.registry import register
from interp.families.tl import native_attention_class, raw


@register
class Toy(Family):
    """The native toy attention."""

    name = "native toy"
    bridges = ("NativeAttention",)
    patchable = ("z", "q", "k", "v", "pattern")
    residual_only_loop = True

    @classmethod
    def matches(cls, model, attn) -> bool:
        return isinstance(getattr(attn, "original_component", None), native_attention_class())

    def describe(self, layer: int, cfg, causal: bool) -> LayerAttention:
        att = raw(self.model.blocks[layer].attn)
        return LayerAttention(
            layer=layer, family="toy", bridge=self.bridges[0], layer_type="full_attention",
            n_heads=att.n_heads, n_kv_heads=att.n_kv_heads, head_dim=att.d_head,
            scaling=1.0 / att.scale, causal=bool(att.causal),
            rotary_dim=att.d_head if att.rotary is not None else None)

    def block_passthrough(self, hidden):
        """The native block returns a one-element tuple."""
        return (hidden,)

    def swapped_forward(self, attn, impl, spec: LayerAttention, ignore: tuple[str, ...],
                        *args: Any, **kwargs: Any):
        hidden = hidden_states(args, kwargs)
        att = attn.original_component
        hidden = attn.hook_in(hidden)
        b, n, _ = hidden.shape
        check_mask(kwargs.get("attention_mask"), spec, n, attn.name)
        q = att.q(hidden).view(b, n, att.n_heads, att.d_head).transpose(1, 2)
        k = att.k(hidden).view(b, n, att.n_kv_heads, att.d_head).transpose(1, 2)
        v = att.v(hidden).view(b, n, att.n_kv_heads, att.d_head).transpose(1, 2)
        if att.rotary is not None:
            q, k = att.rotary.apply_rope(q, k, position_ids=kwargs.get("position_ids"))
        check_scale(impl, spec, attn.name)
        out, pattern = attend(attn, impl, spec, q, k, v, ignore)
        out = att.o(out.transpose(1, 2).reshape(b, n, -1))
        return attn.hook_out(out), pattern
