"""Which adapter a model gets, and the per-layer description every consumer reads.

Architecture
------------
Adapters register themselves with :func:`register` when their module is imported
(:func:`_adapters` imports every module of the package, so adding a family is adding one
file); their :meth:`~interp.families.base.Family.matches` are
mutually exclusive (the toy and the delegating encoder share a bridge class and tell each
other apart by the wrapped module). :func:`family_of` binds the adapter that matches the
model's attention to that model (cached on it); a layout no adapter knows gets the base :class:`~interp.families.base.Family`,
which describes its layers and refuses everything that recomputes them.
:func:`describe_layers` caches one :class:`~interp.families.layers.LayerAttention` per layer
on the model. For plain HF models (the streaming decoder), :func:`streaming_parts` picks the
adapter by the HF model type.
"""
from __future__ import annotations

from interp.errors import InputError, Refused
from interp.families.base import Family
from interp.families.layers import LayerAttention

#: registered adapter classes (their ``matches`` are mutually exclusive)
FAMILIES: list[type[Family]] = []
_IMPORTED: list[bool] = []


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: add an adapter to :data:`FAMILIES`."""
    FAMILIES.append(cls)
    return cls


def _adapters() -> list[type[Family]]:
    """:data:`FAMILIES`, after importing every module of this package (each adapter module
    registers its class on import, so a new family is one new file here)."""
    if not _IMPORTED:
        import importlib
        import pkgutil

        import interp.families as package

        for mod in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{mod.name}")
        _IMPORTED.append(True)
    return FAMILIES


def family_of(model) -> Family:
    """The adapter of a loaded bridge (or interp toy model), cached on it."""
    fam = model.__dict__.get("_interp_family")
    if fam is None:
        attn = model.blocks[0].attn
        hits = [c for c in _adapters() if c.matches(model, attn)]
        if len(hits) > 1:
            raise RuntimeError(f"adapters {[c.__name__ for c in hits]} all claim {type(attn)}")
        cls = hits[0] if hits else Family
        fam = cls(model)
        model.__dict__["_interp_family"] = fam
    return fam


def hf_config(model):
    """The HF (text) config of a bridge's wrapped model, or None."""
    cfg = getattr(getattr(model, "original_model", None), "config", None)
    return None if cfg is None else (getattr(cfg, "text_config", None) or cfg)


def describe_layers(model) -> list[LayerAttention]:
    """One :class:`~interp.families.layers.LayerAttention` per layer of a bridge (or interp
    toy model).

    Args:
        model: a ``TransformerBridge`` (from :func:`interp.load_model` / :func:`interp.wrap`).

    Returns:
        ``[LayerAttention] * n_layers``; cached on the model (``model._interp_layers``).
    """
    cached = model.__dict__.get("_interp_layers")
    if cached is not None:
        return cached
    fam = family_of(model)
    cfg = hf_config(model)
    causal = bool(getattr(getattr(model, "interp_info", None), "causal", True))
    out = [fam.describe(layer, cfg, causal) for layer in range(len(model.blocks))]
    model.__dict__["_interp_layers"] = out
    return out


def family_name(obj) -> str:
    """The family a model belongs to, as its HF config names it (``"llama"``,
    ``"gemma3_text"``, ...): a bridge's ``interp_info.family``; an HF config's model type; an
    HF model's (text) config's model type; else the class name."""
    info = getattr(obj, "interp_info", None)
    if getattr(info, "family", None):
        return str(info.family)
    if hasattr(obj, "model_type"):                                  # an HF config
        return str(obj.model_type)
    cfg = getattr(obj, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    return str(getattr(cfg, "model_type", None) or type(obj).__name__)


def hf_family_name(hf_model) -> str:
    """The HF model type of a plain HF model (``"?"`` when its config has none)."""
    cfg = getattr(hf_model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    return str(getattr(cfg, "model_type", "?"))


def streaming_families() -> dict[str, str]:
    """HF model type -> block wiring, for every family the streaming decoder runs."""
    out: dict[str, str] = {}
    for cls in _adapters():
        out.update(cls.streaming_types)
    return out


def streaming_parts(hf_model, who: str):
    """The adapter's :class:`~interp.families.rotary.StreamingParts` for a plain HF model of
    a family in :func:`streaming_families` (refused by name otherwise)."""
    family = hf_family_name(hf_model)
    for cls in _adapters():
        if family in cls.streaming_types:
            return cls.streaming_layers(hf_model, who)
    raise Refused(f"{who}: family {family!r} has no streaming decoder step")


def encoder_config(config) -> bool:
    """Whether an HF config describes a masked-LM encoder (loaded with ``*ForMaskedLM``)."""
    return any(cls.is_encoder_config(config) for cls in _adapters())


def check_family(model) -> None:
    """Refuse at load what the bridge itself would compute differently from HF."""
    if not hasattr(model, "blocks"):
        raise InputError(f"{type(model).__name__} is not a hooked model")
    family_of(model).check_bridge()
