"""Plotly figures of probe tables, and saving a figure as a standalone offline page.

Every function takes a tidy DataFrame (as the probes return them) and returns a
``plotly.graph_objects.Figure`` -- shown inline by Jupyter, embedded by :mod:`interp.report`,
written standalone by :func:`save_figure` (plotly.js inline, no CDN).

- :func:`head_heatmap`: layer x head heatmap of any per-head score column.
- :func:`sink_curves`: a column against layer, one line per group (e.g. sink position).
- :func:`accuracy_vs_state`: accuracy against state size (log x), one trace per implementation.
- :func:`streaming_ppl`: perplexity against stream position, one trace per attention mode.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.results import atomic_write_text
from interp.errors import InputError

TEMPLATE = "plotly_white"


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what} needs column(s) {missing}; the table has {list(df.columns)}")


def head_heatmap(df: pd.DataFrame, column: str, title: str | None = None,
                 layer: str = "layer", head: str = "head", colorscale: str = "Viridis",
                 zmin: float | None = None, zmax: float | None = None) -> go.Figure:
    """Layer x head heatmap of ``df[column]`` (one row per (layer, head); extra rows for the
    same head, e.g. several layouts, must be filtered out first).

    The heatmap's ``z[i][j]`` is the value of layer ``y[i]``, head ``x[j]``; heads missing from
    the table are blank (NaN)."""
    _require(df, [layer, head, column], "head_heatmap")
    if df.duplicated([layer, head]).any():
        raise InputError(f"head_heatmap: several rows per ({layer}, {head}); filter the table "
                         f"to one row per head first")
    grid = df.pivot(index=layer, columns=head, values=column).sort_index().sort_index(axis=1)
    z = grid.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(
        z=z, x=[int(h) for h in grid.columns], y=[int(v) for v in grid.index],
        colorscale=colorscale, zmin=zmin, zmax=zmax, colorbar=dict(title=column),
        hovertemplate=f"layer %{{y}}, head %{{x}}<br>{column} %{{z:.4f}}<extra></extra>"))
    n_layers = len(grid.index)
    fig.update_layout(
        title=title or f"{column} per head", template=TEMPLATE,
        xaxis=dict(title="head", dtick=1), yaxis=dict(title="layer", autorange="reversed",
                                                      dtick=1 if n_layers <= 32 else None),
        height=max(320, min(900, 120 + 18 * n_layers)), width=max(420, 140 + 40 * len(grid.columns)))
    return fig


def sink_curves(df: pd.DataFrame, column: str = "mass", group: str | None = "position",
                title: str | None = None, layer: str = "layer") -> go.Figure:
    """``column`` against layer, one line per value of ``group`` (e.g. the sink position of
    :func:`interp.probes.sink.sink_summary`). Several rows per (layer, group), such as one
    per head, are averaged."""
    _require(df, [layer, column] + ([group] if group else []), "sink_curves")
    keys = [group, layer] if group else [layer]
    agg = df.groupby(keys, sort=True)[column].mean().reset_index()
    fig = go.Figure()
    for g, sub in (agg.groupby(group, sort=True) if group else [(None, agg)]):
        fig.add_trace(go.Scatter(x=sub[layer], y=sub[column], mode="lines+markers",
                                 name=f"{group} {g}" if group else column))
    fig.update_layout(title=title or f"{column} per layer", template=TEMPLATE,
                      xaxis_title="layer", yaxis_title=column, height=420,
                      legend_title_text=group or "")
    return fig


def accuracy_vs_state(df: pd.DataFrame, x: str = "state_size", y: str = "accuracy",
                      trace: str = "impl", title: str | None = None,
                      log_x: bool = True) -> go.Figure:
    """Accuracy against state size, one trace per implementation.

    Columns: ``state_size`` (floats a recurrent form carries, x axis, log scale), ``accuracy``
    (y, 0..1) and ``impl`` (the implementation name, one trace each); several rows at the
    same x for one implementation are averaged."""
    _require(df, [x, y, trace], "accuracy_vs_state")
    agg = df.groupby([trace, x], sort=True)[y].mean().reset_index()
    fig = go.Figure()
    for name in dict.fromkeys(df[trace]):
        sub = agg[agg[trace] == name].sort_values(x)
        fig.add_trace(go.Scatter(x=sub[x], y=sub[y], mode="lines+markers", name=str(name)))
    fig.update_layout(title=title or f"{y} vs {x}", template=TEMPLATE, height=440,
                      xaxis=dict(title=x, type="log" if log_x else "linear"),
                      yaxis=dict(title=y, range=[0, 1.05]), legend_title_text=trace)
    return fig


def streaming_ppl(df: pd.DataFrame, x: str = "end", y: str = "ppl", trace: str = "mode",
                  title: str | None = None, log_y: bool = True) -> go.Figure:
    """Perplexity against stream position, one trace per mode.

    Columns: ``end`` (stream position in tokens, e.g. the end of each chunk of
    :class:`interp.streaming.StreamResult.chunks`), ``ppl`` and ``mode``."""
    _require(df, [x, y, trace], "streaming_ppl")
    fig = go.Figure()
    for name in dict.fromkeys(df[trace]):
        sub = df[df[trace] == name].sort_values(x)
        fig.add_trace(go.Scatter(x=sub[x], y=sub[y], mode="lines+markers", name=str(name)))
    fig.update_layout(title=title or "perplexity along the stream", template=TEMPLATE,
                      height=440, xaxis_title="stream position (tokens)",
                      yaxis=dict(title=y, type="log" if log_y else "linear"),
                      legend_title_text=trace)
    return fig


def heatmap_values(fig: go.Figure, trace: int = 0) -> pd.DataFrame:
    """Read a heatmap back as a long table ``y, x, z`` (for checks and exports)."""
    hm = fig.data[trace]
    z = np.asarray(hm.z, dtype=float)
    rows = [{"y": yv, "x": xv, "z": z[i, j]}
            for i, yv in enumerate(hm.y) for j, xv in enumerate(hm.x)]
    return pd.DataFrame(rows)


def figure_html(fig: go.Figure, include_plotlyjs: bool | str = False) -> str:
    """An HTML fragment of ``fig`` (a div + its ``Plotly.newPlot`` call). ``include_plotlyjs``
    False: the page must carry plotly.js (the report does, once); True: inline; never a CDN."""
    if include_plotlyjs not in (True, False, "directory"):
        raise InputError("include_plotlyjs must be True, False or 'directory' (no CDN)")
    height = fig.layout.height or 450
    return fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs,
                       include_mathjax=False, default_height=f"{height}px",
                       default_width="100%", config={"displaylogo": False})


def save_figure(fig: go.Figure, path: str | Path, plotlyjs: str = "inline") -> Path:
    """Write ``fig`` as an HTML page that needs no network; atomic.

    Args:
        plotlyjs: ``"inline"`` (default): plotly.js inside the page, fully standalone.
            ``"directory"``: the page loads ``plotly.min.js`` from its own folder, written
            there once (for folders of many figures; keep the two files together).
    """
    if plotlyjs not in ("inline", "directory"):
        raise InputError(f"plotlyjs must be 'inline' or 'directory', got {plotlyjs!r}")
    path = Path(path)
    if plotlyjs == "directory":
        from interp.viz.html import plotly_js

        js = path.parent / "plotly.min.js"
        if not js.is_file():
            atomic_write_text(js, plotly_js())
    text = fig.to_html(full_html=True, include_plotlyjs=True if plotlyjs == "inline" else "directory",
                       include_mathjax=False, config={"displaylogo": False})
    return atomic_write_text(path, text)


def matrix_heatmap(df: pd.DataFrame, row: str, col: str, value: str, title: str | None = None,
                   colorscale: str = "Viridis", row_title: str | None = None,
                   col_title: str | None = None) -> go.Figure:
    """Heatmap of ``value`` with one row per value of ``row`` and one column per value of
    ``col`` (in order of first appearance; missing combinations blank), e.g. composition
    scores of source heads (rows) into destination heads (columns)."""
    _require(df, [row, col, value], "matrix_heatmap")
    rows = list(dict.fromkeys(df[row]))
    cols = list(dict.fromkeys(df[col]))
    grid = df.pivot_table(index=row, columns=col, values=value, aggfunc="mean")
    grid = grid.reindex(index=rows, columns=cols)
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(dtype=float), x=[str(c) for c in cols], y=[str(r) for r in rows],
        colorscale=colorscale, colorbar=dict(title=value),
        hovertemplate=f"{row} %{{y}}<br>{col} %{{x}}<br>{value} %{{z:.4f}}<extra></extra>"))
    fig.update_layout(title=title or value, template=TEMPLATE,
                      xaxis=dict(title=col_title or col, type="category"),
                      yaxis=dict(title=row_title or row, type="category", autorange="reversed"),
                      height=max(320, 140 + 36 * len(rows)))
    return fig
