"""Toy transformers: built from a config, trained (on any device), saved and loaded as
checkpoints.

A toy model is a TransformerLens native model wrapped in a ``TransformerBridge`` (via
``TransformerBridge.boot_native``), so it has exactly the hook names of the pretrained
models (``blocks.{l}.attn.hook_pattern``, ``hook_q``, ``hook_k``, ``hook_v``, ``hook_z``,
...). A checkpoint is a folder with ``config.json`` (the :class:`ToyConfig`),
``model.safetensors`` and, when saved by :func:`train_toy`, ``history.csv``.

``load_model("toy:<path or name>")`` loads a checkpoint folder; a bare name is looked up
in ``<cache>/toy/<name>`` (where ``interp train`` writes).

Recipes: a checkpoint saved with a recipe (``save_toy(..., recipe=...)`` or a model carrying
``model.toy_recipe``, as :mod:`interp.recipes.toy_induction` trains them) also holds
``recipe.json`` = ``{"recipe": <the full training recipe as JSON>, "hash": <sha256>}`` (its
:func:`~interp.hashing.content_hash`).
:func:`check_recipe` compares it with the recipe a caller wants and names every differing
field (``config.steps: 1500 -> 100``); a checkpoint without ``recipe.json`` (older, or saved
without one) matches no recipe. :func:`load_toy` attaches the stored recipe as
``model.toy_recipe``.

Devices: :func:`train_toy` trains on the device of the model's parameters (build it there:
``build_toy(cfg, device=...)``) and moves every batch there; ``dtype`` below float32 trains
with mixed precision (:class:`TrainPrecision`: autocast, float32 weights and optimiser state,
a gradient scaler for float16). Checkpoints are written from CPU copies of the weights.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import pandas as pd
import torch
from tqdm.auto import tqdm

from interp.config import from_dict, to_dict
from interp.errors import InputError
from interp.hashing import canonical_json, content_hash
from interp.models.cache import cache_dir
from interp.models.info import ModelInfo
from interp.paths import MissingPath


@dataclass(frozen=True)
class ToyConfig:
    """Shape of a toy transformer.

    Attributes:
        n_layers: number of blocks.
        d_model: residual width.
        n_heads: attention heads per layer.
        d_head: width of each head.
        d_vocab: vocabulary size.
        n_ctx: context length (longest sequence).
        attn_only: True for attention-only blocks (no MLP).
        d_mlp: MLP width (default 4 * d_model; ignored when attn_only).
        positional: ``"standard"`` (learned absolute) or ``"rotary"``.
        normalization: ``"LN"``, ``"RMS"`` or ``"none"``.
        seed: initialisation seed.
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_vocab: int = 64
    n_ctx: int = 256
    attn_only: bool = True
    d_mlp: Optional[int] = None
    positional: Literal["standard", "rotary"] = "standard"
    normalization: Literal["LN", "RMS", "none"] = "LN"
    seed: int = 0

    def __post_init__(self):
        for field in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx"):
            if getattr(self, field) < 1:
                raise InputError(f"ToyConfig.{field} must be >= 1, got {getattr(self, field)}")

    def bridge_config(self) -> dict:
        """The TransformerBridgeConfig fields for ``TransformerBridge.boot_native``."""
        return dict(
            d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
            d_head=self.d_head, n_ctx=self.n_ctx, d_vocab=self.d_vocab,
            attn_only=self.attn_only, d_mlp=None if self.attn_only else (self.d_mlp or 4 * self.d_model),
            positional_embedding_type=self.positional,
            normalization_type=None if self.normalization == "none" else self.normalization,
            act_fn="gelu", seed=self.seed, default_prepend_bos=False,
        )


def build_toy(cfg: ToyConfig, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None):
    """A freshly initialised toy model (``TransformerBridge``) for ``cfg``, on ``device``
    (default CPU) in ``dtype`` (default float32).

    The config is attached as ``model.toy_config``.
    """
    from transformer_lens.model_bridge import TransformerBridge

    torch.manual_seed(cfg.seed)
    model = TransformerBridge.boot_native(cfg.bridge_config(), device=device, dtype=dtype)
    model.toy_config = cfg
    model.interp_info = ModelInfo(name="toy", kind="toy", causal=True, has_lm_head=True,
                                  n_ctx=cfg.n_ctx)
    return model


