"""One self-contained HTML page per run: title, config, tables, figures, views and text.

Architecture
------------
A :class:`Report` is an ordered list of items (text, table, figure, HTML view) plus a
header (title, run facts, config). :meth:`Report.to_html` writes ONE page:

- plotly.js inline once (only if there is a figure), each figure as a ``<div>`` + its
  ``Plotly.newPlot`` call (:func:`interp.viz.figures.figure_html`);
- the circuitsvis bundle inline once (only if a view needs it), each view as a mount point
  + render call (:class:`interp.viz.html.View`);
- tables as HTML tables, truncated to ``max_rows`` rows (the full table is the CSV beside
  the report);
- text as a small, safe subset of Markdown (headings, lists, paragraphs, ``code``, **bold**,
  fenced code blocks); everything is HTML-escaped.

Raw HTML fragments that load scripts from the network are refused: the page must render
offline.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from interp.results import atomic_write_text
from interp.viz.html import PLOTLY, View, bundle_scripts, has_cdn_script

MAX_ROWS = 50
MAX_COLS = 30

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px;
     margin-top: 36px; }
.facts { color: #555; font-size: 0.9em; }
.caption { color: #555; font-size: 0.9em; margin: 4px 0 12px; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 8px 0; }
table.data th, table.data td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.data th { background: #f0f0f0; } table.data td.text { text-align: left; }
pre { background: #f5f5f5; padding: 10px; overflow-x: auto; font-size: 0.85em; }
pre.config { white-space: pre-wrap; }
code { background: #f2f2f2; padding: 0 3px; }
nav ul { columns: 2; font-size: 0.9em; }
.error { background: #fee; border: 1px solid #d88; padding: 10px; }
.interrupted { background: #fff8e0; border: 1px solid #d8b860; padding: 10px; }
dl.legend { font-size: 0.82em; color: #444; margin: 4px 0 12px; display: grid;
            grid-template-columns: max-content 1fr; column-gap: 10px; row-gap: 2px; }
dl.legend dt { font-family: monospace; } dl.legend dd { margin: 0; }
.item { margin-bottom: 18px; }
"""


