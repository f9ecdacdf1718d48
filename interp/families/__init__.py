"""Model families: the one place that knows how each block layout computes attention.

Every consumer that recomputes part of a layer (the swap, the streaming decoder, blockwise
probes, circuit tools, head weights, loading) asks the model's adapter here; none of them
branches on a family name, an HF model type or a bridge class.

Layout (one adapter file per block layout):

- :mod:`~interp.families.base` -- :class:`Family`, the questions every adapter answers;
- :mod:`~interp.families.rotary` -- rotary decoders (Llama, Mistral, Qwen2/3, Gemma 2/3)
  and the Llama-style HF layer the streaming decoder steps;
- :mod:`~interp.families.gpt2` -- joint-qkv GPT-2;
- :mod:`~interp.families.neox` -- joint-qkv rotary GPT-NeoX / Phi-3 (parallel residual);
- :mod:`~interp.families.bert` -- delegating post-LN encoders (BERT);
- :mod:`~interp.families.toy` -- interp's native toy attention;
- :mod:`~interp.families.layers` -- :class:`LayerAttention` (what one layer computes) and
  :func:`refuse`;
- :mod:`~interp.families.attend` -- attending under a layer's window and soft-capping, and
  the checks every swapped forward runs;
- :mod:`~interp.families.registry` -- :func:`family_of`, :func:`describe_layers`;
- :mod:`~interp.families.tl` -- every private TransformerLens name interp uses.

Adding a family: one adapter file here (a :class:`Family` subclass decorated with
``@register``; every module of this package is imported when adapters are first looked up)
and one tiny config in ``tests/families/tiny.py``.
"""
from interp.families.base import Family
from interp.families.layers import LayerAttention, refuse
from interp.families.registry import (describe_layers, family_name, family_of,
                                      streaming_families, streaming_parts)

__all__ = ["Family", "LayerAttention", "describe_layers", "family_name", "family_of",
           "refuse", "streaming_families", "streaming_parts"]
