"""Probes: one module per question, each one reducer over blocks of attention rows.

- :mod:`.protocol` -- :class:`~.protocol.RowProbe` (``reduce(layer, i0, j0, probs [b, h, rows,
  keys])`` + ``finish()``) and :func:`~.protocol.run_probe`, which feeds it the whole
  ``hook_pattern`` (``method="pattern"``) or row blocks (``"blockwise"``).
- :mod:`.blockwise` -- the blockwise method (``softmax_rows`` row blocks), ``choose_method``.
- :mod:`.common` -- prompts -> checked token batches, the one prompt check, ProbeWarning.
- :mod:`.sink`, :mod:`.induction`, :mod:`.locality`, :mod:`.distraction`, :mod:`.patterns`
  -- the pattern probes (one RowProbe each); :mod:`.icl` (loss by position) and
  :mod:`.retrieval` (attention maps of retrieval models) read other activations.

A new pattern probe is one file here: a RowProbe subclass and the function that builds it
and calls ``run_probe`` (``tests/probes/test_protocol.py`` then checks it splits and resumes).

Nothing is imported here, so ``import interp.probes`` stays cheap.
"""
