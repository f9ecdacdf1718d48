"""Views that work offline: circuitsvis attention patterns and plotly figures. Tensors and
tables in, HTML out: nothing here runs a model forward.

- :func:`attention_html` -- collected attention patterns ``[heads, w, w]`` as a :class:`View`
  (``_repr_html_`` for Jupyter, ``.save(path)`` for a standalone page). The circuitsvis JS
  bundle is always inline; circuitsvis' CDN import is never used. To collect the patterns of
  chosen heads on a prompt and render them in one call, use
  :func:`interp.probes.patterns.attention_view`.
- :func:`head_heatmap`, :func:`matrix_heatmap`, :func:`sink_curves`,
  :func:`accuracy_vs_state`, :func:`streaming_ppl` -- plotly figures of probe tables.
- :func:`save_figure` -- a figure as a standalone page with plotly.js inline.
- :func:`setup_notebook` -- plotly figures in a notebook also carry ``text/html`` with
  plotly.js inline, so they render outside JupyterLab too (classic, nbviewer, offline).
- The run report (:mod:`interp.report`) embeds all of these in one self-contained page.
"""
from interp.viz.attention import attention_html
from interp.viz.figures import (accuracy_vs_state, figure_html, head_heatmap, heatmap_values,
                                matrix_heatmap, save_figure, sink_curves, streaming_ppl)
from interp.viz.html import View, has_cdn_script
from interp.viz.notebook import setup_notebook

__all__ = ["View", "accuracy_vs_state", "attention_html", "figure_html", "has_cdn_script",
           "head_heatmap", "heatmap_values", "matrix_heatmap", "save_figure", "setup_notebook",
           "sink_curves", "streaming_ppl"]
