"""In-context learning score (Olsson et al. 2022): loss at a late token minus loss at an
early token. Negative = the model predicts better with more context (about -0.4 nats for
the paper's models at tokens 500 vs 50)."""
from __future__ import annotations

import torch

from interp.errors import InputError
from interp.models.toy import token_losses
from interp.probes.common import check_tokens


@torch.no_grad()
def loss_by_position(model, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss per position over the batch: ``[seq-1]`` (index t = loss of
    predicting token t+1)."""
    tokens = check_tokens(model, tokens)
    return token_losses(model(tokens), tokens).mean(0).cpu()


def icl_score(model, tokens: torch.Tensor, early: int = 50, late: int = 500,
              window: int = 1) -> dict[str, float]:
    """``loss[late] - loss[early]`` averaged over the batch (and over ``window`` positions
    ending at each index, to reduce noise).

    Args:
        tokens: ``[batch, seq]`` with ``seq > late``; natural text for the paper's metric.

    Returns:
        ``{"icl_score", "loss_early", "loss_late"}``.
    """
    n = tokens.shape[-1]
    if not 0 < early < late < n:
        raise InputError(f"need 0 < early ({early}) < late ({late}) < sequence length ({n})")
    if not 1 <= window <= early:
        raise InputError(f"window must lie in [1, early], got {window}")
    losses = loss_by_position(model, tokens)          # index t predicts token t + 1
    # "loss at token k" = loss of predicting token k, i.e. index k - 1
    early_loss = losses[early - window:early].mean().item()
    late_loss = losses[late - window:late].mean().item()
    return {"icl_score": late_loss - early_loss, "loss_early": early_loss, "loss_late": late_loss}
