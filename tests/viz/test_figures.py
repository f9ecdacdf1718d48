"""Plotly figures: values read back from the figure equal the table's; saved pages offline."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from interp.viz import (accuracy_vs_state, has_cdn_script, head_heatmap, heatmap_values,
                        matrix_heatmap, save_figure, sink_curves, streaming_ppl)
from interp.viz.html import plotly_js


def _head_table(n_layers=4, n_heads=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"layer": layer, "head": h, "score": rng.random(), "other": rng.random()}
            for layer in range(n_layers) for h in range(n_heads)]
    return pd.DataFrame(rows).sample(frac=1, random_state=1)     # order must not matter


def test_head_heatmap_cells_equal_table():
    df = _head_table()
    fig = head_heatmap(df, "score")
    assert isinstance(fig, go.Figure)
    hm = fig.data[0]
    z = np.asarray(hm.z)
    assert z.shape == (4, 3)
    for r in df.itertuples():
        assert z[list(hm.y).index(r.layer), list(hm.x).index(r.head)] == r.score
    back = heatmap_values(fig).rename(columns={"y": "layer", "x": "head", "z": "score"})
    merged = back.merge(df, on=["layer", "head"], suffixes=("", "_df"))
    assert len(merged) == len(df) and (merged.score == merged.score_df).all()


def test_head_heatmap_missing_heads_blank_and_errors():
    df = _head_table().query("not (layer == 2 and head == 1)")
    z = np.asarray(head_heatmap(df, "score").data[0].z, dtype=float)
    assert np.isnan(z[2, 1]) and np.isfinite(z).sum() == 11
    with pytest.raises(ValueError, match="nope"):
        head_heatmap(df, "nope")
    with pytest.raises(ValueError, match="several rows"):
        head_heatmap(pd.concat([df, df]), "score")


def test_matrix_heatmap_values():
    df = pd.DataFrame({"src": ["a", "a", "b"], "dst": ["x", "y", "x"], "v": [1.0, 2.0, 3.0]})
    hm = matrix_heatmap(df, "src", "dst", "v").data[0]
    z = np.asarray(hm.z, dtype=float)
    assert list(hm.y) == ["a", "b"] and list(hm.x) == ["x", "y"]
    assert z[0, 0] == 1 and z[0, 1] == 2 and z[1, 0] == 3 and np.isnan(z[1, 1])


def test_sink_curves_one_line_per_group_mean_over_heads():
    df = pd.DataFrame({"layer": [0, 0, 1, 1, 0, 1], "head": [0, 1, 0, 1, 0, 0],
                       "position": [0, 0, 0, 0, 1, 1], "mass": [0.2, 0.4, 0.6, 0.8, 0.1, 0.3]})
    fig = sink_curves(df, "mass", "position")
    assert [t.name for t in fig.data] == ["position 0", "position 1"]
    assert list(fig.data[0].y) == pytest.approx([0.3, 0.7])
    assert list(fig.data[1].x) == [0, 1]


def test_accuracy_vs_state_log_x_one_trace_per_impl():
    df = pd.DataFrame({"impl": ["softmax", "softmax", "linear", "linear"],
                       "state_size": [1e5, 1e4, 64, 256], "accuracy": [1.0, 0.9, 0.2, 0.4]})
    fig = accuracy_vs_state(df)
    assert fig.layout.xaxis.type == "log"
    assert [t.name for t in fig.data] == ["softmax", "linear"]
    assert list(fig.data[0].x) == [1e4, 1e5] and list(fig.data[0].y) == [0.9, 1.0]


def test_streaming_ppl_one_trace_per_mode():
    df = pd.DataFrame({"mode": ["sink", "window", "sink", "window"], "end": [512, 512, 1024, 1024],
                       "ppl": [10.0, 12.0, 11.0, 300.0]})
    fig = streaming_ppl(df)
    assert [t.name for t in fig.data] == ["sink", "window"]
    assert list(fig.data[1].y) == [12.0, 300.0]


def test_save_figure_standalone(tmp_path):
    fig = head_heatmap(_head_table(), "score")
    text = save_figure(fig, tmp_path / "f.html").read_text()
    assert plotly_js()[:1000] in text or "plotly.js v" in text[:100000]
    assert not has_cdn_script(text) and 'src="https://cdn.plot.ly' not in text
    d = save_figure(fig, tmp_path / "dir" / "g.html", plotlyjs="directory").read_text()
    assert (tmp_path / "dir" / "plotly.min.js").is_file()
    assert 'src="plotly.min.js"' in d and not has_cdn_script(d)
