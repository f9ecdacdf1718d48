"""Training a :class:`RetrievalModel` on MQAR (on any device), and measuring recall.

- Every step draws a fresh MQAR batch (seed ``train.seed * 1_000_003 + step``), so the model
  cannot memorise a finite training set; the held-out test set is one batch of
  ``train.test_size`` rows drawn from seed ``1_000_000_007 + train.seed``.
- AdamW, linear warmup for ``warmup`` steps, then constant (default) or cosine decay to 10%;
  gradients clipped at 1.0; loss = cross-entropy over the query positions only. MQAR training
  has a plateau (loss ~ log(#pairs): "some value of this row") followed by a sharp drop when the
  lookup circuit forms (~250 steps for softmax with 8 pairs, seq 64, lr 3e-3, a short conv);
  a cosine decay that shrinks the learning rate before that drop delays it, hence the default.
- Accuracy = share of query positions (``targets != -100``) whose argmax logit is the value.
- Devices: the model is initialised on CPU (same weights everywhere) and moved to ``device``;
  every batch is drawn on CPU (same tokens everywhere) and moved there; ``dtype`` below
  float32 trains with mixed precision (:class:`interp.models.toy.TrainPrecision`). Only the
  logged losses and the accuracy come back to the host.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp.config import ConfigError, require_at_least
from interp.errors import InputError
from interp.models.toy import TrainPrecision, model_device
from interp.retrieval.model import RetrievalModel, RetrievalModelConfig
from interp.tasks import IGNORE_INDEX, MQARConfig, TaskBatch, mqar

TEST_SEED_OFFSET = 1_000_000_007


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (strict config).

    Attributes:
        steps: optimiser steps (one fresh batch each).
        batch_size: rows per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup: linear warmup steps.
        schedule: ``"cosine"`` (decay to 10% of ``lr``) or ``"constant"`` after warmup.
        test_size: rows of the held-out test set.
        seed: seed of the data streams (initialisation uses the model config's seed).
    """

    steps: int = 500
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: int = 20
    schedule: Literal["cosine", "constant"] = "constant"
    test_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least(self, ("steps", "batch_size", "test_size"), 1)
        if self.warmup < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("warmup and weight_decay must be >= 0 and lr > 0")

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "constant":
            return self.lr
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@dataclass
class TrainResult:
    """What :func:`train_mqar` returns.

    Attributes:
        model: the trained model (eval mode).
        accuracy: test accuracy over query positions.
        history: one row per logged step (``step``, ``loss``, ``lr``).
        seconds: wall time of training and evaluation.
    """

    model: RetrievalModel
    accuracy: float
    history: pd.DataFrame
    seconds: float


def mqar_test_set(task: MQARConfig, train: TrainConfig,
                  device: str | torch.device | None = None) -> TaskBatch:
    """The held-out MQAR test set: ``inputs, targets [test_size, seq_len]`` on ``device``
    (default CPU)."""
    return mqar(train.test_size, task.vocab_size, task.seq_len, task.num_kv_pairs,
                task.power_a, seed=TEST_SEED_OFFSET + train.seed, device=device)


def query_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over positions with ``targets != -100``; logits ``[b, n, V]``."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate(model: RetrievalModel, batch: TaskBatch, chunk: int = 256) -> float:
    """Accuracy of ``argmax logits`` at the positions where ``targets != -100`` (the batch is
    moved to the model's device chunk by chunk; counts stay there until the end)."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    correct = torch.zeros((), dtype=torch.long, device=dev)
    total = torch.zeros((), dtype=torch.long, device=dev)
    for s in range(0, batch.inputs.shape[0], chunk):
        x, y = batch.inputs[s:s + chunk].to(dev), batch.targets[s:s + chunk].to(dev)
        pred = model(x).argmax(-1)  # [b, n]
        mask = y != IGNORE_INDEX
        correct += (pred[mask] == y[mask]).sum()
        total += mask.sum()
    model.train(was_training)
    return int(correct) / max(1, int(total))


def train_mqar(
    model_cfg: RetrievalModelConfig,
    task: MQARConfig,
    train: TrainConfig,
    *,
    progress: bool = True,
    desc: str = "train",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> TrainResult:
    """Build a model from ``model_cfg``, train it on MQAR ``task`` and evaluate it.

    ``task.batch`` is ignored (``train.batch_size`` rows per step). ``device``: where the model
    and batches live (default CPU; ``"auto"``: CUDA when available); ``dtype``: compute dtype
    (default float32; lower ones train with mixed precision, float32 weights). Raises
    ``InputError`` if the task's sequences are longer than ``model_cfg.max_len`` or its
    vocabulary larger, or the device does not exist.
    """
    from interp.devices import resolve_device

    if task.seq_len > model_cfg.max_len or task.vocab_size > model_cfg.vocab_size:
        raise InputError(
            f"task (seq_len {task.seq_len}, vocab {task.vocab_size}) does not fit the model "
            f"(max_len {model_cfg.max_len}, vocab {model_cfg.vocab_size})")
    device = resolve_device(device) if device is not None else torch.device("cpu")
    precision = TrainPrecision(device, dtype)
    t0 = time.perf_counter()
    model = RetrievalModel(model_cfg).to(device)   # initialised on CPU: same weights anywhere
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay,
                            betas=(0.9, 0.98))
    rows = []
    bar = tqdm(range(train.steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        x, y = mqar(train.batch_size, task.vocab_size, task.seq_len, task.num_kv_pairs,
                    task.power_a, seed=train.seed * 1_000_003 + step, device=device)
        lr = train.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        with precision.autocast():
            logits = model(x)
        loss = query_loss(logits.float(), y)
        precision.step(loss, opt, model.parameters())
        if step % 25 == 0 or step == train.steps - 1:
            rows.append({"step": step + 1, "loss": loss.item(), "lr": lr})  # syncs: log steps
            bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}")
    model.eval()
    with precision.autocast():
        acc = evaluate(model, mqar_test_set(task, train, device=device))
    return TrainResult(model, acc, pd.DataFrame(rows), time.perf_counter() - t0)
