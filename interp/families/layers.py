"""What each attention layer of a loaded model does, read once from the HF config and modules.

Architecture
------------
Every consumer that replaces or recomputes a layer's attention by hand (the swap, the
streaming cache, blockwise probes, path patching) must reproduce *everything* the layer does,
or refuse. :func:`describe_layer` reads the facts from the HF config and the HF attention
module into one :class:`LayerAttention`; each family adapter (:mod:`interp.families`) calls
it for its layers and adds what only it knows (GPT-2's scale rule, the toy's native
attention), and :func:`interp.families.describe_layers` caches the list on the model.
Consumers apply what they can reproduce and refuse the rest by name with :func:`refuse`
(:class:`~interp.errors.Refused`, a ``NotImplementedError`` naming the layer, the feature and
why).

What is described (HF names in brackets):

- geometry: query heads, kv heads (GQA), head size, which bridge class wraps the layer;
- scores: the scale (``scaling``; Gemma's ``query_pre_attn_scalar``, GPT-2's inverse layer
  index), tanh soft-capping (``attn_logit_softcapping``, Gemma 2);
- q/k: per-head RMSNorm of q and k before RoPE (``q_norm``/``k_norm``: Qwen3, Gemma 3);
  rotary: how many leading dims of each head rotate (``partial_rotary_factor`` /
  ``rotary_pct``: GPT-NeoX, Phi) and theta per layer type;
- mask: causal or bidirectional, the layer's own sliding window (``layer_types`` +
  ``sliding_window``: Gemma 2/3, Qwen2/3 with ``use_sliding_window``; the whole model for
  Mistral / Phi-3 when ``sliding_window`` is set), with HF's meaning: key ``j`` is visible
  from query ``i`` when ``i - j < window``;
- ``unsupported``: features present in the layer that no interp consumer reproduces (e.g.
  attention sinks, gated queries, clipped qkv, bidirectional sliding windows). A consumer
  given such a layer refuses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from interp.errors import Refused


@dataclass(frozen=True)
class LayerAttention:
    """What one attention layer computes.

    Attributes:
        layer: layer index.
        family: HF ``model_type`` (``"llama"``, ``"gemma2"``, ...; ``"toy"`` for toy models).
        bridge: the bridge class wrapping it (one of the module constants above, or another
            class name, which no consumer supports).
        layer_type: ``"full_attention"``, ``"sliding_attention"`` or ``"bidirectional"``.
        n_heads, n_kv_heads, head_dim: geometry (``n_heads % n_kv_heads == 0``).
        scaling: scores are ``q . k * scaling``.
        causal: decoder (True) or encoder (False).
        sliding_window: key ``j`` visible from query ``i`` only when ``i - j < window``;
            None for full attention.
        softcap: scores become ``softcap * tanh(scores / softcap)`` before the mask; None if
            not capped.
        qk_norm: q and k pass a per-head RMSNorm (the layer's ``q_norm``/``k_norm``) before
            RoPE.
        rotary_dim: leading dims of each head that RoPE rotates (``head_dim`` = full, smaller
            = partial); None for no rotary embedding.
        rope_theta: RoPE base for this layer (None when unknown or no rotary).
        unsupported: features of this layer that no interp consumer reproduces.
    """

    layer: int
    family: str
    bridge: str
    layer_type: str
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float
    causal: bool
    sliding_window: int | None = None
    softcap: float | None = None
    qk_norm: bool = False
    rotary_dim: int | None = None
    rope_theta: float | None = None
    unsupported: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """A short human description, e.g. ``"gemma2 layer 0 (sliding_attention, window 4096,
        softcap 50)"``."""
        bits = [self.layer_type]
        if self.sliding_window is not None:
            bits.append(f"window {self.sliding_window}")
        if self.softcap is not None:
            bits.append(f"softcap {self.softcap:g}")
        if self.qk_norm:
            bits.append("q/k norm")
        if self.rotary_dim is not None and self.rotary_dim < self.head_dim:
            bits.append(f"partial rotary {self.rotary_dim}/{self.head_dim}")
        return f"{self.family} layer {self.layer} ({', '.join(bits)})"


def refuse(spec: LayerAttention, who: str, feature: str, why: str) -> Refused:
    """The error a consumer raises for a layer feature it cannot reproduce exactly
    (:class:`~interp.errors.Refused`, a ``NotImplementedError``)."""
    return Refused(
        f"{who}: {spec.describe()} uses {feature}, which {who} cannot reproduce exactly: {why}. "
        f"Refusing rather than computing something different from the model.")


def _first(obj, *names, default=None):
    for name in names:
        val = getattr(obj, name, None)
        if val is not None:
            return val
    return default


def _rope_theta(cfg, layer_type: str) -> float | None:
    params = getattr(cfg, "rope_parameters", None)
    if isinstance(params, dict):
        if layer_type in params and isinstance(params[layer_type], dict):
            params = params[layer_type]
        theta = params.get("rope_theta")
        if theta is not None:
            return float(theta)
    theta = _first(cfg, "rope_theta", "rotary_emb_base")
    return None if theta is None else float(theta)


