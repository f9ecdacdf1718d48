"""The family adapter: every question a consumer asks about how a block layout computes.

Architecture
------------
A :class:`Family` is bound to one loaded bridge (``family_of(model)``,
:mod:`interp.families.registry`) and answers, per layer:

- **what the layer computes**: :meth:`Family.layers` (one
  :class:`~interp.families.layers.LayerAttention` per layer; ``describe_layers``);
- **the swapped attention forward** (:meth:`Family.swapped_forward`): q/k/v from the layer's
  own modules through the bridge's hook points, then
  :func:`~interp.families.attend.attend` with the implementation under the layer's window and
  soft-capping, then the output projection;
- **a head's write into the residual stream**: :meth:`Family.w_out` (``W_O`` per head),
  :meth:`Family.head_outputs`, :meth:`Family.attn_write` (output projection plus any
  post-attention norm, :meth:`Family.post_attention_norm`);
- **receiver inputs**: :meth:`Family.project` (a head's q/k/v from a residual-stream input
  through the layer's ``ln1`` and projection);
- **block wiring**: :meth:`Family.parallel_blocks` (attention and MLP read the same
  residual), :meth:`Family.encoder_reason` (post-LN encoders: receivers do not read the
  residual stream), :meth:`Family.projection_reason` (why a hand projection of receiver
  inputs is not exact);
- **weight folds** for ``head_weights``: :meth:`Family.norm_modules`,
  :meth:`Family.final_norm`, :meth:`Family.embedding`;
- **patching through hooks**: :meth:`Family.patch_reason` (whether an edit of a head's
  ``hook_q/k/v/z/pattern`` reaches the output), :meth:`Family.skipping_blocks` (a forward
  that starts at a layer from a given residual, skipping the blocks before it);
- **loading**: :meth:`Family.check_bridge` (a layer the bridge itself computes differently
  from HF is refused at load);
- **the streaming decoder step** on a plain HF model (class level, no bridge):
  :meth:`Family.streaming_layers` (see :mod:`interp.streaming.decoder`).

The defaults here are what every layout shares (TransformerLens' common component names:
``blocks[l].ln1``, ``attn.q/k/v/o``, ``ln_final``, ``embed``); a subclass overrides what its
layout does differently and sets :attr:`Family.bridges`, the attention bridge classes it
wraps. A method a layout cannot answer exactly raises :class:`~interp.errors.Refused` naming
the feature. Consumers call these methods; none of them looks at a family name, an HF model
type or a bridge class.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F

from interp.errors import InputError, Refused
from interp.families.layers import LayerAttention, describe_layer, refuse
from interp.families.tl import raw

WHO = "swap_attention"


class Family:
    """Adapter for one block layout, bound to a loaded bridge ``model``.

    Class attributes:
        name: the layout's name (``"rotary decoder"``, ...).
        bridges: TransformerLens attention bridge classes of this layout.
        streaming_types: HF model types whose plain HF model :meth:`streaming_layers` runs,
            mapped to their block wiring (``"pre-norm"`` or ``"sandwich"``).
    """

    name: ClassVar[str] = "unknown layout"
    bridges: ClassVar[tuple[str, ...]] = ()
    streaming_types: ClassVar[dict[str, str]] = {}
    #: attention hook points (``hook_z`` / ``hook_q`` / ``hook_k`` / ``hook_v`` /
    #: ``hook_pattern``, by suffix) whose edits by a hook reach the model's output: the bridge
    #: computes from the hooked value rather than firing the hook on a copy afterwards
    #: (:meth:`patch_reason`; ``tests/circuits/test_patch_positions.py`` checks every claim)
    patchable: ClassVar[tuple[str, ...]] = ("z",)
    #: the model's block loop passes only the residual stream from one block to the next
    #: (positions, masks and rotary tables are made once before the loop), so a forward may
    #: skip the blocks before a layer whose input it supplies (:meth:`skipping_blocks`)
    residual_only_loop: ClassVar[bool] = False

    def __init__(self, model) -> None:
        self.model = model

    # ------------------------------------------------------------------ description
    @classmethod
    def matches(cls, model, attn) -> bool:
        """Whether this adapter handles a bridge whose first attention component is ``attn``."""
        return type(attn).__name__ in cls.bridges

    def describe(self, layer: int, cfg, causal: bool) -> LayerAttention:
        """:class:`LayerAttention` of ``layer`` from the HF config ``cfg`` and the HF module
        the bridge wraps."""
        if cfg is None:
            raise InputError(f"{type(self.model).__name__} carries no HF config (original_model); "
                             f"load it with interp.load_model or interp.wrap")
        attn = self.model.blocks[layer].attn
        rotary = "hook_rot_q" in attn._modules or hasattr(attn, "hook_cos")
        return describe_layer(cfg, raw(attn), layer, causal=causal,
                              bridge=type(attn).__name__, rotary=rotary,
                              bridge_cfg=getattr(self.model, "cfg", None))

    def layers(self) -> list[LayerAttention]:
        """One :class:`LayerAttention` per layer (cached by
        :func:`interp.families.describe_layers`)."""
        from interp.families.registry import describe_layers

        return describe_layers(self.model)

    # ------------------------------------------------------------------ swap
    def check_swappable(self, spec: LayerAttention) -> None:
        """Raise :class:`~interp.errors.Refused` when this adapter has no exact swapped
        forward for layer ``spec``."""
        if spec.bridge not in self.bridges:
            raise refuse(spec, WHO, f"the attention bridge {spec.bridge}",
                         "swap_attention has no exact forward for it")

    def swapped_forward(self, attn, impl, spec: LayerAttention, ignore: tuple[str, ...],
                        *args: Any, **kwargs: Any):
        """The layer's forward with ``impl`` as its attention; returns what the bridge's own
        forward returns. Subclasses implement it; the base refuses."""
        raise refuse(spec, WHO, f"the attention bridge {spec.bridge}",
                     "swap_attention has no exact forward for it")

    # ------------------------------------------------------------------ a head's write
    def _block(self, layer: int):
        return self.model.blocks[layer]

    def post_attention_norm(self, layer: int):
        """The raw module that normalises ``layer``'s attention output before the residual
        add, or None (the default: the attention output is added as it is)."""
        return None

    def w_out(self, layer: int) -> torch.Tensor:
        """``W_O`` of ``layer`` as ``[head, d_head, d_model]`` (head ``h`` writes
        ``z_h @ W_O[h]``)."""
        w = raw(self._block(layer).attn.o).weight                    # [d_model, H*dh]
        H, dh = self.model.cfg.n_heads, self.model.cfg.d_head
        return w.T.reshape(H, dh, -1)

    def head_outputs(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Per-head residual-stream writes ``[head, batch, pos, d_model]`` from
        ``z [b, pos, H, dh]`` (without the shared output bias or any post-attention norm)."""
        return torch.einsum("bphe,hed->hbpd", z, self.w_out(layer).to(z.dtype))

    def attn_write(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """What ``layer``'s attention adds to the residual stream for head outputs
        ``z [..., pos, head, d_head]``: the output projection (with its bias) and the
        post-attention norm where the layer has one (then not linear in ``z``)."""
        out = raw(self._block(layer).attn.o)(z.flatten(-2))
        post = self.post_attention_norm(layer)
        return out if post is None else post(out)

    def output_bias(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """The output projection's bias as written for head outputs shaped like ``z``
        (``o(0)``; zeros without a bias), before any post-attention norm."""
        return raw(self._block(layer).attn.o)(torch.zeros_like(z.flatten(-2)))

    def project(self, layer: int, which: str, resid: torch.Tensor, head: int) -> torch.Tensor:
        """``hook_{which}`` of one head (a query head for q, a KV head for k/v) recomputed
        from a residual-stream input ``resid [..., pos, d_model]`` through the layer's own
        ``ln1`` and projection: ``[..., pos, d_head]`` (before RoPE and q/k norm, as
        ``hook_q``/``hook_k`` are)."""
        block = self._block(layer)
        lin = raw(getattr(block.attn, which))
        dh = self.model.cfg.d_head
        w = lin.weight[head * dh:(head + 1) * dh]
        b = None if lin.bias is None else lin.bias[head * dh:(head + 1) * dh]
        return F.linear(raw(block.ln1)(resid), w, b)

    # ------------------------------------------------------------------ block wiring
    def parallel_blocks(self) -> bool:
        """Whether attention and MLP of a layer read the same residual stream."""
        return False

    def encoder_reason(self, spec: LayerAttention) -> str | None:
        """Why receivers of layer ``spec`` do not read ``ln1(resid_pre)``, or None: a
        bidirectional layer is taken as a post-LN encoder's (BERT), where ``ln1`` follows
        attention."""
        if spec.causal:
            return None
        return f"{spec.describe()}: post-LN encoder (ln1 follows attention)"

    def projection_reason(self, spec: LayerAttention) -> str | None:
        """Why :meth:`project` and per-head writes are not exact for layer ``spec`` (an
        encoder, a post-attention norm, an unsupported feature), or None."""
        why = self.encoder_reason(spec)
        if why is None and spec.unsupported:
            why = f"{spec.describe()}: {spec.unsupported[0]}"
        return why

    def edges_reason(self, spec: LayerAttention) -> str | None:
        """Why the edge-level graph cannot rebuild receiver inputs of layer ``spec``, or
        None (post-attention norms and parallel blocks are handled by the graph)."""
        why = self.encoder_reason(spec)
        if why is None and spec.unsupported:
            why = f"{spec.describe()}: {spec.unsupported[0]}"
        return why

    # ------------------------------------------------------------------ weight folds
    def norm_modules(self, layer: int) -> dict[str, Any]:
        """The norms a head's direct path crosses in ``layer``, by role: ``"ln1"`` (before
        attention), ``"query_norm"`` / ``"key_norm"`` (per head, before RoPE),
        ``"post_attention"`` (on the attention output); a role the layer lacks is None."""
        return {"ln1": self._block(layer)._modules.get("ln1"), "query_norm": None,
                "key_norm": None, "post_attention": None}

    def final_norm(self):
        """The final norm before the unembedding (None when there is none)."""
        return getattr(self.model, "ln_final", None)

    def embedding(self):
        """The raw token-embedding module (its output is what the first block reads)."""
        return raw(self.model.embed)

    # ------------------------------------------------------------------ the unembedding
    def logits_reason(self) -> str | None:
        """Why the residual stream does not become logits through :meth:`final_norm`, the
        unembedding and :meth:`final_softcap` alone (so a logit lens or direct logit
        attribution would not be the model's own logits), or None."""
        return None

    def unembedding(self):
        """The raw unembedding module (``d_model -> vocab``, with its bias if any)."""
        return raw(self.model.unembed)

    def final_softcap(self) -> float | None:
        """The final logit soft-cap ``c`` (logits become ``c * tanh(logits / c)``), or None."""
        cap = getattr(self.model.cfg, "output_logits_soft_cap", None)
        return float(cap) if cap is not None and float(cap) > 0 else None

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        """The model's logits ``[..., vocab]`` for a residual stream ``resid [..., d_model]``
        taken as the last block's output: final norm (its scale from ``resid`` itself),
        unembedding, final soft-cap."""
        norm = self.final_norm()
        x = resid if norm is None else raw(norm)(resid)
        out = self.unembedding()(x)
        cap = self.final_softcap()
        return out if cap is None else torch.tanh(out / cap) * cap

    # ------------------------------------------------------------------ loading
    @classmethod
    def is_encoder_config(cls, config) -> bool:
        """Whether an HF config of this layout is a masked-LM encoder (loaded with
        ``*ForMaskedLM``)."""
        return False

    def check_bridge(self) -> None:
        """Refuse at load a layer that the TransformerLens bridge itself would compute
        differently from HF (hooks and logits would differ from the model's)."""

    # ------------------------------------------------------------------ patching
    def patch_reason(self, component: str) -> str | None:
        """Why an edit returned by a hook on ``blocks.{l}.attn.hook_{component}`` does not
        reach the model's output (so patching it would measure nothing), or None."""
        if component in self.patchable:
            return None
        bridge = type(self.model.blocks[0].attn).__name__
        return (f"hook_{component} of the {self.name} layout ({bridge}): the bridge fires it "
                f"on a value its attention has already used (or interp has not checked that "
                f"an edit there reaches the output), so an edit is discarded")

    def skip_reason(self) -> str | None:
        """Why a forward cannot skip the blocks before a layer (:meth:`skipping_blocks`),
        or None."""
        if self.residual_only_loop:
            return None
        return (f"the {self.name} layout: interp does not know that its block loop passes "
                f"only the residual stream between blocks")

    def block_passthrough(self, hidden: torch.Tensor):
        """What a block returns to the model's block loop when it leaves the residual stream
        ``hidden [batch, pos, d_model]`` unchanged (transformers >= 5 decoder and encoder
        layers return the hidden states themselves)."""
        return hidden

    @contextmanager
    def skipping_blocks(self, layers) -> Iterator[None]:
        """While open, the blocks ``layers`` compute nothing: each returns its input residual
        unchanged (:meth:`block_passthrough`; none of its hook points fire). A forward that
        sets ``blocks.{k}.hook_resid_pre`` of the first block it runs (``k`` = the next layer)
        to the residual a whole forward had there then equals that forward exactly, at the
        cost of the blocks from ``k`` on. Refused (:meth:`skip_reason`) where the block loop
        passes anything else between blocks. Each block's own ``forward`` comes back on exit,
        also when the forward raises."""
        why = self.skip_reason()
        if why is not None:
            raise Refused(f"skipping blocks: {why}")

        def passthrough(*args: Any, **kwargs: Any):
            return self.block_passthrough(args[0] if args else kwargs["hidden_states"])

        done = []
        try:
            for layer in layers:
                block = self.model.blocks[layer]
                if "forward" in block.__dict__:
                    raise InputError(f"block {layer} already has its forward replaced "
                                     f"(blocks are being skipped already)")
                object.__setattr__(block, "forward", passthrough)
                done.append(block)
            yield
        finally:
            for block in done:
                object.__delattr__(block, "forward")

    # ------------------------------------------------------------------ streaming
    @classmethod
    def streaming_layers(cls, hf_model, who: str):
        """What the streaming decoder runs of a plain HF model of this layout besides cache,
        RoPE and attention (:class:`interp.families.rotary.StreamingParts`). The base
        refuses."""
        raise Refused(f"{who}: the {cls.name} layout has no streaming decoder step")
