"""Training recipe: toy attention-only transformers that form induction heads (Olsson et al.).

``train_toy_induction(cfg)`` trains a 2-layer attention-only model (and, with
``cfg.control``, a 1-layer control that cannot form induction heads: an induction head needs a
previous-token head in an earlier layer to K-compose with) on :func:`induction_batch`:
``BOS + segment + the same segment`` with a segment length drawn anew for every batch. (With
one fixed length a single layer-0 head predicts the second copy by position alone -- "attend
seg_len - 1 back" -- so even the 1-layer control scores ~0.94 and no real induction circuit
forms; varying the length leaves only the previous-token -> induction mechanism.) The models
use rotary positions, which make the previous-token head easy to learn.
Every ``eval_every`` steps it records, on a fixed held-out batch of
repeated random tokens: the best head's induction and previous-token scores, the loss on the
repeated half (near zero once induction works) and the in-context-learning score (loss late
in the sequence minus loss early), so the phase change is visible. Checkpoints are written
every ``checkpoint_every`` steps; the final model is saved where
``load_model("toy:<name>")`` finds it (``<cache>/toy/<name>``), the control beside it as
``<name>-control``.

Recipes are stored: every checkpoint holds ``recipe.json`` (:func:`recipe` -- the whole
:class:`ToyInductionConfig` and which model, main or control -- with its hash; see
:mod:`interp.models.toy`). :func:`ensure_toy_induction` / :func:`circuit_toy` reuse a cached
checkpoint only when its recipe is the one asked for; otherwise they retrain it
(``on_mismatch="retrain"``, the default) or raise :class:`~interp.models.toy.ToyRecipeMismatch`
naming the differing fields (``on_mismatch="refuse"``), e.g.
``toy checkpoint .../toy-induction-2l was trained with another recipe (config.steps: 1500 ->
100); ...``.

This module lives above :mod:`interp.probes` and :mod:`interp.circuits` (its evaluation uses
both); :mod:`interp.models` does not import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from interp.config import to_dict
from interp.errors import InputError
from interp.models.build_lock import build_lock
from interp.models.cache import cache_dir
from interp.models.toy import (ToyConfig, ToyRecipeMismatch, build_toy, check_recipe,
                               save_toy, token_losses, train_toy)

BOS = 0


@dataclass(frozen=True)
class ToyInductionConfig:
    """Recipe for ``interp train toy-induction`` (defaults: ~1-3 minutes per model on 2 cores).

    Attributes:
        name: checkpoint name under ``<cache>/toy/``.
        n_layers, d_model, n_heads, d_head, d_vocab: the main model's shape.
        min_seg, max_seg: range of the per-batch segment length.
        seg_len: segment length of the held-out evaluation batch (BOS + 2 copies).
        batch, steps, lr: training.
        eval_every, checkpoint_every: steps between evaluations / checkpoints.
        control: also train a 1-layer control with the same settings.
        seed: seeds init, data and the evaluation batch.
    """

    name: str = "toy-induction-2l"
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_vocab: int = 64
    min_seg: int = 8
    max_seg: int = 24
    seg_len: int = 16
    batch: int = 32
    steps: int = 1500
    lr: float = 2e-3
    eval_every: int = 100
    checkpoint_every: int = 100
    control: bool = True
    seed: int = 0

    def toy_config(self, n_layers: int | None = None) -> ToyConfig:
        return ToyConfig(n_layers=n_layers or self.n_layers, d_model=self.d_model,
                         n_heads=self.n_heads, d_head=self.d_head, d_vocab=self.d_vocab,
                         n_ctx=1 + 2 * max(self.max_seg, self.seg_len), attn_only=True,
                         positional="rotary", seed=self.seed)


def induction_batch(cfg: ToyInductionConfig, step: int,
                    device: str | torch.device | None = None) -> torch.Tensor:
    """Training batch ``[batch, 1 + 2 * s]`` for ``step``: BOS, a random segment of length
    ``s`` (drawn in ``[min_seg, max_seg]`` for this batch) and the same segment again; seeded
    by ``(seed, step)``, drawn on CPU and returned on ``device`` (default CPU)."""
    from interp.tasks import repeated_tokens

    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    s = int(torch.randint(cfg.min_seg, cfg.max_seg + 1, (1,), generator=g))
    return repeated_tokens(cfg.batch, s, 2, cfg.d_vocab, bos_token=BOS, low=1, generator_=g,
                           device=device)


def eval_tokens(cfg: ToyInductionConfig, batch: int = 32,
                device: str | torch.device | None = None) -> torch.Tensor:
    """The fixed held-out batch: ``[batch, 1 + 2 * seg_len]`` repeated random tokens."""
    from interp.tasks import repeated_tokens

    return repeated_tokens(batch, cfg.seg_len, 2, cfg.d_vocab, bos_token=BOS, low=1,
                           seed=10_000 + cfg.seed, device=device)


def induction_metrics(model, tokens: torch.Tensor, seg_len: int) -> dict[str, float]:
    """Best-head induction and previous-token scores, repeated-half loss, first-half loss and
    ICL score (loss at the last token minus loss at token ``seg_len // 2``) on ``tokens``."""
    from interp.circuits.ablation import first_half_loss, repeated_half_loss
    from interp.models.toy import model_device
    from interp.probes.induction import pattern_scores

    tokens = tokens.to(model_device(model))
    df = pattern_scores(model, tokens, seg_len=seg_len, offset=1)
    with torch.no_grad():
        logits = model(tokens)
    losses = token_losses(logits, tokens).mean(0)
    early = seg_len // 2
    return {
        "induction": float(df.induction.max()),
        "previous_token": float(df.previous_token.max()),
        "repeated_loss": float(repeated_half_loss(seg_len, 1)(logits, tokens)),
        "first_half_loss": float(first_half_loss(seg_len, 1)(logits, tokens)),
        "icl_score": float(losses[-1] - losses[early - 1]),
    }


def default_dir(name: str) -> Path:
    return cache_dir() / "toy" / name


def recipe(cfg: ToyInductionConfig, model: str = "main") -> dict:
    """The full recipe of one trained model (stored as ``recipe.json`` with its checkpoint):
    the recipe's name, the whole config and which model (``main`` or the 1-layer
    ``control``). Left out: ``name`` (where the checkpoint goes) and ``control`` (whether the
    other model is trained too); neither changes this model."""
    config = to_dict(cfg)
    config.pop("name", None)
    config.pop("control", None)
    return {"recipe": "toy_induction", "model": model, "config": config}


def train_toy_induction(cfg: ToyInductionConfig = ToyInductionConfig(),
                        out_dir: str | Path | None = None, progress: bool = True,
                        device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None) -> pd.DataFrame:
    """Train the induction model (and the 1-layer control); returns the training history.

    ``device`` (a name or ``torch.device``, default CPU; ``"auto"``: CUDA when available)
    holds the models and every batch; ``dtype`` is the compute dtype (mixed precision below
    float32, see :class:`interp.models.toy.TrainPrecision`). Checkpoints are float32.

    Returns:
        DataFrame with columns ``model`` ("main"/"control"), ``step``, ``loss``, ``lr``,
        ``induction``, ``previous_token``, ``repeated_loss``, ``first_half_loss``,
        ``icl_score`` (metric columns filled on evaluation steps).
    """
    if not 1 <= cfg.min_seg <= cfg.max_seg:
        raise InputError(f"need 1 <= min_seg <= max_seg, got {cfg.min_seg}, {cfg.max_seg}")
    from interp.devices import resolve_device

    device = resolve_device(device) if device is not None else torch.device("cpu")
    out = Path(out_dir) if out_dir else default_dir(cfg.name)
    held_out = eval_tokens(cfg, device=device)
    runs = [("main", cfg.n_layers, out)]
    if cfg.control:
        runs.append(("control", 1, out.parent / f"{out.name}-control"))
    histories = []
    for label, n_layers, path in runs:
        model = build_toy(cfg.toy_config(n_layers), device=device)
        model.toy_recipe = recipe(cfg, label)      # saved with every checkpoint
        history = train_toy(
            model, lambda step: induction_batch(cfg, step, device=device), steps=cfg.steps,
            lr=cfg.lr, eval_fn=lambda m: induction_metrics(m, held_out, cfg.seg_len),
            eval_every=cfg.eval_every, checkpoint_dir=path / "checkpoints",
            checkpoint_every=cfg.checkpoint_every, progress=progress, dtype=dtype)
        save_toy(model, path, history)
        histories.append(history.assign(model=label))
    return pd.concat(histories, ignore_index=True)


def ensure_toy_induction(cfg: ToyInductionConfig = ToyInductionConfig(),
                         on_mismatch: str = "retrain", progress: bool = False,
                         out_dir: str | Path | None = None) -> Path:
    """The checkpoint folder of ``cfg``'s main model (default ``<cache>/toy/<cfg.name>``),
    trained (with its control when ``cfg.control``) when missing or when a stored recipe
    differs from ``cfg``'s.

    Args:
        on_mismatch: ``"retrain"`` (default) or ``"refuse"``: raise
            :class:`~interp.models.toy.ToyRecipeMismatch` naming the differing fields.
    """
    if on_mismatch not in ("retrain", "refuse"):
        raise InputError(f"on_mismatch must be 'retrain' or 'refuse', got {on_mismatch!r}")
    out = Path(out_dir) if out_dir else default_dir(cfg.name)
    with build_lock(out, f"the toy model {out.name}"):     # one trainer per checkpoint
        return _ensure_under_lock(cfg, out, on_mismatch, progress)


def _ensure_under_lock(cfg: ToyInductionConfig, out: Path, on_mismatch: str,
                       progress: bool) -> Path:
    """:func:`ensure_toy_induction` once the checkpoint's build lock is held."""
    wanted = [(out, recipe(cfg, "main"))]
    if cfg.control:
        wanted.append((out.parent / f"{out.name}-control", recipe(cfg, "control")))
    stale = []
    for path, want in wanted:
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            stale.append((path, ["(missing)"]))
            continue
        diffs = check_recipe(path, want)
        if diffs:
            stale.append((path, diffs))
    if not stale:
        return out
    present = [(p, d) for p, d in stale if d != ["(missing)"]]
    if present and on_mismatch == "refuse":
        path, diffs = present[0]
        raise ToyRecipeMismatch(
            f"toy checkpoint {path} was trained with another recipe ({'; '.join(diffs)}); "
            f"retrain it (on_mismatch='retrain', `interp train toy-induction`) or choose "
            f"another name")
    train_toy_induction(cfg, out_dir=out, progress=progress)
    return out


def circuit_toy(name: str = ToyInductionConfig.name, progress: bool = False,
                retrain: bool = False, on_mismatch: str = "retrain"):
    """The cached toy induction model used for circuit finding
    (``interp.load_model("toy:<name>")``), trained with the default
    :class:`ToyInductionConfig` (and its 1-layer control) on first use, and again when the
    cached checkpoint was trained with another recipe (``on_mismatch="refuse"``: raise
    :class:`~interp.models.toy.ToyRecipeMismatch` naming the differing fields instead)."""
    import interp

    cfg = ToyInductionConfig(name=name)
    if retrain:
        train_toy_induction(cfg, progress=progress)
    else:
        ensure_toy_induction(cfg, on_mismatch=on_mismatch, progress=progress)
    return interp.load_model(f"toy:{name}")
