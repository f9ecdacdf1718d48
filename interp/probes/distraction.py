"""Distraction probe: where does the attention of the answer position go -- to the relevant
fact, to distractors (irrelevant facts about other entities), to opinions, or elsewhere?

Motivation: System 2 Attention (Weston & Sukhbaatar 2023) argues that soft attention gives
weight to irrelevant or opinionated context, and rewrites the context to drop it. This probe
measures that weight directly.

Definition
----------
For a prompt whose characters are labelled (``relevant``, ``distractor``, ``opinion``,
``question``; every other character -- chat template, system prompt, the BOS/sink token --
is ``template``), each token gets one label: the label covering most of its characters
(taken from the tokenizer's ``return_offsets_mapping=True``; ties go to the label of its first
non-space character). For query position ``q`` (default the last prompt token, where the
first answer token is generated) and head ``(l, h)``::

    mass_c(l, h) = sum_{k : label(k) = c} A_{l,h}[q, k]

so the masses of all categories sum to 1 for every head (softmax rows sum to 1).

Architecture
------------
:func:`token_labels` maps character spans to token labels. :func:`distraction_scores` runs
one forward per prompt (prompts differ in length; no padding to get wrong) of a
:class:`DistractionProbe` (:mod:`interp.probes.protocol`): its reducer keeps only the query
row ``[head, key]`` of a block of rows ``[batch, head, rows, keys]`` and reduces it to
``[head, n_categories]`` at once; the runner feeds it each probed layer's whole
``hook_pattern`` (``method="pattern"``) or, for long prompts, row blocks that never hold the
pattern (``"blockwise"``, :mod:`interp.probes.blockwise`).
Returns one tidy row per (prompt, layer, head); :func:`distraction_summary` averages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch

from interp.errors import InputError
from interp.probes.common import check_tokens
from interp.probes.protocol import RowProbe, run_probe

CATEGORIES = ("relevant", "distractor", "opinion", "question", "template")
DEFAULT_LABEL = "template"


@dataclass(frozen=True)
class LabelledPrompt:
    """A full prompt string (already chat-formatted) with labelled character spans.

    Attributes:
        id: name of the prompt (shown in the result table).
        text: the exact string that is tokenized (no special tokens added).
        spans: ``(start, end, label)`` character spans of ``text``, half-open, not
            overlapping; labels from :data:`CATEGORIES`. Uncovered characters are
            ``template``.
    """

    id: str
    text: str
    spans: tuple[tuple[int, int, str], ...]

    def __post_init__(self):
        last = 0
        for s, e, lab in sorted(self.spans):
            if lab not in CATEGORIES:
                raise InputError(f"{self.id}: unknown label {lab!r}; use one of {CATEGORIES}")
            if not 0 <= s <= e <= len(self.text):
                raise InputError(f"{self.id}: span ({s}, {e}) outside a text of "
                                 f"{len(self.text)} characters")
            if s < last:
                raise InputError(f"{self.id}: spans overlap at character {s}")
            last = e


def char_labels(text: str, spans: Sequence[tuple[int, int, str]]) -> list[str]:
    """One label per character of ``text``."""
    out = [DEFAULT_LABEL] * len(text)
    for s, e, lab in spans:
        out[s:e] = [lab] * (e - s)
    return out


def token_labels(tokenizer, text: str, spans: Sequence[tuple[int, int, str]]
                 ) -> tuple[list[int], list[str], list[tuple[int, int]]]:
    """Tokenize ``text`` (no special tokens added) and label each token.

    Returns:
        ``(ids, labels, offsets)``: token ids, one label per token (majority of its
        characters; ties -> its first non-space character), and the character offsets.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    chars = char_labels(text, spans)
    labels = []
    for s, e in enc.offset_mapping:
        if e <= s:
            labels.append(DEFAULT_LABEL)
            continue
        seg = chars[s:e]
        counts = {lab: seg.count(lab) for lab in set(seg)}
        best = max(counts.values())
        tied = [lab for lab, c in counts.items() if c == best]
        if len(tied) > 1:
            first = next((i for i in range(s, e) if not text[i].isspace()), s)
            lab = chars[first] if chars[first] in tied else sorted(tied)[0]
        else:
            lab = tied[0]
        labels.append(lab)
    return list(enc.input_ids), labels, [tuple(o) for o in enc.offset_mapping]


