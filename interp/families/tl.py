"""Every private TransformerLens name interp relies on, in one place.

Architecture
------------
interp's swapped forwards (:mod:`interp.families`) reuse the TransformerLens 4 bridge's own
steps, so hooks fire in the same order with the same layouts as the bridge's own forward.
Some of those steps are private methods or attributes of the bridge classes. They are used
only through the small functions below, and :data:`PRIVATE` lists them, so a TransformerLens
release that renames one fails :func:`missing` (and its test,
``tests/families/test_tl_private.py``) with a message naming what moved, rather than
failing deep inside a forward. ``pyproject.toml`` pins ``transformer-lens`` to the minor
series tested (``>=4.3,<4.4``).

=========================================== =================================================
class (module)                              private names used
=========================================== =================================================
``PositionEmbeddingsAttentionBridge``       ``_apply_position_embedding_hooks`` (method),
(``position_embeddings_attention``)         ``_qk_norm_phase``, ``_qk_norm_per_head``
                                            (attributes set in ``__init__``)
``JointQKVAttentionBridge``                 ``_apply_attention_input_hook``,
(``joint_qkv_attention``)                   ``_reshape_qkv_to_heads``, ``_reshape_attn_output``,
                                            ``_apply_output_projection``, ``_process_output``
``JointQKVPositionEmbeddingsAttentionBridge`` ``_apply_position_embedding_hooks``,
(``joint_qkv_position_embeddings_attention``) ``_apply_rotary_pos_emb``
``GeneralizedComponent`` (``base``)         ``_original_component`` (submodule name; read
                                            through the public ``original_component``
                                            where it is set)
``NativeAttention``                         the module path ``sources.native.model`` (not
                                            exported by ``transformer_lens.model_bridge``)
=========================================== =================================================
"""
from __future__ import annotations

import importlib
from typing import Any

_GC = "transformer_lens.model_bridge.generalized_components"
_NATIVE = "transformer_lens.model_bridge.sources.native.model"

#: (module, class) -> private names interp uses on that class (methods or attributes set on
#: instances; attributes are checked on a constructed bridge by the test)
PRIVATE: dict[tuple[str, str], tuple[str, ...]] = {
    (f"{_GC}.position_embeddings_attention", "PositionEmbeddingsAttentionBridge"):
        ("_apply_position_embedding_hooks",),
    (f"{_GC}.joint_qkv_attention", "JointQKVAttentionBridge"):
        ("_apply_attention_input_hook", "_reshape_qkv_to_heads", "_reshape_attn_output",
         "_apply_output_projection", "_process_output"),
    (f"{_GC}.joint_qkv_position_embeddings_attention",
     "JointQKVPositionEmbeddingsAttentionBridge"):
        ("_apply_position_embedding_hooks", "_apply_rotary_pos_emb"),
    (_NATIVE, "NativeAttention"): (),
}
#: private attributes set on instances (checked on a loaded bridge, not on the class)
INSTANCE_ATTRIBUTES = {"PositionEmbeddingsAttentionBridge": ("_qk_norm_phase",
                                                             "_qk_norm_per_head")}


def missing() -> list[str]:
    """The entries of :data:`PRIVATE` the installed TransformerLens does not have (empty when
    everything interp uses is there), each as ``"module.Class.name"``."""
    out = []
    for (module, cls), names in PRIVATE.items():
        try:
            klass = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            out.append(f"{module}.{cls}")
            continue
        out += [f"{module}.{cls}.{n}" for n in names if not hasattr(klass, n)]
    return out


def native_attention_class() -> type:
    """TransformerLens' ``NativeAttention`` (the attention of interp's toy models)."""
    return importlib.import_module(_NATIVE).NativeAttention


def raw(component) -> Any:
    """The torch module a bridge component wraps (its own hook points do not fire), or the
    module itself when it wraps none."""
    return (getattr(component, "original_component", None)
            or component._modules.get("_original_component") or component)


def has_listeners(hook_point) -> bool:
    """Whether any forward (pre-)hook is registered on ``hook_point``."""
    return bool(hook_point._forward_hooks) or bool(hook_point._forward_pre_hooks)


# ---------------------------------------------------------- PositionEmbeddingsAttentionBridge
def position_embeddings(attn, pos) -> tuple:
    """``(cos, sin)`` after the bridge's ``hook_cos`` / ``hook_sin``."""
    return attn._apply_position_embedding_hooks(pos)


def qk_norm_layout(attn) -> tuple[str | None, bool]:
    """``(phase, per_head)`` of a rotary bridge's q/k norm: phase ``"post_reshape"`` (norm
    over each head's ``d``) or ``"pre_reshape"``; ``per_head``: the norm module takes
    ``[b, n, h, d]`` (else ``[b, h, n, d]``)."""
    return attn._qk_norm_phase, bool(attn._qk_norm_per_head)


# ---------------------------------------------------------------- JointQKVAttentionBridge(s)
def joint_input(attn, *args, **kwargs):
    """The hidden states entering a joint-qkv bridge, after its ``hook_in``."""
    return attn._apply_attention_input_hook(*args, **kwargs)


def joint_heads(attn, q, k, v, n_heads: int, n_kv_heads: int):
    """``(q [b, h, n, d], k, v [b, kv, n, d], b, n, d)`` from the projections' outputs,
    through the bridge's ``hook_q/k/v``."""
    return attn._reshape_qkv_to_heads(q, k, v, n_heads, n_kv_heads)


def joint_rope(attn, q, k, cos, sin):
    """RoPE (full or partial) as the joint-qkv rotary bridge applies it."""
    return attn._apply_rotary_pos_emb(q, k, cos, sin)


def joint_output(attn, out, b: int, n: int, n_heads: int, d: int, pattern):
    """The bridge's output from the attention result ``out [b, h, n, d]``: ``hook_z``, the
    output projection, ``hook_out`` and the output tuple the HF block expects."""
    out = attn._apply_output_projection(attn._reshape_attn_output(out, b, n, n_heads, d))
    return attn._process_output((out, pattern))
