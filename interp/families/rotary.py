"""Rotary decoders (Llama, Mistral, Qwen2/3, Gemma 2/3): separate q/k/v projections and RoPE,
with their variants -- q/k norm, sandwich (post-attention) norms, soft-capping, windows.

Architecture
------------
Bridge: ``PositionEmbeddingsAttentionBridge``. The swapped forward follows the bridge's own
order and hook points::

    hook_in -> q/k/v LinearBridges -> [b, heads, n, d] -> q/k RMSNorm (hook_q_normed,
    hook_k_normed) -> RoPE, full or partial (hook_rot_q, hook_rot_k) -> attend -> o

Head write: ``o`` (with its bias), then, on Gemma 2/3, the post-attention norm the bridge
calls ``ln1_post`` (HF ``post_attention_layernorm``): a layer's write is then
``norm(sum_h z_h W_O[h] + b)``, not a sum of per-head writes, so the hand projection of path
patching is refused there (``projection_reason``) and the circuit graph delivers a layer's
heads through that norm. Weight folds: ``ln1``, ``q_norm``/``k_norm``, ``ln1_post``.

Streaming (plain HF model, :class:`HFDecoderLayer`): ``model.layers[i]`` with
``input_layernorm``, ``self_attn.{q,k,v}_proj`` (or Phi-3's fused ``qkv_proj``),
``q_norm``/``k_norm``, ``o_proj``, and the block wiring::

    pre-norm (Llama, Mistral, Qwen2/3, Phi-3):
        x = x + a;  x = x + mlp(post_attention_layernorm(x))
    sandwich norms (Gemma 2/3):
        x = x + post_attention_layernorm(a)
        x = x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from interp.families.attend import (WHO, attend, check_mask, check_no_cache, check_scale,
                                    hidden_states)
from interp.families.base import Family
from interp.errors import Refused
from interp.families.layers import LayerAttention, describe_layer, refuse
from interp.families.registry import register
from interp.families.tl import position_embeddings, qk_norm_layout, raw

#: plain-HF model types whose Llama-style layers :class:`HFDecoderLayer` runs, and their wiring
_STREAMING = {"llama": "pre-norm", "mistral": "pre-norm", "qwen2": "pre-norm",
              "qwen3": "pre-norm", "gemma2": "sandwich", "gemma3_text": "sandwich"}
#: model types whose ``sliding_window`` covers full-attention layers too (streaming check)
_WINDOW_EVERY_LAYER = ("mistral", "phi3")


def _rope(q, k, cos, sin, rotate):
    """Rotate the leading ``cos.shape[-1]`` dims of q/k (all of them, or a partial rotary)."""
    r = cos.shape[-1]
    if r == q.shape[-1]:
        return rotate(q, k, cos, sin)
    q_rot, k_rot = rotate(q[..., :r], k[..., :r], cos, sin)
    return torch.cat([q_rot, q[..., r:]], dim=-1), torch.cat([k_rot, k[..., r:]], dim=-1)


@register
class RotaryDecoder(Family):
    """Llama-style rotary decoders and their variants (module docstring)."""

    name = "rotary decoder"
    bridges = ("PositionEmbeddingsAttentionBridge",)
    patchable = ("z", "q", "k", "v", "pattern")
    residual_only_loop = True
    streaming_types = _STREAMING

    def swapped_forward(self, attn, impl, spec: LayerAttention, ignore: tuple[str, ...],
                        *args: Any, **kwargs: Any):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        hidden = attn.hook_in(hidden_states(args, kwargs))
        b, n, _ = hidden.shape
        d = spec.head_dim
        check_no_cache(kwargs, n, attn.name)
        check_mask(kwargs.get("attention_mask"), spec, n, attn.name)
        q = attn.q(hidden).view(b, n, -1, d).transpose(1, 2)           # [b, h, n, d]
        k = attn.k(hidden).view(b, n, -1, d).transpose(1, 2)           # [b, kv_h, n, d]
        v = attn.v(hidden).view(b, n, -1, d).transpose(1, 2)
        if spec.qk_norm:
            phase, per_head = qk_norm_layout(attn)
            if phase != "post_reshape":
                raise refuse(spec, WHO, f"q/k norm in phase {phase}", "not reproduced")
            if per_head:
                q = attn.hook_q_normed(attn.q_norm(q.transpose(1, 2)).transpose(1, 2))
                k = attn.hook_k_normed(attn.k_norm(k.transpose(1, 2)).transpose(1, 2))
            else:
                q = attn.hook_q_normed(attn.q_norm(q))
                k = attn.hook_k_normed(attn.k_norm(k))
        pos = kwargs.get("position_embeddings")
        if pos is None:
            raise ValueError(f"{attn.name}: no position_embeddings reached the attention layer")
        cos, sin = position_embeddings(attn, pos)
        if cos.shape[-1] * 2 == d and spec.rotary_dim == d:
            raise refuse(spec, WHO, "half-width rotary tables (gpt-oss)", "not reproduced")
        q, k = _rope(q, k, cos, sin, apply_rotary_pos_emb)
        q = attn.hook_rot_q(q)
        k = attn.hook_rot_k(k)
        check_scale(impl, spec, attn.name)
        out, pattern = attend(attn, impl, spec, q, k, v, ignore)
        out = out.transpose(1, 2).reshape(b, n, -1)
        return attn.hook_out(attn.o(out)), pattern

    def post_attention_norm(self, layer: int):
        block = self._block(layer)
        return raw(block.ln1_post) if "ln1_post" in block._modules else None

    def projection_reason(self, spec: LayerAttention) -> str | None:
        why = self.encoder_reason(spec)
        if why is None and self.post_attention_norm(spec.layer) is not None:
            why = (f"{spec.describe()}: the attention output is normalised before the residual "
                   f"(post_attention_layernorm), so a head's write is not z @ W_O")
        return why or super().projection_reason(spec)

    def norm_modules(self, layer: int) -> dict[str, Any]:
        block = self._block(layer)
        attn = block.attn._modules
        return {"ln1": block._modules.get("ln1"), "query_norm": attn.get("q_norm"),
                "key_norm": attn.get("k_norm"), "post_attention": block._modules.get("ln1_post")}

    @classmethod
    def streaming_layers(cls, hf_model, who: str):
        return hf_decoder_parts(hf_model, who, _STREAMING)


# ---------------------------------------------------------------------------- streaming
@dataclass(frozen=True)
class StreamingParts:
    """What :class:`interp.streaming.StreamingLM` runs of a plain HF decoder, besides the
    cache, RoPE and attention it does itself.

    Attributes:
        structure: the block wiring (``"pre-norm"`` or ``"sandwich"``).
        layer: ``layer(i, spec) -> HFDecoderLayer``: layer ``i``'s steps, built after the
            caller's own checks of ``spec`` (refused by name when the layout differs).
        embed: ``ids [b, n] -> x [b, n, D]`` (Gemma's sqrt(D) scaling lives inside it).
        final: ``x [b, n, D] -> logits [b, n, vocab]`` (final norm, LM head and the final
            logit soft-capping where the config has one).
        rotary: the model's rotary module (``rotary(x, pos[, layer_type]) -> (cos, sin)``),
            or None.
    """

    structure: str
    layer: Callable[[int, LayerAttention], "HFDecoderLayer"]
    embed: Any
    final: Any
    rotary: Any


class HFDecoderLayer:
    """One Llama-style HF decoder layer as the streaming decoder steps it: :meth:`qkv` (input
    norm, projections, q/k norm) and :meth:`write` (output projection, residual wiring, MLP)."""

    def __init__(self, layer, spec: LayerAttention, structure: str, who: str,
                 windowed_family: bool) -> None:
        attn = layer.self_attn
        self.layer, self.attn, self.structure = layer, attn, structure
        self.fused = hasattr(attn, "qkv_proj")
        if not self.fused and not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj")):
            raise refuse(spec, who, "an unknown q/k/v projection layout",
                         "expected q_proj/k_proj/v_proj or a fused qkv_proj")
        if spec.qk_norm and not (hasattr(attn, "q_norm") and hasattr(attn, "k_norm")):
            raise refuse(spec, who, "q/k norm", "the layer has no q_norm/k_norm modules")
        if structure == "sandwich" and not all(hasattr(layer, n) for n in (
                "pre_feedforward_layernorm", "post_feedforward_layernorm")):
            raise refuse(spec, who, "Gemma-style sandwich norms",
                         "the layer lacks pre/post feed-forward norms")
        if spec.sliding_window is not None and spec.layer_type != "sliding_attention" \
                and not windowed_family:
            raise refuse(spec, who, "a sliding window on a full-attention layer",
                         "the family is not known to window every layer")
        self.qk_norm = spec.qk_norm
        self.shape = (spec.n_heads, spec.n_kv_heads, spec.head_dim)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q ``[b, H, n, d]``, k/v ``[b, KV, n, d]`` of the layer input ``x [b, n, D]`` (after
        the input norm and the q/k norm, before RoPE)."""
        b, n, _ = x.shape
        H, KV, d = self.shape
        h = self.layer.input_layernorm(x)
        attn = self.attn
        if self.fused:
            q, k, v = attn.qkv_proj(h).split([H * d, KV * d, KV * d], dim=-1)
        else:
            q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
        q, k, v = q.view(b, n, H, d), k.view(b, n, KV, d), v.view(b, n, KV, d)
        if self.qk_norm:                            # per-head RMSNorm over d, before RoPE
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def write(self, x: Tensor, o: Tensor) -> Tensor:
        """The layer's output from its input ``x [b, n, D]`` and the attention result
        ``o [b, n, H*d]``: output projection, residual adds and the MLP with its norms."""
        layer = self.layer
        a = self.attn.o_proj(o)
        if self.structure == "sandwich":
            x = x + layer.post_attention_layernorm(a)
            return x + layer.post_feedforward_layernorm(
                layer.mlp(layer.pre_feedforward_layernorm(x)))
        x = x + a
        return x + layer.mlp(layer.post_attention_layernorm(x))


def describe_hf_layers(hf_model, causal: bool = True) -> list[LayerAttention]:
    """:class:`LayerAttention` per layer of a plain HF decoder whose layers are
    ``model.layers[i].self_attn`` (Llama-style; used by :mod:`interp.streaming`).

    Raises:
        Refused: another module layout (GPT-2, GPT-NeoX, BERT, ...).
    """
    inner = getattr(hf_model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(layers[0], "self_attn"):
        raise Refused(
            f"{type(hf_model).__name__}: expected a Llama-style layout "
            f"(model.layers[i].self_attn); this model is laid out differently")
    cfg = getattr(hf_model.config, "text_config", None) or hf_model.config
    rotary = hasattr(inner, "rotary_emb")
    return [describe_layer(cfg, layer.self_attn, i, causal=causal, bridge="hf", rotary=rotary)
            for i, layer in enumerate(layers)]


def hf_decoder_parts(hf_model, who: str, wiring: dict[str, str]) -> StreamingParts:
    """:class:`StreamingParts` of a Llama-style HF decoder whose model type has its wiring
    in ``wiring``."""
    from interp.families.registry import hf_family_name

    family = hf_family_name(hf_model)
    inner = hf_model.model
    structure = wiring[family]

    def layer(i: int, spec: LayerAttention) -> HFDecoderLayer:
        return HFDecoderLayer(inner.layers[i], spec, structure, who,
                              family in _WINDOW_EVERY_LAYER)

    cfg = getattr(hf_model.config, "text_config", None) or hf_model.config
    cap = getattr(cfg, "final_logit_softcapping", None)

    def final(x: Tensor) -> Tensor:
        logits = hf_model.lm_head(inner.norm(x))
        return logits if cap is None else torch.tanh(logits / cap) * cap

    return StreamingParts(structure=structure, layer=layer, embed=inner.embed_tokens,
                          final=final, rotary=getattr(inner, "rotary_emb", None))
