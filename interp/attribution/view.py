"""Figures of the logit lens and of direct logit attribution, and one page holding both.

- :func:`lens_figure`: layer x position heatmap of a :func:`~interp.attribution.top_tokens`
  table: each cell coloured by the top token's probability, the token written in it.
- :func:`dla_figures`: a DLA table as a layer x head heatmap (diverging, centred on 0) and a
  bar chart of the other components (embed, MLPs, attention output biases, final biases).
- :func:`attribution_view`: both on one standalone page (plotly.js inline, opens offline);
  what ``interp lens --html`` writes and what the circuit-run report embeds.
"""
from __future__ import annotations

import html as _html
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError
from interp.viz.figures import TEMPLATE, figure_html
from interp.viz.html import PLOTLY, View

#: longest token text written into a lens cell (longer ones end in an ellipsis)
CELL_CHARS = 8


def _short(token: str) -> str:
    text = token.replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "\u2026"


def lens_figure(top: pd.DataFrame, example: int = 0, position_labels: Sequence[str] | None = None,
                title: str | None = None) -> go.Figure:
    """Layer x position heatmap of the logit lens.

    Args:
        top: a :func:`~interp.attribution.top_tokens` table (rank 0 rows are drawn).
        example: which batch row.
        position_labels: the input token at each position (x-axis labels), or None.

    Returns:
        A heatmap: ``z[i][j]`` = probability of the top token at layer ``y[i]`` (0 = the
        embeddings), position ``x[j]``; the cell's text is that token.
    """
    need = {"example", "layer", "position", "rank", "token", "prob", "logit"}
    if not need <= set(top.columns):
        raise InputError(f"lens_figure needs a top_tokens table (columns {sorted(need)}); "
                         f"got {list(top.columns)}")
    rows = top[(top["rank"] == 0) & (top["example"] == example)]
    if rows.empty:
        raise InputError(f"lens_figure: no rank-0 rows for example {example}")
    layers = sorted(rows.layer.unique())
    positions = sorted(rows.position.unique())
    prob = rows.pivot(index="layer", columns="position", values="prob").reindex(
        index=layers, columns=positions)
    token = rows.pivot(index="layer", columns="position", values="token").reindex(
        index=layers, columns=positions)
    logit = rows.pivot(index="layer", columns="position", values="logit").reindex(
        index=layers, columns=positions)
    text = [[_short(str(t)) for t in r] for r in token.to_numpy()]
    full = [[_html.escape(repr(str(t))) for t in r] for r in token.to_numpy()]
    x = [str(p) for p in positions]
    if position_labels is not None:
        x = [f"{p}: {_short(position_labels[p])}" for p in positions]
    fig = go.Figure(go.Heatmap(
        z=prob.to_numpy(dtype=float), x=x, y=[int(l) for l in layers], text=text,
        texttemplate="%{text}", textfont=dict(size=9), colorscale="Blues", zmin=0, zmax=1,
        colorbar=dict(title="top prob"), customdata=np.dstack([full, logit.to_numpy()]),
        hovertemplate=("layer %{y}, position %{x}<br>top token %{customdata[0]}<br>"
                       "prob %{z:.3f}, logit %{customdata[1]:.2f}<extra></extra>")))
    fig.update_layout(
        title=title or "Logit lens: the top next token read from the residual after each block",
        template=TEMPLATE, xaxis=dict(title="position (input token)", type="category"),
        yaxis=dict(title="layer (0 = embeddings)", autorange="reversed", dtick=1),
        height=max(320, min(1000, 140 + 22 * len(layers))),
        width=max(480, min(1800, 160 + 62 * len(positions))))
    return fig


def _head_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["component"].str.match(r"^L\d+H\d+$")]


def dla_figures(df: pd.DataFrame, title: str | None = None) -> tuple[go.Figure, go.Figure]:
    """A direct-logit-attribution table as figures.

    Args:
        df: a :func:`~interp.attribution.direct_logit_attribution` table (batch mean).

    Returns:
        ``(heads, others)``: a layer x head heatmap of the head rows (RdBu, centred on 0:
        red writes toward the answer) and a bar chart of every other row in table order.
    """
    need = {"component", "layer", "head", "value"}
    if not need <= set(df.columns) or "example" in df.columns:
        raise InputError("dla_figures needs a batch-mean direct_logit_attribution table "
                         f"(columns {sorted(need)}, no 'example'); got {list(df.columns)}")
    heads = _head_rows(df)
    grid = heads.pivot(index="layer", columns="head", values="value").sort_index().sort_index(
        axis=1)
    bound = float(np.nanmax(np.abs(grid.to_numpy(dtype=float)))) if len(grid) else 1.0
    what = title or "Direct logit attribution"
    hm = go.Figure(go.Heatmap(
        z=grid.to_numpy(dtype=float), x=[int(h) for h in grid.columns],
        y=[int(l) for l in grid.index], colorscale="RdBu", reversescale=True, zmid=0,
        zmin=-bound, zmax=bound, colorbar=dict(title="logit"),
        hovertemplate="L%{y}H%{x}<br>%{z:.4f} logits<extra></extra>"))
    n_layers = len(grid.index)
    hm.update_layout(title=f"{what}: heads", template=TEMPLATE,
                     xaxis=dict(title="head", dtick=1),
                     yaxis=dict(title="layer", autorange="reversed",
                                dtick=1 if n_layers <= 32 else None),
                     height=max(320, min(900, 120 + 18 * n_layers)),
                     width=max(420, 140 + 40 * len(grid.columns)))
    rest = df.drop(heads.index)
    bars = go.Figure(go.Bar(
        x=list(rest.component), y=list(rest.value.astype(float)),
        marker_color=["#b2182b" if v >= 0 else "#2166ac" for v in rest.value],
        hovertemplate="%{x}<br>%{y:.4f} logits<extra></extra>"))
    bars.update_layout(title=f"{what}: embeddings, MLPs and biases", template=TEMPLATE,
                       xaxis=dict(title="component", type="category"),
                       yaxis=dict(title="logit"), height=360,
                       width=max(480, min(1800, 120 + 24 * len(rest))))
    return hm, bars


def attribution_view(top: pd.DataFrame, dla: pd.DataFrame | None = None,
                     position_labels: Sequence[str] | None = None,
                     title: str = "Logit lens and direct logit attribution",
                     caption: str | None = None) -> View:
    """One page: the lens heatmap (:func:`lens_figure`) and, given a DLA table, its head
    heatmap and component bars (:func:`dla_figures`). ``View.save(path)`` writes it
    standalone; in Jupyter it renders inline."""
    parts = [f"<h2>{_html.escape(title)}</h2>"]
    if caption:
        parts.append(f"<p>{_html.escape(caption)}</p>")
    parts.append(figure_html(lens_figure(top, position_labels=position_labels)))
    if dla is not None:
        diff = dla.attrs.get("logit_diff")
        if diff:
            parts.append(f"<p>Rows sum to the model's own logit difference, mean "
                         f"{float(np.mean(diff)):.4f} over {len(diff)} example(s).</p>")
        hm, bars = dla_figures(dla)
        parts += [figure_html(hm), figure_html(bars)]
    return View(body="\n".join(parts), needs=frozenset({PLOTLY}), title=title,
                meta={"layers": sorted(int(l) for l in top.layer.unique())})