def token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token losses ``[batch, seq-1]`` (position t predicts ``tokens[:, t+1]``), float32.

    Args:
        logits: ``[batch, seq, vocab]``.
        tokens: ``[batch, seq]``.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None])[..., 0]


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor,
            loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy.

    Args:
        logits: ``[batch, seq, vocab]``.
        tokens: ``[batch, seq]``; position t predicts ``tokens[:, t+1]``.
        loss_mask: optional ``[batch, seq-1]`` bool, which predictions count.
    """
    nll = token_losses(logits, tokens)  # [batch, seq-1]
    if loss_mask is None:
        return nll.mean()
    mask = loss_mask.to(nll.dtype)
    return (nll * mask).sum() / mask.sum().clamp_min(1)


RECIPE_FILE = "recipe.json"


class ToyRecipeMismatch(InputError):
    """A cached toy checkpoint was trained with another recipe (the message names the
    differing fields)."""


def read_recipe(path: str | Path) -> dict | None:
    """``{"recipe": ..., "hash": ...}`` stored with checkpoint ``path``, or None."""
    f = Path(path) / RECIPE_FILE
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "recipe" in data else None


def recipe_differences(stored: dict | None, wanted: dict) -> list[str]:
    """The fields in which a stored recipe differs from ``wanted``, as ``field: old -> new``
    (values as JSON); ``["recipe.json: (absent) -> <hash>"]`` when nothing is stored."""
    if stored is None:
        return [f"{RECIPE_FILE}: (absent) -> {content_hash(wanted)[:12]}"]
    old, new = json.loads(canonical_json(stored)), json.loads(canonical_json(wanted))
    out: list[str] = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                sub = f"{where}.{k}" if where else k
                if k not in a:
                    out.append(f"{sub}: (absent) -> {canonical_json(b[k])}")
                elif k not in b:
                    out.append(f"{sub}: {canonical_json(a[k])} -> (absent)")
                else:
                    walk(a[k], b[k], sub)
        elif a != b:
            out.append(f"{where}: {canonical_json(a)} -> {canonical_json(b)}")

    walk(old, new, "")
    return out


def check_recipe(path: str | Path, recipe: dict) -> list[str]:
    """``[]`` when checkpoint ``path`` was trained with ``recipe``, else the differing fields
    (:func:`recipe_differences`)."""
    stored = read_recipe(path)
    if stored is not None and stored.get("hash") == content_hash(recipe):
        return []
    return recipe_differences(None if stored is None else stored["recipe"], recipe)


def save_toy(model, path: str | Path, history: pd.DataFrame | None = None,
             recipe: dict | None = None) -> Path:
    """Save a toy model into folder ``path`` (config.json + model.safetensors [+ history.csv]
    [+ recipe.json]).

    ``recipe`` (default ``model.toy_recipe`` when set): the full training recipe, stored with
    its hash in ``recipe.json``; without one, a ``recipe.json`` already in ``path`` is
    removed (it would describe other weights). Each file is written to a temporary name and
    renamed into place, so a reader never sees a half-written file; other files in ``path``
    (e.g. a ``checkpoints/`` folder) are kept.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg: ToyConfig = model.toy_config
    if recipe is None:
        recipe = getattr(model, "toy_recipe", None)
    with tempfile.TemporaryDirectory(dir=path, prefix=".save.") as tmp:
        tmp = Path(tmp)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        if history is not None:
            history.to_csv(tmp / "history.csv", index=False)
        if recipe is not None:
            (tmp / RECIPE_FILE).write_text(json.dumps(
                {"recipe": json.loads(canonical_json(recipe)), "hash": content_hash(recipe)},
                indent=2))
        else:
            (path / RECIPE_FILE).unlink(missing_ok=True)
        # weights first, config last: a folder with config.json is complete
        for name in ("model.safetensors", "history.csv", RECIPE_FILE, "config.json"):
            if (tmp / name).exists():
                os.replace(tmp / name, path / name)
    return path


def resolve_toy_path(spec: str | Path) -> Path:
    """``spec`` is a checkpoint folder, or a name under ``<cache>/toy/``."""
    p = Path(spec).expanduser()
    if (p / "config.json").is_file():
        return p
    named = cache_dir() / "toy" / str(spec)
    if (named / "config.json").is_file():
        return named
    raise MissingPath(
        f"no toy checkpoint at {p} or {named} (a folder with config.json and "
        f"model.safetensors). Train one with `interp train toy-induction` or "
        f"interp.models.toy.train_toy, or pass the checkpoint folder."
    )


