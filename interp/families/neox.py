"""GPT-NeoX / Pythia and Phi-3: a fused q/k/v projection with rotary embeddings (partial on
NeoX), and on NeoX a parallel residual.

Architecture
------------
Bridge: ``JointQKVPositionEmbeddingsAttentionBridge``. The swapped forward is GPT-2's
(:class:`~interp.families.gpt2.JointQKV`) with the bridge's RoPE between the heads and
attention::

    hook_in -> q/k/v -> [b, heads, n, d] -> RoPE of the leading rotary dims -> attend -> o

Block wiring: with ``use_parallel_residual`` (GPT-NeoX) attention and MLP read the same
residual stream (TransformerLens: ``cfg.parallel_attn_mlp``), so in the circuit graph a
layer's heads do not feed its own MLP. Phi-3 is sequential pre-norm.

Streaming: Phi-3's HF layers are Llama-style with a fused ``qkv_proj``, run by the rotary
decoder's :class:`~interp.families.rotary.HFDecoderLayer`; GPT-NeoX (parallel residual,
``gpt_neox.layers[i].attention``) has no streaming step and is refused.
"""
from __future__ import annotations

from interp.families.gpt2 import JointQKV
from interp.families.layers import LayerAttention
from interp.families.registry import register
from interp.families.rotary import hf_decoder_parts
from interp.families.tl import joint_rope, position_embeddings

_STREAMING = {"phi3": "pre-norm"}


@register
class JointQKVRotary(JointQKV):
    """Joint-qkv attention with rotary embeddings; parallel blocks where the config says."""

    name = "joint-qkv rotary (GPT-NeoX, Phi-3)"
    bridges = ("JointQKVPositionEmbeddingsAttentionBridge",)
    streaming_types = _STREAMING

    def rotate(self, attn, spec: LayerAttention, q, k, kwargs: dict):
        pos = kwargs.get("position_embeddings")
        if not isinstance(pos, tuple):
            raise ValueError(f"{attn.name}: no position_embeddings reached the attention layer")
        cos, sin = position_embeddings(attn, pos)
        return joint_rope(attn, q, k, cos, sin)

    def parallel_blocks(self) -> bool:
        return bool(getattr(self.model.cfg, "parallel_attn_mlp", False))

    @classmethod
    def streaming_layers(cls, hf_model, who: str):
        return hf_decoder_parts(hf_model, who, _STREAMING)
