"""Any model: Hugging Face hub ids, local folders, GGUF files and already-loaded HF models,
each turned into the same hooked ``TransformerBridge`` with ``interp_info`` filled in.

Architecture
------------
``load_model(spec)`` (:mod:`interp.models.registry`) tries, in order: a registry name
(offline wheels), ``toy:<...>``, an existing path (a folder with ``config.json`` and weights,
or a ``.gguf`` file), then a hub id ``owner/name``. The last three end here:

    spec -> (hf_model, tokenizer) via transformers' from_pretrained (eager attention)
         -> :func:`wrap` -> TransformerBridge.boot_transformers(hf_model=..., tokenizer=...)
         -> interp_info (family, causal, n_ctx, bos) + a check of every layer's attention
            description (:func:`interp.families.describe_layers`)

Which spec is what (:func:`resolve_spec`, checked before anything loads, and answering at
once):

- an existing path is a folder or a ``.gguf`` file;
- a spec written as a path (``./x``, ``../x``, ``/x``, ``~/x``, ``a/b/c``, a trailing ``/``, a
  backslash, or a model-file suffix such as ``.gguf``) that does not exist is an error naming
  the path, the nearest folder that exists and close names in it;
- ``owner/name`` (exactly one ``/``; letters, digits, ``-``, ``_``, ``.``; :data:`HUB_ID_RULE`)
  that is not a local path is a hub id when the HF cache has it, or -- online and without
  ``HF_HUB_OFFLINE`` -- when the hub answers one quick request (no retries) that it exists.
  Otherwise the error says at once that there is no such folder here and no such hub model
  (never the ~30 s of download retries a mistyped folder used to cost).

Nothing from the checkpoint runs as code: ``trust_remote_code`` stays off unless the caller
passes it, and a model that needs it is refused with a message naming the option. Weights are
read from safetensors or GGUF; transformers reads a ``.bin`` only with torch's
``weights_only`` loader. Hub ids go through the normal HF cache and honour
``HF_HUB_OFFLINE``: an id that is not cached while offline (or with no network) is refused
with a message naming the id.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from interp.errors import InputError, ModelLoadError, Refused
from interp.families.registry import check_family, family_name
from interp.models.info import ModelInfo
from interp.models.pretrained import _quiet_transformers

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: how a spec is recognised as a Hugging Face hub id (error messages quote it)
HUB_ID_RULE = ("owner/name: exactly one '/', not starting with '.', '/' or '~', no model-file "
               "suffix, and no such path here")
#: what a model spec can be (error messages quote it)
SPEC_RULE = ("A model is a registry name (`interp models`), toy:<checkpoint>, an existing "
             "folder (config.json + weights) or .gguf file, or a Hugging Face hub id "
             f"({HUB_ID_RULE}), read from the HF cache and downloaded only when online "
             "without HF_HUB_OFFLINE")
#: file suffixes that make a spec a path, never a hub id
_MODEL_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".json")
#: seconds the quick "does this hub model exist" request may take
HUB_CHECK_TIMEOUT = 5.0


def looks_like_hub_id(spec: str) -> bool:
    """``owner/name`` with no path that exists locally."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).exists()


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` is written as a file-system path rather than a name or a hub id:
    ``./`` ``../`` ``/`` ``~`` first, a backslash, a trailing ``/``, more than one ``/``, or a
    model-file suffix (``.gguf``, ``.safetensors``, ...)."""
    s = spec.strip()
    return (s.startswith((".", "/", "~")) or "\\" in s or s.endswith("/")
            or s.count("/") > 1 or s.lower().endswith(_MODEL_SUFFIXES))


def hub_offline() -> bool:
    """Whether Hugging Face downloads are off (``HF_HUB_OFFLINE``, in the environment or as
    huggingface_hub read it at import)."""
    import os

    if os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_cached(repo_id: str) -> bool:
    """Whether the HF cache holds hub model ``repo_id`` (its ``config.json``)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:                      # a malformed id, an unreadable cache: not cached
        return False
    return isinstance(found, str)


def hub_exists(repo_id: str, timeout: float = HUB_CHECK_TIMEOUT) -> bool | None:
    """One quick request to the hub, no retries: True (the model exists, gated ones
    included), False (no such model), None (the hub could not be reached)."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:
        return None
    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError:
        return True
    except RepositoryNotFoundError:
        return False
    except Exception:                      # no network, DNS, timeout, server error
        return None
    return True


def _nearest(path: Path) -> tuple[Path, str | None]:
    """The deepest existing folder above ``path`` and, when ``path``'s next component is a
    near miss of a name in it, that name."""
    import difflib

    p = path.absolute()
    missing: list[str] = []
    while not p.exists() and p != p.parent:
        missing.append(p.name)
        p = p.parent
    close = None
    if missing and p.is_dir():
        try:
            names = [c.name for c in p.iterdir()]
        except OSError:
            names = []
        hit = difflib.get_close_matches(missing[-1], names, n=1, cutoff=0.75)
        close = hit[0] if hit else None
    return p, close


def missing_path_error(spec: str, hub: str | None = None) -> ModelLoadError:
    """The error for a spec that names no existing folder or file: the path, the nearest
    folder that exists (and a close name in it), why it is not a hub model (``hub``), and
    what a spec can be (:data:`SPEC_RULE`)."""
    path = Path(spec).expanduser()
    base, close = _nearest(path)
    where = f"{path.absolute()} does not exist; the nearest folder that does is {base}"
    if close is not None:
        missing = path.absolute().relative_to(base).parts[0]
        guess = Path(spec.replace(missing, close, 1)) if missing in spec else base / close
        where += f"; did you mean {str(guess)!r}?"
    hub_part = f"; {hub}" if hub else ""
    return ModelLoadError(f"no such folder or file: {spec!r} ({where}){hub_part}. "
                          f"{SPEC_RULE}.")


def resolve_spec(spec: str) -> str:
    """What a model spec that is neither a registry name nor ``toy:...`` names: ``"path"``
    (an existing folder or file) or ``"hub"`` (a hub id to load through the HF cache), decided
    at once (see the module docs).

    Raises:
        ModelLoadError: a path that does not exist (named, with the nearest existing folder);
            an ``owner/name`` that is neither a local path nor a hub model (not cached and
            offline, unknown to the hub, or the hub unreachable); any other unknown name
            (the registry's list and a close name).
    """
    if Path(spec).expanduser().exists():
        return "path"
    if looks_like_path(spec) or not _HUB_ID.match(spec):
        if looks_like_path(spec) or "/" in spec:
            raise missing_path_error(spec)
        from interp.models.registry import unknown_model_error

        raise unknown_model_error(spec)
    if hub_cached(spec):
        return "hub"
    if hub_offline():
        raise missing_path_error(spec, f"as a hub id, {spec!r} is not in the Hugging Face "
                                       f"cache and HF_HUB_OFFLINE is set")
    found = hub_exists(spec)
    if found:
        return "hub"
    why = ("the Hugging Face hub has no model of that name" if found is False else
           "it is not in the Hugging Face cache and the hub could not be reached")
    raise missing_path_error(spec, f"as a hub id, {spec!r}: {why}")


def _model_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from interp.families.registry import encoder_config

    if encoder_config(config):
        return AutoModelForMaskedLM, False
    return AutoModelForCausalLM, True


def _load_config(source: str, what: str, trust_remote_code: bool, **kw):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **kw)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelLoadError(
                f"{what} needs code shipped with the checkpoint (trust_remote_code). interp "
                f"does not run it unless you pass trust_remote_code=True to load_model") from e
        raise ModelLoadError(f"{what}: the config could not be read: {e}") from e
    except OSError as e:
        raise _missing(what, source, e) from e


def _missing(what: str, source: str, err: Exception) -> ModelLoadError:
    import os

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if looks_like_hub_id(source):
        how = ("HF_HUB_OFFLINE is set" if offline else "it could not be downloaded")
        return ModelLoadError(
            f"hub model {source!r} is not in the Hugging Face cache and {how}. Download it "
            f"once where there is network (huggingface-cli download {source}) or pass a "
            f"local folder with config.json and weights ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]})")
    return ModelLoadError(f"{what}: {str(err).splitlines()[0][:300]}")


def load_hf_any(spec: str, dtype: torch.dtype = torch.float32,
                trust_remote_code: bool = False):
    """``(hf_model, tokenizer, kind)`` for a hub id, a folder or a ``.gguf`` file path.

    Args:
        spec: ``"owner/name"`` (hub id, through the HF cache), a folder with ``config.json``
            and weights, or a path to a ``.gguf`` file (dequantized to ``dtype``).
        dtype: weights dtype.
        trust_remote_code: allow code from the checkpoint (off by default).

    Returns:
        ``(model in eval mode with eager attention, tokenizer, kind)``, kind one of
        ``"folder"``, ``"gguf"``, ``"hub"``.
    """
    from transformers import AutoTokenizer

    _quiet_transformers()
    path = Path(spec).expanduser()
    kw: dict = {}
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{spec}: a model file must be a .gguf; for other formats "
                                 f"pass the folder holding config.json and the weights")
        source, kind, what = str(path.parent), "gguf", f"GGUF file {spec}"
        kw["gguf_file"] = path.name
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"folder {spec} has no config.json: expected a Hugging Face "
                                 f"checkpoint folder (config.json + *.safetensors)")
        source, kind, what = str(path), "folder", f"folder {spec}"
    elif looks_like_hub_id(spec):
        source, kind, what = spec, "hub", f"hub model {spec!r}"
    else:
        raise ModelLoadError(f"{spec!r} is neither a registry name, an existing folder or "
                             f".gguf file, nor a hub id of the form 'owner/name'")
    config = _load_config(source, what, trust_remote_code, **kw)
    auto, _ = _model_class(config)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kw)
        model = auto.from_pretrained(source, dtype=dtype, attn_implementation="eager",
                                     trust_remote_code=trust_remote_code, **kw)
    except OSError as e:
        raise _missing(what, source, e) from e
    except ValueError as e:
        raise ModelLoadError(f"{what} could not be loaded as {auto.__name__}: "
                             f"{str(e).splitlines()[0][:300]}") from e
    if hasattr(model.config, "quantization_config") and kind == "gguf":
        # GGUF weights are dequantized on load: the model is plain float now.
        del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
    return model.eval(), tok, kind


def _n_ctx(config, bridge) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        val = getattr(config, name, None)
        if isinstance(val, int) and val > 0:
            return val
    return int(bridge.cfg.n_ctx)


def wrap(hf_model, tokenizer=None, *, name: str | None = None, kind: str = "wrapped",
         device: str | torch.device | None = None, has_lm_head: bool = True):
    """Hook a HF model the user already has: the same ``TransformerBridge`` (with
    ``interp_info``) that :func:`interp.load_model` returns.

    Args:
        hf_model: a transformers ``*ForCausalLM`` (or ``*ForMaskedLM`` encoder). Its attention
            is switched to ``eager`` so patterns are HF's own; the bridge takes over the module
            (use another instance as an independent reference).
        tokenizer: its tokenizer (needed by the probes that build prompts from text).
        name: recorded in ``interp_info.name`` (default ``"wrapped:<class>"``).
        device: move the model there first.

    Returns:
        ``TransformerBridge`` in eval mode; ``model.interp_info`` (:class:`ModelInfo`).

    Raises:
        NotImplementedError: a family TransformerLens has no adapter for, or a layer whose
            attention the bridge itself would not reproduce exactly.
    """
    from transformer_lens.model_bridge import TransformerBridge

    _quiet_transformers()
    config = getattr(hf_model, "config", None)
    if config is None:
        raise TypeError(f"wrap expects a transformers model, got {type(hf_model).__name__}")
    if getattr(config, "_attn_implementation", "eager") != "eager":
        hf_model.set_attn_implementation("eager")
    if device is not None:
        hf_model = hf_model.to(device)
    p = next(hf_model.parameters())
    try:
        model = TransformerBridge.boot_transformers(
            getattr(config, "_name_or_path", "") or type(hf_model).__name__,
            hf_model=hf_model, tokenizer=tokenizer, device=p.device, dtype=p.dtype)
    except (ValueError, KeyError, NotImplementedError) as e:
        raise Refused(
            f"TransformerLens has no exact adapter for {type(hf_model).__name__} "
            f"(family {family_name(config)!r}): {str(e).splitlines()[0][:300]}") from e
    model.eval()
    _, causal = _model_class(config)
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    model.interp_info = ModelInfo(
        name=name or f"wrapped:{type(hf_model).__name__}", kind=kind, causal=causal,
        has_lm_head=has_lm_head, n_ctx=_n_ctx(config, model), family=family_name(config),
        bos_token_id=None if bos is None else int(bos))
    check_family(model)     # the bridge itself would compute a layer differently from HF
    return model


def ensure_info(model) -> ModelInfo:
    """``model.interp_info``, derived from the bridge and its HF config when the model was
    not built by :func:`interp.load_model` / :func:`wrap` (and attached for later calls)."""
    info = getattr(model, "interp_info", None)
    if info is not None:
        return info
    hf = getattr(model, "original_model", None)
    config = getattr(hf, "config", None)
    if config is None:
        raise InputError(f"{type(model).__name__} has no interp_info and no HF config; load it "
                         f"with interp.load_model or interp.wrap")
    _, causal = _model_class(config)
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None)
    info = ModelInfo(name=str(getattr(config, "_name_or_path", "") or "bridge"), kind="wrapped",
                     causal=causal, has_lm_head=True, n_ctx=_n_ctx(config, model),
                     family=family_name(config), bos_token_id=None if bos is None else int(bos))
    model.interp_info = info
    return info
