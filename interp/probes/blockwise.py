"""The blockwise method of the probe runner (:mod:`interp.probes.protocol`): reduce each
layer's attention pattern a block of query rows at a time, never holding an ``[n, n]`` pattern.

Why: a probe that hooks ``hook_pattern`` holds ``batch x heads x n x n`` floats per layer
(an 8192-token probe of SmolLM2 holds 2.4 GB per layer; a 64k-token one 150 GB). Every probe
here needs only reductions of the pattern -- a few columns (sink), one diagonal or a
gathered key per query (previous token, induction), masked row sums (prefix matching,
duplicate token, a sparse layout's mass, a category's mass) -- and those can be taken one
block of rows at a time.

How: :func:`run_blockwise` swaps every layer up to the last probed one for
``softmax_rows`` (:mod:`interp.attention.rows`: the layer's exact softmax attention,
with its own scale, sliding window and soft-capping, computed a block of query rows at a
time), hands each probed layer's row blocks ``probs [b, h, rows, span]`` to the probe's
reducer (:meth:`RowProbe.reduce <interp.probes.protocol.RowProbe.reduce>`), and stops the
forward right after the last probed layer (a probe needs no logits). Memory: the model's
activations (``O(n d)`` per layer) plus one block of ``max_floats`` scores. Hooks are removed
and the swap is undone whatever happens.

The swapped forward is the one :func:`interp.swap_attention` uses (tested equal to each
family's own forward); families it cannot reproduce are refused with its error, naming
the layer feature. ``method="pattern"`` (the model's own ``hook_pattern``,
:func:`interp.probes.protocol.run_pattern`) stays the reference; :func:`choose_method` picks
between them (:data:`METHODS` is also the CLI's ``--method`` choices).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from interp.errors import InputError
from interp.hooks import attach
from interp.swap import swap_attention

METHODS = ("auto", "pattern", "blockwise")
#: ``method="auto"`` reduces blockwise once one layer's pattern (b * h * n * n) would hold
#: more floats than this (2^26 floats: 256 MB at float32)
AUTO_PATTERN_FLOATS = 1 << 26
#: scores held per row block by default (2^24 floats: 64 MB at float32)
BLOCK_FLOATS = 1 << 24

#: ``reduce(layer, i0, j0, probs [b, h, rows, span])``: rows ``i0..`` of ``layer``'s
#: pattern over keys ``j0..j0 + span`` (keys outside the span have probability 0)
Reducer = Callable[[int, int, int, torch.Tensor], None]


class StopForward(Exception):
    """Raised after the last probed layer's pattern (its last row block): the probe has what
    it needs, the rest of the forward is skipped."""


def probed_layers(layers: Sequence[int]) -> list[int]:
    """The distinct probed layers in order; InputError when there are none."""
    probed = sorted({int(layer) for layer in layers})
    if not probed:
        raise InputError("no layers to probe")
    return probed


def choose_method(model, tokens: torch.Tensor, method: str) -> str:
    """``"pattern"`` or ``"blockwise"`` for a probe of ``tokens [b, n]`` on ``model``.

    ``"auto"``: blockwise when one layer's ``[b, h, n, n]`` pattern would exceed
    :data:`AUTO_PATTERN_FLOATS` floats, else the pattern hook. Raises
    :class:`~interp.errors.InputError` for an unknown method."""
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    b, n = tokens.shape[:2]
    return "blockwise" if b * model.cfg.n_heads * n * n > AUTO_PATTERN_FLOATS else "pattern"


@torch.no_grad()
def run_blockwise(model, tokens: torch.Tensor, layers: Sequence[int], reduce: Reducer,
                  hooks: Sequence = (), *, max_floats: int = BLOCK_FLOATS,
                  block_rows: int | None = None) -> None:
    """Run ``tokens [b, n]`` through ``model`` up to the last of ``layers``, calling
    ``reduce(layer, i0, j0, probs)`` for each row block of each probed layer's pattern.

    Args:
        model: a hooked model (:func:`interp.load_model`).
        tokens: checked token ids ``[b, n]``.
        layers: probed layers (reduce is called for these only).
        reduce: see :data:`Reducer`.
        hooks: extra ``(name, fn)`` hooks to attach for the run (e.g. ``hook_k`` norms).
        max_floats / block_rows: row-block size (see :mod:`interp.attention.rows`).

    Raises:
        InputError: no layers to probe.
        Refused: a layer the swapped forward cannot reproduce exactly (its
            message names the layer feature; use ``method="pattern"``).
    """
    probed = probed_layers(layers)
    last, n = probed[-1], int(tokens.shape[1])
    wanted = set(probed)

    def on_rows(layer: int, i0: int, j0: int, probs: torch.Tensor) -> None:
        if layer in wanted:
            reduce(layer, i0, j0, probs)
        if layer == last and i0 + probs.shape[2] == n:
            raise StopForward

    try:
        with swap_attention(model, "softmax_rows", layers=list(range(last + 1)),
                            on_rows=on_rows, max_floats=max_floats, block_rows=block_rows):
            with attach(model, hooks):
                model(tokens)
    except StopForward:
        return
    raise RuntimeError(f"the forward ended without reaching layer {last}'s attention")


def gather_keys(probs: torch.Tensor, i0: int, j0: int, keys: torch.Tensor) -> torch.Tensor:
    """``probs [b, h, r, s]`` (rows ``i0..``, keys ``j0..``) at one key per row:
    ``keys [r]`` absolute key index per row (negative: none) -> ``[b, h, r]``, 0 where the key
    is none or outside the span (probability 0 there)."""
    b, h, r, s = probs.shape
    rel = keys - j0
    ok = (keys >= 0) & (rel >= 0) & (rel < s)
    idx = rel.clamp(0, s - 1).view(1, 1, r, 1).expand(b, h, r, 1)
    return probs.gather(-1, idx).squeeze(-1) * ok.to(probs.dtype)
