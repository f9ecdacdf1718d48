"""Plotly figures of a retrieval sweep table (one subplot per number of key-value pairs, one
trace per implementation, shared legend)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots


def _figure(table: pd.DataFrame, x: str, title: str, x_title: str, log_x: bool) -> go.Figure:
    pairs = sorted(table["num_kv_pairs"].unique())
    fig = make_subplots(rows=1, cols=len(pairs), shared_yaxes=True,
                        subplot_titles=[f"{p} key-value pairs" for p in pairs])
    colors = qualitative.Plotly + qualitative.D3
    impls = list(dict.fromkeys(table["impl"]))
    for i, impl in enumerate(impls):
        for c, p in enumerate(pairs, start=1):
            sub = table[(table["impl"] == impl) & (table["num_kv_pairs"] == p)].sort_values(x)
            if sub.empty:
                continue
            fig.add_trace(go.Scatter(
                x=sub[x], y=sub["accuracy"], mode="lines+markers", name=impl,
                legendgroup=impl, showlegend=c == 1,
                line=dict(color=colors[i % len(colors)]),
                customdata=sub[["d_model", "state_size"]].to_numpy(),
                hovertemplate=(f"{impl}<br>d_model %{{customdata[0]}}<br>state %{{customdata[1]}}"
                               "<br>accuracy %{y:.3f}<extra></extra>"),
            ), row=1, col=c)
            fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear", row=1, col=c)
    fig.update_yaxes(title_text="MQAR accuracy", range=[0, 1.05], row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", legend_title_text="implementation")
    return fig


def accuracy_vs_state(table: pd.DataFrame) -> go.Figure:
    """Accuracy against decoding state size (floats, log x), one trace per implementation."""
    return _figure(table, "state_size", "MQAR recall vs recurrent state size",
                   "state size (floats, all layers and heads)", log_x=True)


def accuracy_vs_width(table: pd.DataFrame) -> go.Figure:
    """Accuracy against model width ``d_model`` (log x), one trace per implementation."""
    return _figure(table, "d_model", "MQAR recall vs model width", "d_model", log_x=True)
