"""GPT-2: one fused ``c_attn`` projection (joint q/k/v), learned positions, LayerNorm.

Architecture
------------
Bridge: ``JointQKVAttentionBridge``. The swapped forward reuses the bridge's own steps
(:mod:`interp.families.tl`)::

    hook_in -> q/k/v (split from c_attn) -> [b, heads, n, d] -> attend -> hook_z -> o

Scores: ``q . k / sqrt(d)`` (``scale_attn_weights``), further divided by ``layer + 1`` with
``scale_attn_by_inverse_layer_idx``; unscaled scores (``scale_attn_weights=False``) are
refused at load, since the bridge itself computes them differently from HF. The output
projection is a ``Conv1D`` (weight ``[H*dh, d_model]``, the transpose of a Linear's).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from interp.errors import Refused
from interp.families.attend import attend, check_mask, check_no_cache, check_scale
from interp.families.base import Family
from interp.families.layers import LayerAttention
from interp.families.registry import register
from interp.families.tl import joint_heads, joint_input, joint_output, raw

UNSCALED = "unscaled scores (scale_attn_weights=False)"


@register
class JointQKV(Family):
    """GPT-2 style joint-qkv attention without rotary embeddings."""

    name = "joint-qkv (GPT-2)"
    bridges = ("JointQKVAttentionBridge",)
    patchable = ("z", "q", "k", "v", "pattern")
    residual_only_loop = True

    def describe(self, layer: int, cfg, causal: bool) -> LayerAttention:
        spec = super().describe(layer, cfg, causal)
        if str(getattr(cfg, "model_type", "")) != "gpt2":
            return spec
        scaled = getattr(cfg, "scale_attn_weights", True)
        scaling = spec.head_dim ** -0.5 if scaled else 1.0
        if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
            scaling /= float(layer + 1)
        extra = () if scaled else (UNSCALED,)
        return dataclasses.replace(spec, scaling=scaling,
                                   unsupported=spec.unsupported + extra)

    def swapped_forward(self, attn, impl, spec: LayerAttention, ignore: tuple[str, ...],
                        *args: Any, **kwargs: Any):
        hidden = joint_input(attn, *args, **kwargs)
        q, k, v, b, n, d = joint_heads(attn, attn.q(hidden), attn.k(hidden), attn.v(hidden),
                                       spec.n_heads, spec.n_kv_heads)
        check_no_cache(kwargs, n, attn.name)
        check_mask(kwargs.get("attention_mask"), spec, n, attn.name)
        q, k = self.rotate(attn, spec, q, k, kwargs)
        check_scale(impl, spec, attn.name)
        out, pattern = attend(attn, impl, spec, q, k, v, ignore)
        return joint_output(attn, out, b, n, spec.n_heads, d, pattern)

    def rotate(self, attn, spec: LayerAttention, q, k, kwargs: dict):
        """q, k after the layer's position embedding (none for GPT-2: learned absolute
        positions are added before the first block)."""
        return q, k

    def w_out(self, layer: int) -> torch.Tensor:
        lin = raw(self._block(layer).attn.o)
        w = lin.weight
        if type(lin).__name__ == "Conv1D":                     # [H*dh, d_model]
            w = w.T
        H, dh = self.model.cfg.n_heads, self.model.cfg.d_head
        return w.T.reshape(H, dh, -1)

    def check_bridge(self) -> None:
        for spec in self.layers():
            if UNSCALED in spec.unsupported:
                raise Refused(
                    f"{spec.describe()}: {UNSCALED} is not reproduced by the TransformerLens "
                    f"bridge; its hooks and logits would differ from the model's")
