"""The run report: one page, bundles once, tables truncated, text escaped, offline."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from interp.probes.patterns import attention_view
from interp.report import Report, markdown_to_html
from interp.viz import has_cdn_script, head_heatmap


def test_report_embeds_everything_once(toy_model, tmp_path):
    df = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "score": [.1, .2, .3, .4]})
    rep = Report("test <report>", config={"a": 1, "b": [1, 2]}, facts={"kind": "t"})
    rep.add_text("# Heading\n- one **bold**\n- two `code`\n\n<b>not html</b>")
    rep.add_table("big", pd.DataFrame({"x": range(500)}), max_rows=10)
    rep.add_figure("fig1", head_heatmap(df, "score"))
    rep.add_figure("fig2", head_heatmap(df, "score"))
    toks = torch.randint(0, 50, (1, 12))
    rep.add_html("view1", attention_view(toy_model, toks, layers=[0]))
    rep.add_html("view2", attention_view(toy_model, toks, layers=[1]))
    text = rep.save(tmp_path / "report.html").read_text()
    assert text.count("var CircuitsVis=") == 1                     # circuitsvis bundle once
    assert text.count("Plotly.newPlot(") == 2
    assert text.count("plotly.js v") <= 2 and not has_cdn_script(text)
    assert "&lt;b&gt;not html&lt;/b&gt;" in text and "<strong>bold</strong>" in text
    assert "first 10 of 500 rows" in text and "<td>499</td>" not in text
    assert "test &lt;report&gt;" in text
    assert text.index("var CircuitsVis=") < text.index("CircuitsVis.render(")


def test_report_refuses_network_scripts():
    rep = Report("r")
    with pytest.raises(ValueError, match="network"):
        rep.add_html("x", '<script src="https://unpkg.com/circuitsvis/dist/cdn/esm.js"></script>')
    rep.add_html("ok", "<p>fine</p>")


def test_markdown_subset():
    out = markdown_to_html("para one\nstill one\n\n```\n<code> & stuff\n```\n- a\n- b")
    assert "<p>para one still one</p>" in out
    assert "<pre>&lt;code&gt; &amp; stuff</pre>" in out
    assert out.count("<li>") == 2
