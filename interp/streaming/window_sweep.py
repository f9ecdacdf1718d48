"""How much the first tokens matter, as a function of the window: one masked forward per
(window, sinks) setting instead of a token-by-token stream.

With rotary positions, a query that sees only the keys ``(t - window, t]`` gets the same
logits whether the keys were cached with positions assigned inside the cache or kept at their
original positions: attention only sees position differences. So the window-only perplexity
of :func:`interp.streaming.evaluate_stream` can be measured for many windows with one forward
each, through :func:`interp.swap.swap_attention` with the ``"sink_window"`` implementation
(``n_sink=0``). With sinks the two differ slightly: here the sink keys stay at their original
distance from the query, while StreamingLLM's cache gives them positions ``0..sinks-1`` right
before the window (a few per cent in perplexity at window 16 on smollm2).
``tests/streaming/test_window_sweep.py`` checks both against the streaming cache.
"""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch
from torch import Tensor

from interp.errors import InputError
from interp.models.toy import token_losses
from interp.streaming.evaluate import _ppl
from interp.swap import swap_attention

COLUMNS = ["window", "sinks", "ppl", "ppl_beyond", "n_beyond"]


@torch.no_grad()
def window_sweep(model, tokens: Tensor, windows: Sequence[int] = (16, 32, 64, 128, 256),
                 sinks: Sequence[int] = (0, 4), progress: bool = False) -> pd.DataFrame:
    """Perplexity of ``model`` on ``tokens`` with every query restricted to the first
    ``sinks`` keys plus the ``window`` most recent keys (itself included), in all layers.

    Args:
        model: a hooked causal model from :func:`interp.load_model` (Llama-type or toy).
        tokens: ``[T]`` or ``[1, T]`` token ids, ``T`` within the model's context.
        windows: window sizes (positive ints).
        sinks: numbers of first tokens every query keeps (0 = window-only).
        progress: a tqdm bar over the settings.

    Returns:
        DataFrame with one row per setting plus a dense row (``window`` and ``sinks`` NaN):
        ``window, sinks, ppl`` (all ``T - 1`` predictions), ``ppl_beyond`` and ``n_beyond``
        (predictions of tokens at positions ``> max(windows) + max(sinks)``, where every
        setting has evicted the start of the text, so all rows are compared on the same
        tokens).

    Raises:
        InputError: (a ``ValueError``) empty or bad windows/sinks, ``T`` over the context,
            or a text too short to leave any token beyond the largest window.
    """
    from tqdm.auto import tqdm

    tokens = torch.as_tensor(tokens).long()
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise InputError(f"tokens must be [T] or [1, T], got shape {tuple(tokens.shape)}")
    windows, sinks = list(windows), list(sinks)
    if not windows or any(not isinstance(w, int) or w < 1 for w in windows):
        raise InputError(f"windows must be positive ints, got {windows}")
    if not sinks or any(not isinstance(s, int) or s < 0 for s in sinks):
        raise InputError(f"sinks must be non-negative ints, got {sinks}")
    T = tokens.shape[1]
    n_ctx = model.cfg.n_ctx
    if T > n_ctx:
        raise InputError(f"{T} tokens is over the model's context of {n_ctx}")
    start = max(windows) + max(sinks)
    if T - 1 <= start:
        raise InputError(f"{T} tokens leave none beyond the largest window + sinks ({start})")
    tokens = tokens.to(next(model.parameters()).device)

    def row(window, n_sink, nll: Tensor) -> dict:
        beyond = nll[start:]                    # nll[i] predicts token i + 1
        return {"window": window, "sinks": n_sink, "ppl": _ppl(nll), "ppl_beyond": _ppl(beyond),
                "n_beyond": int(beyond.numel())}

    rows = [row(math.nan, math.nan, token_losses(model(tokens), tokens)[0])]
    settings = [(w, s) for w in windows for s in sinks]
    for w, s in tqdm(settings, desc="windows", disable=not progress, leave=False):
        with swap_attention(model, "sink_window", n_sink=s, window=w):
            logits = model(tokens)
        rows.append(row(w, s, token_losses(logits, tokens)[0]))
    return pd.DataFrame(rows, columns=COLUMNS)


def blowup_table(sweep: pd.DataFrame, sinks: int | None = None) -> pd.DataFrame:
    """One row per window from a :func:`window_sweep` table: ``dense``, ``window_only``
    (sinks 0) and ``with_sinks`` perplexities beyond the window, and the ratios
    ``blowup = window_only / with_sinks`` and ``sink_vs_dense = with_sinks / dense``.

    Args:
        sweep: a :func:`window_sweep` result holding a ``sinks == 0`` row per window.
        sinks: which positive sink count to compare (default: the largest in ``sweep``).
    """
    dense = sweep[sweep["window"].isna()]["ppl_beyond"]
    if dense.empty:
        raise InputError("the sweep has no dense row")
    counts = sorted(int(s) for s in sweep["sinks"].dropna().unique())
    if 0 not in counts or not any(c > 0 for c in counts):
        raise InputError(f"need window-only (sinks 0) and sink rows, the sweep has sinks {counts}")
    k = max(counts) if sinks is None else sinks
    if k not in counts or k == 0:
        raise InputError(f"sinks={k} is not a positive sink count of the sweep ({counts})")
    d = float(dense.iloc[0])
    out = []
    for w, part in sweep.dropna(subset=["window"]).groupby("window", sort=True):
        alone = float(part[part["sinks"] == 0]["ppl_beyond"].iloc[0])
        kept = float(part[part["sinks"] == k]["ppl_beyond"].iloc[0])
        out.append({"window": int(w), "sinks": k, "dense": d, "window_only": alone,
                    "with_sinks": kept, "blowup": alone / kept, "sink_vs_dense": kept / d})
    return pd.DataFrame(out)
