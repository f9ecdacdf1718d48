"""BERT-style encoders (``minilm-l6``): bidirectional, post-LN, attention delegated to HF.

Architecture
------------
Bridge: the delegating ``AttentionBridge`` around HF ``BertAttention`` (``self`` + ``output``).
The swapped forward::

    hook_in -> q/k/v -> attend (bidirectional) -> o -> LayerNorm(dropout(.) + input)

Post-LN: the layer norm *follows* attention and the residual add, so a head's q/k/v do not
read ``ln1(resid_pre)`` and the residual stream is not a sum of head writes. Path patching,
the edge graph and weight-based scores refuse encoders by name
(:meth:`~interp.families.base.Family.encoder_reason`);
node-level tools (activation patching, ablation) work on the model's own forward.
"""
from __future__ import annotations

from typing import Any

from interp.families.attend import WHO, attend, check_mask, check_scale, hidden_states
from interp.families.base import Family
from interp.families.layers import LayerAttention, refuse
from interp.families.registry import register
from interp.families.tl import native_attention_class

#: HF model types loaded as masked-LM encoders (the bridge wraps ``*ForMaskedLM``)
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert")


@register
class Encoder(Family):
    """Post-LN bidirectional encoders whose attention the bridge delegates to HF."""

    name = "delegating encoder (BERT)"
    bridges = ("AttentionBridge",)
    #: hook_pattern fires after HF's attention has used the pattern (an edit is discarded)
    patchable = ("z", "q", "k", "v")
    residual_only_loop = True

    @classmethod
    def matches(cls, model, attn) -> bool:
        native = native_attention_class()
        return super().matches(model, attn) and not isinstance(
            getattr(attn, "original_component", None), native)

    @classmethod
    def is_encoder_config(cls, config) -> bool:
        archs = getattr(config, "architectures", None) or []
        return (getattr(config, "model_type", None) in ENCODER_TYPES
                or any(a.endswith("ForMaskedLM") for a in archs))

    def logits_reason(self) -> str | None:
        return ("a masked-LM encoder: its head transforms the final residual (dense, GELU, "
                "LayerNorm) before the unembedding, and every position sees the whole input, "
                "so there is no next-token logit to attribute")

    def patch_reason(self, component: str) -> str | None:
        if component == "pattern":
            return ("hook_pattern of the delegating encoder (BERT): the AttentionBridge fires "
                    "it after HF's attention has already used the pattern, so an edit is "
                    "discarded")
        return super().patch_reason(component)

    def swapped_forward(self, attn, impl, spec: LayerAttention, ignore: tuple[str, ...],
                        *args: Any, **kwargs: Any):
        hf_attn = attn.original_component
        if not (hasattr(hf_attn, "self") and hasattr(hf_attn, "output")
                and hasattr(hf_attn.output, "LayerNorm")):
            raise refuse(spec, WHO, f"the HF module {type(hf_attn).__name__}",
                         "only BERT-style attention (self + output.LayerNorm) is reproduced")
        hidden = attn.hook_in(hidden_states(args, kwargs))
        b, n, _ = hidden.shape
        d = spec.head_dim
        check_mask(kwargs.get("attention_mask"), spec, n, attn.name)
        q = attn.q(hidden).view(b, n, -1, d).transpose(1, 2)
        k = attn.k(hidden).view(b, n, -1, d).transpose(1, 2)
        v = attn.v(hidden).view(b, n, -1, d).transpose(1, 2)
        check_scale(impl, spec, attn.name)
        out, pattern = attend(attn, impl, spec, q, k, v, ignore)
        out = attn.o(out.transpose(1, 2).reshape(b, n, -1))
        out = hf_attn.output.LayerNorm(hf_attn.output.dropout(out) + hidden)
        return attn.hook_out(out), pattern