class DistractionProbe(RowProbe):
    """The distraction reduction: the query row ``q`` of each layer's pattern (of the first
    prompt of the batch) times the key -> category one-hot ``[n, n_categories]`` -> the mass per
    category ``[h, n_categories]`` (float64), from whichever row block holds ``q``.

    Args:
        labels: one category label per token. query: the query position (``0 <= q < n``).
        layers: the probed layers. device: where the tokens live.
    """

    def __init__(self, labels: Sequence[str], query: int, layers: list[int], device):
        self.query, self.layers = query, layers
        self.onehot = torch.zeros(len(labels), len(CATEGORIES), device=device)  # [key, cat]
        for k, lab in enumerate(labels):
            self.onehot[k, CATEGORIES.index(lab)] = 1.0
        self.masses: dict[int, torch.Tensor] = {}

    def reduce(self, layer: int, i0: int, j0: int, probs: torch.Tensor) -> None:
        q = self.query                                                     # [b, h, r, s]
        if i0 <= q < i0 + probs.shape[2]:
            self.masses[layer] = (probs[0, :, q - i0, :].double()
                                  @ self.onehot[j0:j0 + probs.shape[3]].double())

    def finish(self) -> dict[int, torch.Tensor]:
        """``{layer: mass [h, n_categories]}``."""
        return self.masses


def distraction_scores(model, examples: Sequence[LabelledPrompt],
                       layers: Sequence[int] | None = None, query: int = -1, tokenizer=None,
                       progress=None, method: str = "auto") -> pd.DataFrame:
    """Attention mass from the answer position to each category, per prompt, layer, head.

    Args:
        model: a hooked causal model (:func:`interp.load_model`).
        examples: :class:`LabelledPrompt` s (or objects with ``.labelled_prompt(tokenizer)``).
        layers: layers to probe (default all).
        query: query position (default ``-1``: the last prompt token).
        tokenizer: default ``model.tokenizer``.
        progress: optional ``fn(iterable, desc=..., total=...)`` wrapping the loop (tqdm).
        method: ``"pattern"`` (keep the query row of each layer's ``hook_pattern``),
            ``"blockwise"`` (take that row from a block of query rows at a time, never an
            ``[n, n]`` pattern, and stop after the last probed layer:
            :mod:`interp.probes.blockwise`) or ``"auto"`` (blockwise for long prompts).

    Returns:
        One row per (example, layer, head): ``example, layer, head``, one mass column per
        category in :data:`CATEGORIES` (they sum to 1 per row), and ``n_<category>`` token
        counts of the prompt.
    """
    tok = tokenizer if tokenizer is not None else model.tokenizer
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    items = list(examples)
    if not items:
        raise InputError("no examples given")
    loop = progress(items, desc="distraction", total=len(items)) if progress else items
    rows = []
    for ex in loop:
        if not isinstance(ex, LabelledPrompt):
            ex = ex.labelled_prompt(tok)
        ids, labels, _ = token_labels(tok, ex.text, ex.spans)
        tokens = check_tokens(model, torch.tensor([ids]))
        probe = DistractionProbe(labels, query % tokens.shape[1], layers, tokens.device)
        masses = run_probe(model, tokens, probe, method)
        counts = probe.onehot.sum(0)
        extra = {f"n_{c}": int(counts[i]) for i, c in enumerate(CATEGORIES)}
        for layer in layers:
            m = masses[layer]                                              # [h, category]
            for h in range(m.shape[0]):
                rows.append({"example": ex.id, "layer": layer, "head": h,
                             **{c: float(m[h, i]) for i, c in enumerate(CATEGORIES)}, **extra})
    cols = ["example", "layer", "head", *CATEGORIES, *(f"n_{c}" for c in CATEGORIES)]
    return pd.DataFrame(rows, columns=cols)


def distraction_summary(scores: pd.DataFrame, by: Sequence[str] = ("layer",)) -> pd.DataFrame:
    """Mean of each category's mass over everything not in ``by`` (e.g. per layer: over
    heads and examples; ``by=()``: one row overall)."""
    if not by:
        return scores[list(CATEGORIES)].mean().to_frame().T
    return scores.groupby(list(by), sort=True)[list(CATEGORIES)].mean().reset_index()