def _rotary_fraction(cfg) -> float:
    params = getattr(cfg, "rope_parameters", None)
    if isinstance(params, dict) and params.get("partial_rotary_factor") is not None:
        return float(params["partial_rotary_factor"])
    return float(_first(cfg, "partial_rotary_factor", "rotary_pct", default=1.0))


def _unsupported(hf_attn, cfg, bridge_cfg) -> list[str]:
    """Features of a HF attention layer / config that interp's consumers do not reproduce."""
    out = []
    checks = [
        (getattr(hf_attn, "sinks", None) is not None, "learned attention sinks (gpt-oss)"),
        (getattr(hf_attn, "key_multiplier", None) is not None, "a key multiplier (Falcon-H1)"),
        (getattr(cfg, "clip_qkv", None) is not None, "clipped q/k/v (clip_qkv)"),
        (bool(getattr(bridge_cfg, "gated_q_proj", False)), "gated queries (Qwen3.5 / Next)"),
        (bool(getattr(bridge_cfg, "qk_norm_after_rope", False)), "q/k norm after RoPE"),
        (bool(getattr(bridge_cfg, "rotary_adjacent_pairs", False))
         or bool(getattr(bridge_cfg, "rotary_interleaved_cos_sin", False)),
         "RoPE on adjacent pairs"),
        (bool(getattr(bridge_cfg, "use_split_qkv_input", False))
         or bool(getattr(bridge_cfg, "use_attn_in", False)),
         "per-head split q/k/v inputs (use_split_qkv_input / use_attn_in)"),
        (bool(getattr(bridge_cfg, "use_attn_result", False)), "per-head results (use_attn_result)"),
        (bool(getattr(cfg, "use_bidirectional_attention", False)), "bidirectional attention "
         "in a decoder (use_bidirectional_attention)"),
        (isinstance(getattr(cfg, "rope_parameters", None), dict)
         and cfg.rope_parameters.get("llama_4_scaling_beta") is not None,
         "llama-4 query scaling"),
        (getattr(cfg, "alibi", False) is True, "ALiBi position biases"),
    ]
    out.extend(name for hit, name in checks if hit)
    qn = getattr(getattr(hf_attn, "q_norm", None), "weight", None)
    head_dim = getattr(hf_attn, "head_dim", None)
    if qn is not None and qn.ndim == 1 and head_dim and qn.numel() != head_dim:
        out.append("q/k norm over all heads at once (pre-reshape, OLMo-2)")
    return out


#: HF model types whose ``sliding_window`` applies to every layer (no ``layer_types``)
WHOLE_MODEL_WINDOW = ("mistral", "phi3", "mixtral", "starcoder2")


def _sliding_window(model_type: str, cfg, hf_attn, layer_type: str) -> int | None:
    if hasattr(hf_attn, "sliding_window"):          # Gemma 2/3, Qwen2/3: per layer
        return hf_attn.sliding_window
    if layer_type == "sliding_attention":
        return getattr(cfg, "sliding_window", None)
    if model_type in WHOLE_MODEL_WINDOW:
        return getattr(cfg, "sliding_window", None)
    return None


def describe_layer(cfg, hf_attn, layer: int, *, causal: bool, bridge: str,
                   rotary: bool, bridge_cfg=None) -> LayerAttention:
    """:class:`LayerAttention` of one HF attention module ``hf_attn`` (layer ``layer``) of a
    model with HF config ``cfg``; ``rotary``: whether the layer applies RoPE."""
    model_type = str(getattr(cfg, "model_type", "?"))
    n_heads = int(_first(cfg, "num_attention_heads", "n_head"))
    n_kv = int(_first(cfg, "num_key_value_heads", default=n_heads))
    head_dim = int(_first(hf_attn, "head_dim", "head_size", default=0)
                   or _first(cfg, "head_dim", default=0)
                   or _first(cfg, "hidden_size", "n_embd") // n_heads)
    layer_types = getattr(cfg, "layer_types", None)
    window = _sliding_window(model_type, cfg, hf_attn,
                             layer_types[layer] if layer_types else "")
    layer_type = (layer_types[layer] if layer_types else "bidirectional" if not causal
                  else "sliding_attention" if window is not None else "full_attention")
    scaling = float(_first(hf_attn, "scaling", default=head_dim ** -0.5))
    unsupported = _unsupported(hf_attn, cfg, bridge_cfg)
    softcap = _first(hf_attn, "attn_logit_softcapping")
    return LayerAttention(
        layer=layer, family=model_type, bridge=bridge, layer_type=layer_type,
        n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, scaling=scaling, causal=causal,
        sliding_window=window,
        softcap=None if softcap is None else float(softcap),
        qk_norm=getattr(hf_attn, "q_norm", None) is not None,
        rotary_dim=int(head_dim * _rotary_fraction(cfg)) if rotary else None,
        rope_theta=_rope_theta(cfg, layer_type) if rotary else None,
        unsupported=tuple(unsupported))
