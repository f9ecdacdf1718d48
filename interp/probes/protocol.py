"""The probe protocol: a probe states its reduction once, over a block of query rows, and one
runner feeds it the whole attention pattern or row blocks of it.

Architecture
------------
A probe is a :class:`RowProbe`, four things:

- ``layers``: the layers whose attention pattern it reads;
- :meth:`~RowProbe.hooks`: extra ``(hook_name, fn)`` pairs it needs besides the pattern (the
  sink probe's ``hook_k`` / ``hook_v`` norms); the runner attaches them in both methods;
- :meth:`~RowProbe.reduce` ``(layer, i0, j0, probs)``: ``probs [batch, head, rows, keys]`` are
  rows ``i0 .. i0 + rows`` of ``layer``'s pattern over keys ``j0 .. j0 + keys`` (keys outside
  that span have probability 0). It adds what it needs to running sums kept on the probe. It
  is called with the whole pattern at once or with consecutive row blocks (each layer's rows in
  order) and must give the same result either way;
- :meth:`~RowProbe.finish`: turns the sums into the result (a table, a tensor, ...).

:func:`run_probe` picks the method with :func:`~interp.probes.blockwise.choose_method`
(``"auto"``: blockwise once one layer's ``[b, h, n, n]`` pattern is large) and feeds the probe:

- ``"pattern"`` (:func:`run_pattern`): a hook on ``blocks.{l}.attn.hook_pattern`` of each probed
  layer calls ``reduce(l, 0, 0, pattern [b, h, n, n])`` with the model's own pattern (the
  reference; one layer's pattern exists at a time);
- ``"blockwise"`` (:func:`~interp.probes.blockwise.run_blockwise`): the layers run
  ``softmax_rows`` and every row block goes to ``reduce`` (never an ``[n, n]`` tensor).

Both run without gradients, stop the forward right after the last probed layer (a probe needs
no logits), and remove their hooks (and undo the swap) however the forward ends.

Progress: :func:`run_probe` shows a per-layer bar (``<name> probe``, :func:`interp.progress.bar`)
once a probe has run :data:`interp.progress.PROBE_DELAY` seconds, unless progress is off
(``interp probe --no-progress``, :func:`interp.progress.settings`); a probe of a small model
prints nothing.

Adding a probe: one file with a :class:`RowProbe` subclass and the public function that checks
its input, builds it and calls :func:`run_probe`. The probes here: :mod:`.sink`,
:mod:`.induction` (pattern scores), :mod:`.locality`, :mod:`.distraction`, :mod:`.patterns`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import torch

from interp.hooks import attach
from interp.probes.blockwise import (BLOCK_FLOATS, Reducer, StopForward, choose_method,
                                     probed_layers, run_blockwise)
from interp.probes.common import layer_of, pattern_hook_name

Hook = tuple[str, Callable]


class RowProbe(ABC):
    """A reduction of attention patterns, stated once over a block of query rows.

    Attributes:
        layers: the probed layers (the runner reads these layers' patterns only and stops
            the forward after the last one).
    """

    layers: Sequence[int]

    def hooks(self) -> list[Hook]:
        """Extra ``(hook_name, fn(activation, hook))`` pairs to attach for the run (default
        none). They must fire no later than the last probed layer's attention pattern."""
        return []

    @abstractmethod
    def reduce(self, layer: int, i0: int, j0: int, probs: torch.Tensor) -> None:
        """Add rows ``i0 ..`` of ``layer``'s pattern to the running sums.

        Args:
            layer: a layer of :attr:`layers`.
            i0: the first query row of the block.
            j0: the first key of the block's span.
            probs: ``[batch, head, rows, keys]`` attention probabilities of queries
                ``i0 .. i0 + rows`` over keys ``j0 .. j0 + keys`` (float32 from the blockwise
                path; the model's dtype from the pattern hook). Keys outside the span have
                probability 0.
        """

    @abstractmethod
    def finish(self) -> Any:
        """The probe's result, from the sums :meth:`reduce` collected."""


