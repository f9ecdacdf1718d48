"""Report tables: a legend line for every column with a known meaning, previews of long tables
sorted by the column of interest, one number format per column, an interrupted banner."""
from __future__ import annotations

import pandas as pd

from interp.report import Report, table_html
from interp.viz.legend import COLUMNS, column_format, preview


def test_legend_line_for_every_column_and_unknown_ones_flagged():
    df = pd.DataFrame({"layer": [0, 1], "head": [0, 0], "induction": [0.5, 0.9],
                       "my_column": [1.0, 2.0]})
    out = table_html(df)
    assert "<dt>induction</dt>" in out and "Olsson et al. 2022" in out
    assert "<dt>layer</dt><dd>layer index" in out
    # a column nobody described shows as such instead of disappearing from the legend
    assert '<dt>my_column</dt><dd class="missing">no description</dd>' in out


def test_long_table_preview_shows_top_rows_by_column_of_interest():
    df = pd.DataFrame({"layer": range(100), "head": 0, "alpha": [i % 37 / 37 for i in range(100)]})
    rows, col = preview(df, 10)
    assert col == "alpha" and list(rows["alpha"]) == sorted(df["alpha"], reverse=True)[:10]
    out = table_html(df, max_rows=10)
    assert "top 10 by alpha of 100 rows" in out
    plain = pd.DataFrame({"x": range(100)})
    assert preview(plain, 10)[1] is None and list(preview(plain, 10)[0]["x"]) == list(range(10))


def test_one_number_format_per_column():
    col = pd.Series([0.5, 0.00012, 0.25])
    fmt = column_format(col)
    assert {len(fmt.format(v).split(".")[1]) for v in col} == {4}      # same decimals
    assert column_format(pd.Series([1234.5, 3.0])) == "{:,.1f}"
    assert column_format(pd.Series([1e-6, 2e-7])) == "{:.3e}"
    out = table_html(pd.DataFrame({"alpha": [0.5, 0.00012]}))
    assert "<td>0.5000</td>" in out and "<td>0.0001</td>" in out


def test_interrupted_banner_instead_of_failure():
    rep = Report("run")
    rep.error = "Traceback ...\nKeyboardInterrupt"
    rep.status = "interrupted"
    page = rep.to_html()
    assert "The run was interrupted" in page and "The run failed" not in page
    assert "KeyboardInterrupt" not in page
    rep.status = None
    assert "The run failed" in rep.to_html()


def test_every_legend_entry_says_what_and_where():
    for column, text in COLUMNS.items():
        assert len(text) > 20, column
