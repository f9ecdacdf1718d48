"""Induction-head probe: attention-pattern scores and the OV copying score for every head.

Definitions (Olsson et al. 2022; Elhage et al. 2021). The four pattern scores are one
:class:`InductionProbe` (:mod:`interp.probes.protocol`): its reducer takes per-head sums over
(batch, query) from a block of query rows ``[batch, head, rows, keys]`` -- the whole
``hook_pattern`` of each layer in ONE batched forward (``method="pattern"``), or row blocks that
never hold the pattern for long prompts (``"blockwise"``, :mod:`interp.probes.blockwise`) --
and ``finish`` divides by the number of queries each score averages over:

- ``induction``: on repeated random tokens (segment of length ``seg_len`` repeated, optional
  BOS), attention from a token in a later copy to the token right after its occurrence in the
  previous copy (key ``i - seg_len + 1``), averaged over the queries of copies 2..k. Without
  a known ``seg_len`` this falls back to ``prefix_matching``.
- ``prefix_matching``: attention mass on keys ``j`` whose previous token equals the query's
  token (``tokens[j-1] == tokens[i]``, ``j - 1 < i``), averaged over queries that have one.
- ``previous_token``: attention to key ``i - 1``, averaged over queries ``i >= 1``.
- ``duplicate_token``: attention mass on earlier keys holding the query's own token
  (``tokens[j] == tokens[i]``, ``j < i``), averaged over queries that have one.
- ``copying``: sum(eigenvalues) / sum(|eigenvalues|) of the head's full OV circuit
  ``W_E W_V W_O W_U`` (vocab x vocab); positive = the head copies the tokens it attends to.
  Computed exactly from the ``d_head x d_head`` matrix ``W_O W_U W_E W_V``, which has the same
  non-zero eigenvalues.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import pandas as pd
import torch

from interp.errors import InputError
from interp.models.loading import ensure_info
from interp.probes.blockwise import gather_keys
from interp.probes.common import ProbeWarning, check_prompt, check_tokens
from interp.probes.protocol import RowProbe, as_float, run_probe
from interp.tasks import repeated_tokens
from interp.weights import head_weights

SCORE_COLUMNS = ["induction", "prefix_matching", "previous_token", "duplicate_token", "copying"]


def bos_id(model) -> int | None:
    """The token the model's convention puts first (None when it prepends nothing)."""
    tok = model.tokenizer
    if ensure_info(model).kind == "toy":
        return None
    if tok is not None and tok.bos_token_id is not None and model.cfg.default_prepend_bos:
        return int(tok.bos_token_id)
    if tok is not None and tok.cls_token_id is not None:
        return int(tok.cls_token_id)
    return None


