"""Model families: the one place that knows how each block layout computes attention.

Every consumer that recomputes part of a layer (the swap, the streaming cache, blockwise
probes, circuit tools, head weights) asks this package; none of them branches on a family
name, an HF model type or a bridge class.

- :func:`describe_layers` / :class:`LayerAttention`: what each attention layer computes
  (scale, window, soft-capping, q/k norm, rotary, GQA), read once per model.
- :func:`refuse`: the error a consumer raises for a layer feature it cannot reproduce.
"""
from interp.families.layers import LayerAttention, describe_hf_layers, describe_layers, refuse

__all__ = ["LayerAttention", "describe_hf_layers", "describe_layers", "refuse"]