def load_toy(spec: str | Path, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None):
    """Load a toy checkpoint (folder or cached name) as a ``TransformerBridge``."""
    from safetensors.torch import load_file

    path = resolve_toy_path(spec)
    cfg = from_dict(ToyConfig, json.loads((path / "config.json").read_text()),
                    where=str(path / "config.json"))
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise MissingPath(f"toy checkpoint {path} has no model.safetensors")
    model = build_toy(cfg, device=device, dtype=dtype)
    state = load_file(weights, device=str(device) if device else "cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"toy checkpoint {path} does not match its config: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}")
    stored = read_recipe(path)
    model.toy_recipe = None if stored is None else stored["recipe"]
    model.eval()
    return model


class TrainPrecision:
    """Mixed-precision training in ``dtype`` on ``device``, one object for both training loops
    (:func:`train_toy`, :func:`interp.retrieval.train.train_mqar`).

    float32 (the default) is plain training: no autocast, no scaler -- exactly
    ``loss.backward(); clip; opt.step()``. float16 / bfloat16: the forward runs under
    ``torch.autocast(device.type, dtype)`` while weights and optimiser state stay float32
    (losses are computed in float32: :func:`token_losses` upcasts); float16 adds a
    ``GradScaler`` so small gradients do not underflow.
    """

    def __init__(self, device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None):
        from interp.devices import resolve_dtype

        self.device = torch.device(device if device is not None else "cpu")
        self.dtype = resolve_dtype(dtype)
        self.enabled = self.dtype != torch.float32
        self.scaler = (torch.amp.GradScaler(self.device.type)
                       if self.dtype == torch.float16 else None)

    def autocast(self):
        """Context for the forward pass (a no-op for float32)."""
        import contextlib

        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params,
             max_norm: float = 1.0) -> None:
        """``backward``, clip the gradient norm to ``max_norm``, optimiser step."""
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.scaler.step(opt)
        self.scaler.update()


def model_device(model) -> torch.device:
    """Device of a model's first parameter (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def train_toy(
    model,
    batch_fn: Callable[[int], torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup: int = 50,
    eval_fn: Callable[[object], dict] | None = None,
    eval_every: int = 100,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    dtype: torch.dtype | str | None = None,
) -> pd.DataFrame:
    """Train ``model`` with AdamW on next-token loss; returns the history as a DataFrame.

    Training runs on the device of ``model``'s parameters; batches are moved there (make them
    there to save the copy, e.g. ``InductionMixture.batch_fn(device=...)``).

    Args:
        model: a toy ``TransformerBridge`` (from :func:`build_toy`), float32 weights.
        batch_fn: ``step -> tokens [batch, seq]`` or ``(tokens, loss_mask [batch, seq-1])``.
        steps: optimiser steps.
        lr: peak learning rate (linear warmup for ``warmup`` steps, then cosine to 10%).
        eval_fn: ``model -> {metric: value}`` called every ``eval_every`` steps and at the end
            (e.g. the ICL score); its values become history columns.
        checkpoint_dir: if given, checkpoints ``step_{n:06d}/`` are saved every
            ``checkpoint_every`` steps and ``final/`` at the end, with the history so far.
        dtype: compute dtype (:class:`TrainPrecision`; default float32, plain training).

    Returns:
        DataFrame with one row per logged step: ``step``, ``loss``, ``lr`` and eval metrics.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    device = model_device(model)
    precision = TrainPrecision(device, dtype)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    rows: list[dict] = []
    model.train()
    bar = tqdm(range(steps), desc="train", disable=not progress)
    for step in bar:
        batch = batch_fn(step)
        tokens, mask = batch if isinstance(batch, tuple) else (batch, None)
        tokens = tokens.to(device)
        mask = mask.to(device) if mask is not None else None
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with precision.autocast():
            logits = model(tokens)
        loss = lm_loss(logits, tokens, mask)
        precision.step(loss, opt, model.parameters())
        last = step == steps - 1
        do_eval = eval_fn is not None and ((step + 1) % eval_every == 0 or last or step == 0)
        if step % 10 == 0 or last or do_eval:
            row = {"step": step + 1, "loss": loss.item(), "lr": lr_at(step)}  # syncs: log steps only
            if do_eval:
                model.eval()
                with torch.no_grad(), precision.autocast():
                    row.update(eval_fn(model))
                model.train()
            rows.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
        if checkpoint_dir and checkpoint_every and (step + 1) % checkpoint_every == 0 and not last:
            save_toy(model, Path(checkpoint_dir) / f"step_{step + 1:06d}", pd.DataFrame(rows))
    model.eval()
    history = pd.DataFrame(rows)
    if checkpoint_dir:
        save_toy(model, Path(checkpoint_dir) / "final", history)
    return history
