"""Metrics of a patching task: what "more like the clean behaviour" means, as one number.

Architecture
------------
- **Metric.** A :data:`Metric` maps ``logits [batch, seq, vocab]`` to a scalar tensor (higher =
  more like the clean behaviour); it is differentiable (attribution patching takes its
  gradient).
- **Builders** (Meng et al. 2022; Wang et al. 2022): :func:`logit_diff_metric`,
  :func:`logprob_metric` (minus the loss on chosen positions), :func:`prob_metric`.
- **Normalisation.** :func:`normalise` maps a metric value to 0 = corrupted run, 1 = clean
  run; :func:`baseline` gives the two ends for a task, :func:`metric_of` the metric of one
  (hooked) forward.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

from interp.hooks import attach

if TYPE_CHECKING:
    from interp.circuits.tasks import PatchingTask

Metric = Callable[[torch.Tensor], torch.Tensor]


def _pos_index(positions: torch.Tensor | Sequence[int], batch: int) -> torch.Tensor:
    p = torch.as_tensor(positions, dtype=torch.long)
    return p.expand(batch, -1) if p.dim() == 1 else p


def logit_diff_metric(positions: torch.Tensor | Sequence[int], correct: torch.Tensor,
                      wrong: torch.Tensor) -> Metric:
    """Mean of ``logit[correct] - logit[wrong]`` at ``positions``.

    Args:
        positions: ``[n]`` (same for every row) or ``[batch, n]`` query positions.
        correct, wrong: ``[batch, n]`` token ids (or ``[batch]`` for one position).

    Returns:
        ``logits [batch, seq, vocab] -> scalar tensor``.
    """
    correct = torch.as_tensor(correct).reshape(correct.shape[0], -1)
    wrong = torch.as_tensor(wrong).reshape(wrong.shape[0], -1)

    def fn(logits: torch.Tensor) -> torch.Tensor:
        b = logits.shape[0]
        pos = _pos_index(positions, b).to(logits.device)
        sel = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1]))  # [b, n, V]
        c = sel.gather(-1, correct.to(logits.device)[..., None])[..., 0]
        w = sel.gather(-1, wrong.to(logits.device)[..., None])[..., 0]
        return (c - w).float().mean()

    return fn


def _rows(logits: torch.Tensor, positions) -> torch.Tensor:
    """The float32 logit rows ``[batch, n, vocab]`` at ``positions`` (``[n]`` or ``[batch, n]``)."""
    pos = _pos_index(positions, logits.shape[0]).to(logits.device)
    return logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1])).float()


def logprob_metric(positions: torch.Tensor | Sequence[int], targets: torch.Tensor) -> Metric:
    """Mean log-probability of ``targets [batch, n]`` at ``positions`` (``[n]`` or
    ``[batch, n]``; = minus the loss on those positions; higher is better).

    Returns:
        ``logits [batch, seq, vocab] -> scalar tensor``.
    """

    def fn(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(_rows(logits, positions), dim=-1)
        return logp.gather(-1, targets.to(logits.device)[..., None])[..., 0].mean()

    return fn


def prob_metric(positions: torch.Tensor | Sequence[int], targets: torch.Tensor) -> Metric:
    """Mean probability of ``targets [batch, n]`` at ``positions`` (``[n]`` or ``[batch, n]``).

    Returns:
        ``logits [batch, seq, vocab] -> scalar tensor``.
    """

    def fn(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(_rows(logits, positions), -1)
        return probs.gather(-1, targets.to(logits.device)[..., None])[..., 0].mean()

    return fn


def normalise(value: float, clean: float, corrupted: float) -> float:
    """``(value - corrupted) / (clean - corrupted)``: 0 = corrupted run, 1 = clean run (NaN
    when the two runs score the same)."""
    den = clean - corrupted
    return float("nan") if abs(den) < 1e-12 else (value - corrupted) / den


@torch.no_grad()
def metric_of(model, tokens: torch.Tensor, metric: Metric, hooks=()) -> float:
    """``metric`` of one forward of ``tokens [batch, seq]`` with ``hooks`` (``(name, fn)``
    pairs) attached."""
    with attach(model, hooks):
        return float(metric(model(tokens)))


def chunked_metric(logits: torch.Tensor, metric: Metric, b: int) -> list[float]:
    """``metric`` of each block of ``b`` rows of ``logits [k * b, seq, vocab]`` (one block per
    patched copy of a ``b``-row batch): ``k`` floats."""
    return [float(metric(logits[i:i + b])) for i in range(0, logits.shape[0], b)]


def baseline(model, task: "PatchingTask") -> dict[str, float]:
    """``{"clean": metric of the clean run, "corrupted": metric of the corrupted run}``."""
    return {"clean": metric_of(model, task.clean, task.metric),
            "corrupted": metric_of(model, task.corrupted, task.metric)}
