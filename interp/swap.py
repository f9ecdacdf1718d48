"""Put an attention implementation into a hooked model, and take it out again exactly.

Architecture
------------
``swap_attention(model, impl, layers)`` is a context manager. For each chosen layer it
shadows the bridge attention component's ``forward`` with an instance attribute (the
class method stays untouched), so on exit deleting that attribute restores the model
bit for bit; nothing else of the model changes (no weights, no hooks). The swapped
forward (the model's family adapter, :meth:`interp.families.Family.swapped_forward`) reuses
the layer's own pieces, in the same order and through the same hook points as
TransformerLens:

    hidden [b, n, d_model] -> hook_in -> q/k/v (hook_q/hook_k/hook_v fire)
    -> q/k norm where the layer has one -> RoPE, full or partial (hook_rot_q/hook_rot_k)
    -> impl(q [b, h, n, d], k [b, kv_h, n, d], v [b, kv_h, n, d]) under the layer's own
       sliding window and soft-capping -> o (hook_z fires) -> hook_out

What each layer does is read once from :func:`interp.families.describe_layers`. A layer
the implementation cannot reproduce exactly is refused before anything is swapped, with a
``NotImplementedError`` naming the layer type and why (e.g. linear attention on a Gemma 2
soft-capped layer): never a silent approximation. ``ignore=("sliding_window",)`` /
``("softcap",)`` drops a layer feature knowingly. With ``"softmax"`` every supported family
(Llama, Mistral, Qwen2/3, Gemma 2/3, GPT-2, GPT-NeoX, Phi-3, BERT, toy) equals the unswapped
model; sliding-window layers keep their own window.

The model's dense N x N attention is never computed underneath: for decoder models the HF
config is switched to ``sdpa`` mask creation while swapped, so no ``[n, n]`` mask is built
for unpadded full-attention inputs, and the swapped forward calls only ``impl``.
``hook_attn_scores`` does not fire in swapped layers (linear attention has no scores).
``hook_pattern`` fires only when something listens to it: then the implementation's
effective pattern ``[b, h, n, n]`` is materialised, passed through the hook, and the output
is computed from the (possibly edited) pattern, so pattern patching still works.

Padded batches and incremental decoding with a KV cache are refused with a clear error
rather than computed wrongly.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from interp.attention import AttentionImpl, get as get_attention
from interp.errors import InputError
from interp.families import describe_layers, family_of
from interp.families.attend import IGNORABLE, check_features

_ACTIVE = "_interp_swapped_layers"


def _resolve_layers(model, layers: int | Sequence[int] | None) -> list[int]:
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        if not isinstance(layer, int) or not -n <= layer < n:
            raise InputError(f"layer {layer!r} is out of range for a {n}-layer model")
        out.append(layer % n)
    if len(set(out)) != len(out):
        raise InputError(f"layers {list(layers)} names a layer twice")
    return sorted(out)


def _impls_per_layer(impl: AttentionImpl | str | Sequence[AttentionImpl], specs,
                     options: dict) -> list[AttentionImpl]:
    """One implementation per chosen layer. A registry name is built once per distinct
    (scale, head size) with the layer's own scale and head size unless ``options`` set them;
    a list gives one implementation per chosen layer, in order."""
    if isinstance(impl, (list, tuple)):
        if options:
            raise InputError("options are only accepted with an implementation name")
        if len(impl) != len(specs) or not all(isinstance(i, AttentionImpl) for i in impl):
            raise InputError(f"a list of implementations needs one AttentionImpl per chosen "
                             f"layer ({len(specs)}), got {len(impl)} items")
        return list(impl)
    if not isinstance(impl, str):
        if options:
            raise InputError("options are only accepted with an implementation name")
        if not isinstance(impl, AttentionImpl):
            raise TypeError(f"impl must be an AttentionImpl or a registry name, got {type(impl)}")
        return [impl] * len(specs)
    built: dict[tuple, AttentionImpl] = {}
    out = []
    for spec in specs:
        opts = dict(options)
        opts.setdefault("scale", spec.scaling)
        opts.setdefault("d_head", spec.head_dim)
        key = (opts["scale"], opts["d_head"])
        if key not in built:
            built[key] = get_attention(impl, **opts)
        out.append(built[key])
    return out


@contextmanager
def swap_attention(model, impl: AttentionImpl | str | Sequence[AttentionImpl], layers: int | Sequence[int] | None = None,
                   *, ignore: Sequence[str] = (), **options: Any) -> Iterator[AttentionImpl]:
    """Make ``layers`` of ``model`` use attention implementation ``impl`` inside the block.

    Args:
        model: a hooked model from :func:`interp.load_model` / :func:`interp.wrap`.
        impl: an :class:`~interp.attention.AttentionImpl`, or a registry name built with
            ``options`` (e.g. ``"linear", feature_map="elu", form="chunked"``); a name gets
            each layer's own score scale and head size unless ``options`` set them; or a
            list with one implementation per chosen layer (e.g. :mod:`interp.decoding`'s
            per-layer KV-cache attention).
        layers: layer index, list of indices, or None for all layers.
        ignore: layer features to drop knowingly where ``impl`` cannot apply them:
            ``"sliding_window"``, ``"softcap"`` (default: refuse such layers).

    Yields:
        The implementation in use (the first chosen layer's, when a name built several).

    On exit -- normal or by exception -- every swapped layer gets its own forward back; the
    model is bitwise the original and holds no extra hooks.

    Raises:
        ValueError: bad layer indices, a layer already swapped, a score scale mismatch
            (inside the forward), padded batches.
        NotImplementedError: a layer the implementation cannot reproduce exactly (the message
            names the layer type and the feature), or an attention the swap does not know.
    """
    ignore = tuple(ignore)
    bad = sorted(set(ignore) - set(IGNORABLE))
    if bad:
        raise InputError(f"ignore= accepts {IGNORABLE}, got {bad}")
    chosen = _resolve_layers(model, layers)
    specs = [describe_layers(model)[layer] for layer in chosen]
    impls = _impls_per_layer(impl, specs, options)
    family = family_of(model)
    for spec, one in zip(specs, impls):
        family.check_swappable(spec)
        check_features(spec, one, ignore)
    active: dict[int, str] = model.__dict__.setdefault(_ACTIVE, {})
    clash = [layer for layer in chosen if layer in active]
    if clash:
        raise InputError(f"layers {clash} are already swapped ({active}); nest swaps on "
                         f"disjoint layers only")
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    old_impl = getattr(hf_config, "_attn_implementation", None) if hf_config else None
    device = next(model.parameters()).device
    impls = [one.to(device) for one in impls]
    done: list = []
    try:
        for layer, spec, one in zip(chosen, specs, impls):
            attn = model.blocks[layer].attn
            fwd = family.swapped_forward

            def swapped(*args, _attn=attn, _fwd=fwd, _impl=one, _spec=spec, **kwargs):
                return _fwd(_attn, _impl, _spec, ignore, *args, **kwargs)

            object.__setattr__(attn, "forward", swapped)
            done.append(attn)
            active[layer] = one.name
        if hf_config is not None and old_impl == "eager" and specs[0].causal:
            hf_config._attn_implementation = "sdpa"   # no dense [n, n] mask for unpadded input
        yield impls[0]
    finally:
        for attn in done:
            object.__delattr__(attn, "forward")
        for layer in chosen:
            active.pop(layer, None)
        if hf_config is not None and old_impl is not None:
            hf_config._attn_implementation = old_impl
