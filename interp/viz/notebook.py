"""Plotly figures that render in every notebook front end, with no network.

Plotly's default renderer in a kernel emits only ``application/vnd.plotly.v1+json``, which
JupyterLab (with its plotly extension) draws and everything else -- the classic notebook,
nbviewer, nbconvert's HTML, an ``.ipynb`` opened offline in another tool -- shows as a blank
cell. Plotly's ``notebook`` renderer emits ``text/html`` but loads MathJax from a CDN and
puts plotly.js only into the output of the cell that activated it.

:func:`setup_notebook` (first cell of every notebook in ``notebooks/``) registers and selects
the renderer ``"interp_offline"``: each figure's output carries both

- ``application/vnd.plotly.v1+json`` -- preferred by JupyterLab and VS Code, and
- ``text/html`` -- the figure's div and ``Plotly.newPlot`` call with plotly.js inline in front
  of it (:func:`interp.viz.html.bundle_scripts`, script-safe; never a ``<script src=...>``),
  so every output renders on its own, in any order, offline.

The price is plotly.js (~4.6 MB) in every figure output of an executed notebook; the
notebooks kept in the repository carry no outputs.
"""
from __future__ import annotations

from plotly.io.base_renderers import MimetypeRenderer, PlotlyRenderer

RENDERER = "interp_offline"
MIMETYPE = "application/vnd.plotly.v1+json"
_CONFIG = {"displaylogo": False}


class OfflineRenderer(MimetypeRenderer):
    """Plotly's mimetype bundle plus a self-contained ``text/html`` (plotly.js inline)."""

    def __init__(self, config: dict | None = None):
        self.config = dict(_CONFIG if config is None else config)

    def to_mimebundle(self, fig_dict: dict) -> dict:
        import plotly.io as pio

        from interp.viz.html import PLOTLY, bundle_scripts

        bundle = PlotlyRenderer(config=self.config).to_mimebundle(dict(fig_dict))
        height = (fig_dict.get("layout") or {}).get("height") or 450
        div = pio.to_html(fig_dict, config=self.config, full_html=False,
                          include_plotlyjs=False, include_mathjax=False,
                          default_width="100%", default_height=f"{height}px", validate=False)
        bundle["text/html"] = bundle_scripts([PLOTLY]) + "\n" + div
        return bundle


def setup_notebook(config: dict | None = None) -> str:
    """Make ``"interp_offline"`` plotly's default renderer (see the module docs); call once at
    the top of a notebook (calling again is harmless). ``config``: plotly.js config of the
    figures (default: no plotly logo). Returns the renderer's name."""
    import plotly.io as pio

    pio.renderers[RENDERER] = OfflineRenderer(config)
    pio.renderers.default = RENDERER
    return RENDERER


__all__ = ["OfflineRenderer", "RENDERER", "setup_notebook"]