def _inline_md(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return out


def markdown_to_html(text: str) -> str:
    """A small, safe Markdown subset -> HTML (everything escaped): ``#`` headings, ``-``/``*``
    bullet lists, fenced code blocks, ``inline code``, **bold**, blank-line paragraphs."""
    lines = text.strip("\n").splitlines()
    out: list[str] = []
    para: list[str] = []
    in_list = in_code = False

    def flush_para():
        if para:
            out.append("<p>" + _inline_md(" ".join(para)) + "</p>")
            para.clear()

    def close_list():
        nonlocal in_list
        if in_list:
            out.append("</ul>")
            in_list = False

    code: list[str] = []
    for line in lines:
        if line.strip().startswith("```"):
            if in_code:
                out.append("<pre>" + html.escape("\n".join(code)) + "</pre>")
                code.clear()
                in_code = False
            else:
                flush_para()
                close_list()
                in_code = True
            continue
        if in_code:
            code.append(line)
            continue
        stripped = line.strip()
        m = re.match(r"^(#{1,4})\s+(.*)$", stripped)
        if m:
            flush_para()
            close_list()
            level = len(m.group(1)) + 1                      # "#" is a report section, <h2>
            out.append(f"<h{level}>{_inline_md(m.group(2))}</h{level}>")
        elif re.match(r"^[-*]\s+", stripped):
            flush_para()
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append("<li>" + _inline_md(re.sub(r"^[-*]\s+", "", stripped)) + "</li>")
        elif not stripped:
            flush_para()
            close_list()
        else:
            close_list()
            para.append(stripped)
    if in_code:
        out.append("<pre>" + html.escape("\n".join(code)) + "</pre>")
    flush_para()
    close_list()
    return "\n".join(out)


def table_html(df: pd.DataFrame, max_rows: int = MAX_ROWS, max_cols: int = MAX_COLS) -> str:
    """``df`` as an HTML table: at most ``max_rows`` rows (a long table shows its top rows by
    the column of interest, :func:`interp.viz.legend.preview`) and ``max_cols`` columns (a
    note says how much was left out); one number format per float column; a legend line per
    column with a known meaning (:data:`interp.viz.legend.COLUMNS`)."""
    from interp.viz.legend import column_format, legend_lines, preview

    rows, sorted_by = preview(df, max_rows)
    shown = rows.iloc[:, :max_cols]
    formats = {c: column_format(shown[c]) for c in shown.columns
               if pd.api.types.is_float_dtype(shown[c])}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = []
    for row in shown.itertuples(index=False):
        cells = []
        for col, v in zip(shown.columns, row):
            if isinstance(v, float):
                cells.append(f"<td>{formats.get(col, '{:.4g}').format(v)}</td>")
            elif isinstance(v, (int,)) and not isinstance(v, bool):
                cells.append(f"<td>{v}</td>")
            else:
                cells.append(f'<td class="text">{html.escape(str(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = []
    if len(df) > max_rows:
        which = f"top {max_rows} by {sorted_by}" if sorted_by else f"first {max_rows}"
        note.append(f"{which} of {len(df):,} rows; the CSV has all")
    if df.shape[1] > max_cols:
        note.append(f"first {max_cols} of {df.shape[1]} columns")
    note_html = f'<div class="caption">({"; ".join(note)})</div>' if note else ""
    legend = legend_lines(shown.columns)
    legend_html = ("" if not legend else '<dl class="legend">' + "".join(
        f"<dt>{html.escape(c)}</dt><dd>{html.escape(text)}</dd>" for c, text in legend)
        + "</dl>")
    return (f'<table class="data"><thead><tr>{head}</tr></thead><tbody>'
            f'{"".join(body)}</tbody></table>{note_html}{legend_html}')


@dataclass
class _Item:
    kind: str            # "text" | "table" | "figure" | "html"
    name: str | None
    caption: str | None
    payload: Any
    link: str | None = None


@dataclass
class Report:
    """Build a run report item by item, then :meth:`save` it as one offline HTML page.

    Example (``attention_view`` from :mod:`interp.probes.patterns`)::

        rep = Report("quickstart on smollm2-135m", config={"model": "smollm2-135m"})
        rep.add_text("Top induction head: **L18H6**")
        rep.add_table("top_heads", df)
        rep.add_figure("induction", head_heatmap(df, "induction"), "induction score")
        rep.add_html("view", attention_view(model, prompt, heads=[(18, 6)]))
        rep.save("results/quickstart/report.html")
    """

    title: str
    config: dict[str, Any] | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    items: list[_Item] = field(default_factory=list)
    error: str | None = None
    status: str | None = None      # "interrupted": a banner instead of the failure box

    def add_text(self, text: str, at_top: bool = False) -> None:
        """Markdown (the subset of :func:`markdown_to_html`) or plain text; ``at_top`` puts
        it before all items added so far."""
        item = _Item("text", None, None, str(text))
        if at_top:
            self.items.insert(0, item)
        else:
            self.items.append(item)

    def add_table(self, name: str, df: pd.DataFrame, caption: str | None = None,
                  link: str | None = None, max_rows: int = MAX_ROWS) -> None:
        self.items.append(_Item("table", name, caption, (df, max_rows), link))

    def add_figure(self, name: str, fig, caption: str | None = None,
                   link: str | None = None) -> None:
        """A plotly figure (plotly.js goes on the page once)."""
        self.items.append(_Item("figure", name, caption, fig, link))

    def add_html(self, name: str, fragment: View | str, caption: str | None = None,
                 link: str | None = None) -> None:
        """A :class:`View` (its bundles go on the page once) or a raw HTML fragment (which
        must carry its own JS inline; fragments loading scripts from the network are
        refused)."""
        if not isinstance(fragment, View):
            fragment = str(fragment)
            if has_cdn_script(fragment):
                raise ValueError(f"html item {name!r} loads a script from the network; the "
                                 f"report must render offline (use a View / inline JS)")
        self.items.append(_Item("html", name, caption, fragment, link))

    def needs(self) -> set[str]:
        out: set[str] = set()
        for it in self.items:
            if it.kind == "figure":
                out.add(PLOTLY)
            elif it.kind == "html" and isinstance(it.payload, View):
                out |= set(it.payload.needs)
        return out

    def _item_html(self, it: _Item) -> str:
        from interp.viz.figures import figure_html

        parts = []
        if it.name and it.kind != "text":
            link = (f' <small>(<a href="{html.escape(it.link)}">{html.escape(it.link)}</a>)'
                    f'</small>') if it.link else ""
            parts.append(f'<h3 id="{html.escape(_anchor(it.name))}">'
                         f'{html.escape(it.name)}{link}</h3>')
        if it.caption:
            parts.append(f'<div class="caption">{_inline_md(it.caption)}</div>')
        if it.kind == "text":
            parts.append(markdown_to_html(it.payload))
        elif it.kind == "table":
            df, max_rows = it.payload
            parts.append(table_html(df, max_rows=max_rows))
        elif it.kind == "figure":
            parts.append(figure_html(it.payload, include_plotlyjs=False))
        else:
            frag = it.payload
            parts.append(frag.to_html(include_bundles=False) if isinstance(frag, View) else frag)
        return f'<section class="item item-{it.kind}">' + "\n".join(parts) + "</section>"

    def to_html(self) -> str:
        """The complete page (all JS inline)."""
        facts = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                        for k, v in self.facts.items())
        toc = "".join(f'<li><a href="#{html.escape(_anchor(it.name))}">{html.escape(it.name)}'
                      f'</a></li>' for it in self.items if it.name and it.kind != "text")
        body = [f"<main>\n<h1>{html.escape(self.title)}</h1>",
                f'<ul class="facts">{facts}</ul>' if facts else ""]
        if self.status == "interrupted":
            body.append('<div class="interrupted"><b>The run was interrupted</b> (Ctrl-C) '
                        'before it finished: the tables below are what was done. Run the '
                        'same command again to resume from there.</div>')
        elif self.error:
            body.append(f'<div class="error"><b>The run failed:</b><pre>'
                        f'{html.escape(self.error)}</pre></div>')
        if toc:
            body.append(f"<nav><ul>{toc}</ul></nav>")
        body += [self._item_html(it) for it in self.items]
        if self.config is not None:
            lines = "\n".join(f"{k} = {json.dumps(v, default=str)}"
                              for k, v in self.config.items())
            body.append('<h2 id="config">Config</h2><pre class="config">'
                        + html.escape(lines) + "</pre>")
        generated = _dt.datetime.now().isoformat(timespec="seconds")
        body.append(f'<p class="facts">Written by interp on {generated}. '
                    f'This page needs no network.</p>\n</main>')
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n"
                f"{bundle_scripts(self.needs())}\n</head>\n<body>\n"
                + "\n".join(b for b in body if b) + "\n</body>\n</html>\n")

    def save(self, path: str | Path) -> Path:
        """Write the page atomically; returns the path."""
        return atomic_write_text(path, self.to_html())


def _anchor(name: str) -> str:
    return "item-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name)