def repeated_random_tokens(model, batch: int = 8, seg_len: int = 50, n_repeats: int = 2,
                           seed: int = 0, low: int | None = None) -> torch.Tensor:
    """``[batch, (1 if BOS) + seg_len * n_repeats]`` random segments repeated, with the
    model's BOS first when it uses one. Ids are drawn from ``[low, vocab)``; ``low``
    defaults to 1000 for tokenized models (away from special and byte tokens), 0 for toys."""
    bos = bos_id(model)
    if low is None:
        low = 0 if model.tokenizer is None else min(1000, model.cfg.d_vocab // 2)
    toks = repeated_tokens(batch, seg_len, n_repeats=n_repeats, vocab_size=model.cfg.d_vocab,
                           bos_token=bos, seed=seed, low=low)
    return check_tokens(model, toks)


def _seen_before(tokens: torch.Tensor) -> torch.Tensor:
    """``[b, n]`` bool: ``tokens[b, i]`` occurs at some position ``< i`` of its row (the
    queries that have a duplicate-token key, and equally a prefix-matching key). O(n log n)."""
    srt, order = tokens.sort(dim=-1, stable=True)
    repeat = torch.zeros_like(tokens, dtype=torch.bool)
    repeat[:, 1:] = srt[:, 1:] == srt[:, :-1]     # not the first (leftmost) of its run
    return torch.zeros_like(repeat).scatter(1, order, repeat)


class InductionProbe(RowProbe):
    """The pattern scores of :func:`pattern_scores` as one reducer: per layer, sums over
    (batch, query) of each score ``[h]`` (float64), from a block of query rows; ``finish``
    divides by the number of queries each score averages over.

    Args:
        tokens: ``[b, n]``.
        seg_len: the repeated segment's length (None: induction = prefix matching).
        first_q: the first query of the second copy (``offset + seg_len``).
        layers: the probed layers.
    """

    def __init__(self, tokens: torch.Tensor, seg_len: int | None, first_q: int,
                 layers: list[int]):
        self.tokens, self.seg_len, self.first_q, self.layers = tokens, seg_len, first_q, layers
        self.prev_tok = torch.cat([tokens[:, :1] * 0 - 1, tokens[:, :-1]], dim=1)  # tokens[j-1]
        self.pos = torch.arange(tokens.shape[1], device=tokens.device)
        self.sums: dict[int, dict[str, torch.Tensor]] = {}
        self._masks: tuple[tuple[int, int, int, int], torch.Tensor, torch.Tensor] | None = None

    def masks(self, i0: int, j0: int, r: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix-matching and duplicate-token key masks ``[b, r, s]`` (bool) of the block
        (kept for the next call: every layer's pattern has the same blocks)."""
        if self._masks is None or self._masks[0] != (i0, j0, r, s):
            i, j = self.pos[i0:i0 + r], self.pos[j0:j0 + s]
            ti = self.tokens[:, i0:i0 + r, None]                              # [b, r, 1]
            dup = (ti == self.tokens[:, None, j0:j0 + s]) & (j[None, :] < i[:, None])
            prefix = ((ti == self.prev_tok[:, None, j0:j0 + s]) & (j >= 1)
                      & (j[None, :] - 1 < i[:, None]))
            self._masks = ((i0, j0, r, s), prefix, dup)
        return self._masks[1], self._masks[2]

    def reduce(self, layer: int, i0: int, j0: int, probs: torch.Tensor) -> None:
        p = as_float(probs)                                                   # [b, h, r, s]
        r, s = p.shape[2], p.shape[3]
        i = self.pos[i0:i0 + r]
        acc = self.sums.setdefault(layer, {})

        def add(name: str, value: torch.Tensor) -> None:                     # value [h]
            acc[name] = acc.get(name, 0) + value.double()

        add("previous_token", gather_keys(p, i0, j0, i - 1).sum(dim=(0, 2)))
        if self.seg_len is not None:
            key = torch.where(i >= self.first_q, i - (self.seg_len - 1), -1)
            add("induction", gather_keys(p, i0, j0, key).sum(dim=(0, 2)))
        prefix, dup = self.masks(i0, j0, r, s)
        # masked sums as batched dot products (no [b, h, r, s] temporary)
        add("prefix_matching", torch.einsum("bhrs,brs->h", p, prefix.to(p.dtype)))
        add("duplicate_token", torch.einsum("bhrs,brs->h", p, dup.to(p.dtype)))

    def finish(self) -> dict[int, dict[str, torch.Tensor]]:
        """``{layer: {score: [h] float32 (CPU)}}`` for the four pattern scores."""
        b, n = self.tokens.shape
        seen = _seen_before(self.tokens).sum().clamp_min(1).double()
        counts = {"previous_token": b * (n - 1), "prefix_matching": seen,
                  "duplicate_token": seen, "induction": b * (n - self.first_q)}
        out = {}
        for layer in self.layers:
            acc = dict(self.sums[layer])
            if self.seg_len is None:              # no known segment: induction = prefix matching
                acc["induction"], counts["induction"] = acc["prefix_matching"], seen
            out[layer] = {k: (acc[k] / counts[k]).float().cpu() for k in SCORE_COLUMNS[:4]}
        return out


def pattern_scores(model, tokens: torch.Tensor, seg_len: int | None = None,
                   offset: int | None = None, layers: Sequence[int] | None = None,
                   method: str = "auto") -> pd.DataFrame:
    """Pattern-based scores (induction, prefix_matching, previous_token, duplicate_token).

    Args:
        tokens: ``[batch, seq]``.
        seg_len: length of the repeated segment (enables the ``induction`` column).
        offset: position of the first segment's first token (1 with BOS, else 0; default:
            1 if every row starts with the model's BOS id, else 0).
        method: ``"pattern"`` (reduce each layer's ``hook_pattern``), ``"blockwise"``
            (reduce a block of query rows at a time, never holding an ``[n, n]`` pattern or
            mask: :mod:`interp.probes.blockwise`; for long natural text) or ``"auto"``
            (blockwise for long prompts).

    Raises :class:`~interp.errors.InputError` for fewer than 2 tokens or a ``seg_len`` that
    does not fit; issues a :class:`~interp.probes.common.ProbeWarning` when no token repeats
    (induction, prefix matching and duplicate-token scores are then 0 by definition).

    Returns:
        DataFrame, one row per (layer, head).
    """
    tokens = check_prompt(check_tokens(model, tokens), "induction", 2,
                          why="previous-token scores need a query after the first token",
                          repeats=True)
    n = tokens.shape[1]
    if offset is None:      # a leading BOS (by the model's convention or the tokenizer's id)
        tok = getattr(model, "tokenizer", None)
        starts = {bos_id(model), getattr(tok, "bos_token_id", None)} - {None}
        offset = int(any(bool((tokens[:, 0] == t).all()) for t in starts))
    if seg_len is not None and not 1 <= seg_len <= (n - offset) // 2:
        raise InputError(f"seg_len {seg_len} does not fit a repeated sequence of {n} tokens")
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    probe = InductionProbe(tokens, seg_len, offset + (seg_len or 0), layers)
    return _score_table(model, layers, run_probe(model, tokens, probe, method))


def _score_table(model, layers: Sequence[int], out: dict[int, dict[str, torch.Tensor]]
                 ) -> pd.DataFrame:
    rows = []
    for layer in layers:
        for h in range(model.cfg.n_heads):
            rows.append({"layer": layer, "head": h,
                         **{k: out[layer][k][h].item() for k in SCORE_COLUMNS[:4]}})
    return pd.DataFrame(rows)


@torch.no_grad()
def copying_scores(model) -> pd.DataFrame:
    """``copying`` per (layer, head): eigenvalue score of the OV circuit W_E W_V W_O W_U
    (folds per family: :func:`interp.weights.head_weights`).

    Raises :class:`~interp.errors.InputError` (a ValueError) where those matrices are not a
    direct path of the model (post-LN encoders such as BERT: ``HeadWeights.direct_path``
    names why)."""
    from interp import progress

    w = head_weights(model)
    if w.direct_path:
        raise InputError(f"copying scores: {w.direct_path}")
    # a per-layer bar: the W_U W_E product and the eigenvalues take seconds on a large vocab
    bar = progress.bar(desc="copying scores", total=w.n_layers, unit="layer",
                       delay=progress.PROBE_DELAY, leave=None)
    try:
        UE = w.W_U @ w.W_E                                           # [d_model, d_model]
        rows = []
        for layer in range(w.n_layers):
            M = torch.einsum("hed,df,hfk->hek", w.W_O[layer], UE, w.W_V[layer])  # [H, dh, dh]
            eig = torch.linalg.eigvals(M.double().cpu())             # [H, dh] (CPU)
            score = eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-30)
            rows += [{"layer": layer, "head": h, "copying": score[h].item()}
                     for h in range(w.n_heads)]
            bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame(rows)


def induction_scores(model, tokens: torch.Tensor | None = None, *, seg_len: int | None = 50,
                     batch: int = 8, n_repeats: int = 2, seed: int = 0,
                     layers: Sequence[int] | None = None, method: str = "auto") -> pd.DataFrame:
    """All induction-circuit scores for every head, one row per (layer, head).

    Args:
        model: a hooked decoder (pretrained or toy).
        tokens: ``[batch, seq]``; default: :func:`repeated_random_tokens` with ``batch``,
            ``seg_len``, ``n_repeats`` and ``seed``. With your own tokens, pass their
            ``seg_len`` (or None for arbitrary text: induction = prefix matching, the
            attention to the token after each earlier occurrence of the query's token).
        method: see :func:`pattern_scores` (``"auto"``: blockwise for long prompts).

    Returns:
        DataFrame with columns ``layer, head, induction, prefix_matching, previous_token,
        duplicate_token, copying``.
    """
    if tokens is None:
        if seg_len is None:
            raise InputError("seg_len is needed to build repeated random tokens")
        tokens = repeated_random_tokens(model, batch=batch, seg_len=seg_len,
                                        n_repeats=n_repeats, seed=seed)
    df = pattern_scores(model, tokens, seg_len=seg_len, layers=layers, method=method)
    direct = head_weights(model).direct_path
    if direct:                                   # pattern scores hold; copying has no meaning
        warnings.warn(f"copying is NaN: {direct}", ProbeWarning, stacklevel=2)
        df["copying"] = float("nan")
        return df[["layer", "head", *SCORE_COLUMNS]]
    cp = copying_scores(model)
    df = df.merge(cp, on=["layer", "head"], how="left")
    return df[["layer", "head", *SCORE_COLUMNS]]


def top_heads(df: pd.DataFrame, column: str = "induction", k: int = 5) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs with the highest ``column``."""
    top = df.nlargest(k, column)
    return [(int(r.layer), int(r.head)) for r in top.itertuples()]