def as_float(probs: torch.Tensor) -> torch.Tensor:
    """``probs`` in a dtype to reduce in: float32 for half types, float32 / float64 kept (no
    copy)."""
    return probs if probs.dtype in (torch.float32, torch.float64) else probs.float()


def probe_name(probe: RowProbe) -> str:
    """How progress names ``probe``: its ``name`` attribute, else the class name without
    ``Probe`` (``InductionProbe`` -> ``induction``)."""
    name = getattr(probe, "name", None)
    if name:
        return str(name)
    cls = type(probe).__name__
    return (cls[:-len("Probe")] if cls.endswith("Probe") and cls != "Probe" else cls).lower()


def _counting(reduce: Reducer, layers: Sequence[int], n: int, bar) -> Reducer:
    """``reduce`` that also advances ``bar`` once per probed layer (after its last row
    block: rows up to ``n``)."""
    wanted = set(int(layer) for layer in layers)

    def wrapped(layer: int, i0: int, j0: int, probs: torch.Tensor) -> None:
        reduce(layer, i0, j0, probs)
        if layer in wanted and i0 + probs.shape[2] >= n:
            bar.update(1)

    return wrapped


@torch.no_grad()
def run_pattern(model, tokens: torch.Tensor, layers: Sequence[int], reduce: Reducer,
                hooks: Sequence[Hook] = ()) -> None:
    """Run ``tokens [b, n]`` through ``model`` up to the last of ``layers``, calling
    ``reduce(layer, 0, 0, pattern [b, h, n, n])`` with each probed layer's ``hook_pattern``.

    ``hooks``: extra ``(name, fn)`` pairs attached for the run. The forward stops right after
    the last probed layer's pattern; hooks are removed whatever happens.
    """
    probed = probed_layers(layers)
    last = probed[-1]

    def on_pattern(pattern: torch.Tensor, hook) -> None:      # [batch, head, query, key]
        layer = layer_of(hook.name)
        reduce(layer, 0, 0, pattern)
        if layer == last:
            raise StopForward

    try:
        with attach(model, [(pattern_hook_name(layer), on_pattern) for layer in probed]
                    + list(hooks)):
            model(tokens)
    except StopForward:
        return
    raise RuntimeError(f"the forward ended without reaching layer {last}'s attention pattern")


def run_probe(model, tokens: torch.Tensor, probe: RowProbe, method: str = "auto", *,
              max_floats: int = BLOCK_FLOATS, block_rows: int | None = None) -> Any:
    """Feed ``probe`` the attention of ``tokens [b, n]`` and return ``probe.finish()``.

    Args:
        model: a hooked model (:func:`interp.load_model`).
        tokens: checked token ids ``[b, n]`` (:func:`interp.probes.common.to_tokens`).
        probe: the :class:`RowProbe`.
        method: ``"pattern"`` (:func:`run_pattern`), ``"blockwise"``
            (:func:`~interp.probes.blockwise.run_blockwise`) or ``"auto"``
            (:func:`~interp.probes.blockwise.choose_method`).
        max_floats / block_rows: row-block size of the blockwise method.

    Raises:
        InputError: an unknown ``method`` or no layers to probe.
        Refused: ``"blockwise"`` on a layer the swapped forward cannot reproduce exactly (its
            message names the layer feature; use ``method="pattern"``).
    """
    from interp import progress

    chosen = choose_method(model, tokens, method)
    layers = probed_layers(probe.layers)
    bar = progress.bar(desc=f"{probe_name(probe)} probe", total=len(layers), unit="layer",
                       delay=progress.PROBE_DELAY, leave=None)
    reduce = _counting(probe.reduce, layers, int(tokens.shape[1]), bar)
    try:
        if chosen == "pattern":
            run_pattern(model, tokens, probe.layers, reduce, probe.hooks())
        else:
            run_blockwise(model, tokens, probe.layers, reduce, probe.hooks(),
                          max_floats=max_floats, block_rows=block_rows)
    finally:
        bar.close()
    return probe.finish()
