"""Per-head weight matrices of a hooked model, in TransformerLens' row-vector convention.

``head_weights(model)`` returns :class:`HeadWeights` with

    W_Q, W_K, W_V  [n_layers, n_heads, d_model, d_head]   (q = x @ W_Q; GQA K/V expanded so
                                                           query head h uses kv head h // group)
    W_O            [n_layers, n_heads, d_head, d_model]
    W_E            [d_vocab, d_model]
    W_U            [d_model, d_vocab]

With ``fold_norms=True`` (default) the elementwise scale of each block's first norm (``ln1``:
LayerNorm or RMSNorm weight) is folded into the rows of W_Q/W_K/W_V, and the final norm's
scale into W_U, so circuits read through the norms' learned scales (the normalisation itself
and biases are left out, as in Elhage et al. 2021). Where a norm follows attention before the
residual (Gemma 2/3 ``post_attention_layernorm``, TransformerLens ``ln1_post``) its scale is
folded into the columns of W_O. Gemma's RMSNorms scale by ``1 + weight``
(``cfg.rmsnorm_uses_offset``); that offset is applied. RoPE and q/k norms are not part of
W_Q/W_K.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class HeadWeights:
    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    W_E: torch.Tensor
    W_U: torch.Tensor

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]


def _norm_weight(norm_bridge, offset: bool = False) -> torch.Tensor | None:
    """The elementwise scale a norm applies (``1 + weight`` for Gemma-style RMSNorms)."""
    comp = getattr(norm_bridge, "original_component", None)
    w = getattr(comp, "weight", None)
    if not isinstance(w, torch.Tensor):
        return None
    return w.detach().float() + 1.0 if offset else w.detach().float()


@torch.no_grad()
def head_weights(model, fold_norms: bool = True) -> HeadWeights:
    """The model's per-head matrices as float32 tensors on the model's device (see module
    docstring); callers move small results to the CPU at the edge."""
    W_Q = model.W_Q.detach().float()
    W_K = model.W_K.detach().float()
    W_V = model.W_V.detach().float()
    W_O = model.W_O.detach().float()
    n_heads = W_Q.shape[1]
    group = n_heads // W_K.shape[1]
    if group > 1:
        W_K = W_K.repeat_interleave(group, dim=1)
        W_V = W_V.repeat_interleave(group, dim=1)
    W_E = model.W_E.detach().float()
    W_U = model.W_U.detach().float()
    if fold_norms:
        offset = bool(getattr(model.cfg, "rmsnorm_uses_offset", False))
        for layer, block in enumerate(model.blocks):
            w = _norm_weight(getattr(block, "ln1", None), offset)
            if w is not None:
                w = w.to(W_Q.device)[None, :, None]
                W_Q[layer] = W_Q[layer] * w
                W_K[layer] = W_K[layer] * w
                W_V[layer] = W_V[layer] * w
            post = _norm_weight(block._modules.get("ln1_post"), offset)
            if post is not None:                        # Gemma: norm(attn_out) -> residual
                W_O[layer] = W_O[layer] * post.to(W_O.device)[None, None, :]
        w = _norm_weight(getattr(model, "ln_final", None), offset)
        if w is not None:
            W_U = W_U * w.to(W_U.device)[:, None]
    return HeadWeights(W_Q=W_Q, W_K=W_K, W_V=W_V, W_O=W_O, W_E=W_E, W_U=W_U)
