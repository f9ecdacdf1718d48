"""Models: one registry (pretrained from registry-package wheels, toy from configs).

See :mod:`interp.models.registry` (``list_models``, ``load_model``),
:mod:`interp.models.cache` (offline fetch + verify + convert) and
:mod:`interp.models.toy` (config, build, train, save/load).
"""
from interp.models.registry import ModelInfo, list_models, load_hf, load_model, model_names

__all__ = ["ModelInfo", "list_models", "load_hf", "load_model", "model_names"]
