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

Reading aids
------------
- **Captions.** Every table, figure and view has a caption saying what it shows and how to
  read it. An item added without one gets a generated description (rows and columns of a
  table; title, axes and colour of a figure), shown in a box marked "no caption given", and
  :meth:`Report.uncaptioned` lists such items (a run logs them).
- **Legends.** Under each table, one line per column: the ``legend=`` given to
  :meth:`Report.add_table`, else a meaning that depends on the table's other columns
  (:data:`IN_CONTEXT`: ``score`` beside ``src``/``dst`` is a composition score, beside
  ``sender``/``receiver`` an edge score, ...), else :data:`interp.viz.legend.COLUMNS`.
  ``name_<p>`` columns (``mass_0``: a value at key position ``p``) share ``name``'s line. A
  column with no meaning anywhere is listed as "no description", so a gap shows.
- **Summaries.** ``shown=`` puts a summary of a long table on the page (e.g. one row per
  layer) while the CSV beside the report keeps every row.
- **Contents.** One entry per name: a table and a figure of one name are one entry with a
  link to each; anchors are unique.
- **Facts** (the list under the title) are written as JSON values (``quick: false``).
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
.caption.generated { border: 1px dashed #c90; background: #fffbea; padding: 4px 8px; }
dl.legend dd.missing { color: #a60; font-style: italic; }
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


#: column meanings that depend on the table: ``(column, columns that must be there too,
#: meaning)``; the first match wins over :data:`interp.viz.legend.COLUMNS`
IN_CONTEXT: list[tuple[str, frozenset[str], str]] = [
    ("score", frozenset({"src", "dst"}),
     "composition score of head src into head dst: ||W_OV(src) W_QK(dst)^T|| / (||W_OV(src)|| "
     "||W_QK(dst)||) for K-composition (Elhage et al. 2021); 0-1, higher = dst reads more of "
     "what src writes; compare with percentile and baseline_mean, not with 0"),
    ("score", frozenset({"sender", "receiver"}),
     "the edge's score from the discovery method: ACDC = drop of the normalised metric when "
     "the edge was removed; EAP / heads = attribution, (clean - corrupted sender output) . "
     "gradient of the metric at the receiver's input (Syed et al. 2023); larger |score| = "
     "more important edge"),
    ("score", frozenset({"node", "kind"}),
     "the node's weight in the circuit: sum of |score| of the circuit edges touching it (for "
     "heads kept by the `heads` method: their node attribution score)"),
    ("score", frozenset({"layer", "head", "patching"}),
     "node attribution of the head: sum over batch, positions and d_head of (clean - "
     "corrupted hook_z) x gradient of the metric (EAP, Syed et al. 2023; EAP-IG averages the "
     "gradient along the path); a linear estimate of the patching column"),
    ("layer", frozenset({"sender"}),
     "layer of the node (0-based); -1 = the embeddings, n_layers = the logits"),
    ("layer", frozenset({"node"}),
     "layer of the node (0-based); -1 = the embeddings, n_layers = the logits"),
    ("head", frozenset({"node"}),
     "head index of the node within its layer (KV group index for kv_group nodes); -1 = "
     "not a head (embed, MLP, logits)"),
    ("layer", frozenset({"component"}),
     "layer of the component, 0-based; empty = not in a layer (embed, bias)"),
    ("head", frozenset({"component"}),
     "head index of the component within its layer; empty = not a head (embed, MLP, "
     "attention bias, bias)"),
]


_AT_POSITION = re.compile(r"^(?P<base>.+?)(?P<sep>@|_)(?P<p>-?\d+)$")


def column_legend(columns, legend: dict[str, str] | None = None
                  ) -> list[tuple[str, str | None]]:
    """``[(column, meaning or None)]`` for a table's columns, in order: the table's own
    ``legend``, else :data:`IN_CONTEXT`, else :data:`interp.viz.legend.COLUMNS`. A column
    ``name_<p>`` (or ``name@<p>``) whose ``name`` has a meaning is that value at key position
    ``p`` (``mass_0``, as ``interp probe sink`` names them): such columns share one line
    ``name_p``. None = no description anywhere."""
    from interp.viz.legend import COLUMNS

    legend = legend or {}
    present = {str(c) for c in columns}

    def meaning(name: str) -> str | None:
        return legend.get(name) or next(
            (text for c, need, text in IN_CONTEXT if c == name and need <= present),
            None) or COLUMNS.get(name)

    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for col in map(str, columns):
        key, text = col, meaning(col)
        m = None if text else _AT_POSITION.match(col)
        if m and meaning(m["base"]):
            key = f"{m['base']}{m['sep']}p"
            text = legend.get(key) or f"{meaning(m['base'])} (key position p)"
        if key not in seen:
            seen.add(key)
            out.append((key, text))
    return out


def _cell(v, fmt: str | None) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return '<td class="na">&ndash;</td>'
    if isinstance(v, float):
        return f"<td>{(fmt or '{:.4g}').format(v)}</td>"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"<td>{v}</td>"
    return f'<td class="text">{html.escape(str(v))}</td>'


def table_html(df: pd.DataFrame, max_rows: int = MAX_ROWS, max_cols: int = MAX_COLS,
               legend: dict[str, str] | None = None, full_rows: int | None = None) -> str:
    """``df`` as an HTML table: at most ``max_rows`` rows (a long table shows its top rows by
    the column of interest, :func:`interp.viz.legend.preview`) and ``max_cols`` columns (a
    note says how much was left out); one number format per float column; missing values as
    a dash; a legend line per column (:func:`column_legend`; "no description" where none is
    known). ``full_rows``: ``df`` is a summary of a table with this many rows (the CSV)."""
    from interp.viz.legend import column_format, preview

    rows, sorted_by = preview(df, max_rows)
    shown = rows.iloc[:, :max_cols]
    formats = {c: column_format(shown[c]) for c in shown.columns
               if pd.api.types.is_float_dtype(shown[c])}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = []
    for row in shown.itertuples(index=False):
        cells = [_cell(v, formats.get(col)) for col, v in zip(shown.columns, row)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = []
    if len(df) > max_rows:
        which = f"top {max_rows} by {sorted_by}" if sorted_by else f"first {max_rows}"
        note.append(f"{which} of {len(df):,} rows" + ("" if full_rows else "; the CSV has all"))
    if full_rows is not None:
        note.append(f"a summary; the CSV has the full table ({full_rows:,} rows)")
    if df.shape[1] > max_cols:
        note.append(f"first {max_cols} of {df.shape[1]} columns")
    note_html = f'<div class="caption">({"; ".join(note)})</div>' if note else ""
    lines = column_legend(shown.columns, legend)
    legend_html = ("" if not lines else '<dl class="legend">' + "".join(
        f"<dt>{html.escape(c)}</dt><dd>{html.escape(text)}</dd>" if text else
        f'<dt>{html.escape(c)}</dt><dd class="missing">no description</dd>'
        for c, text in lines) + "</dl>")
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
                  link: str | None = None, max_rows: int = MAX_ROWS,
                  legend: dict[str, str] | None = None,
                  shown: pd.DataFrame | None = None) -> None:
        """A table (its first ``max_rows`` rows, see :func:`table_html`).

        Args:
            caption: what the table shows and how to read it (Markdown subset). Without
                one the page shows a generated description, marked as such.
            legend: ``{column: meaning}`` for this table, before the shared meanings
                (:func:`column_legend`).
            shown: what the page shows instead of ``df`` (a summary, e.g. one row per
                layer); ``df`` stays the full table (its row count is named).
        """
        self.items.append(_Item("table", name, caption, (df, max_rows, legend, shown), link))

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

    def uncaptioned(self) -> list[str]:
        """``"name (kind)"`` of every table, figure and view added without a caption (the
        page shows a generated description for each)."""
        return [f"{it.name} ({it.kind})" for it in self.items
                if it.kind != "text" and not (it.caption and it.caption.strip())]

    def _anchors(self) -> list[str | None]:
        """A unique anchor per item (None for text): ``item-<name>``, ``-figure`` etc. added
        where a name is used by more than one item."""
        out: list[str | None] = []
        used: set[str] = set()
        for it in self.items:
            if it.kind == "text" or not it.name:
                out.append(None)
                continue
            anchor = _anchor(it.name)
            if anchor in used:
                anchor = f"{anchor}-{it.kind}"
            k = 2
            while anchor in used:
                anchor, k = f"{_anchor(it.name)}-{it.kind}-{k}", k + 1
            used.add(anchor)
            out.append(anchor)
        return out

    def _toc(self, anchors: list[str | None]) -> str:
        """One contents entry per name; a name with several items (a table and a figure)
        links to each by its kind."""
        by_name: dict[str, list[tuple[str, str]]] = {}
        for it, anchor in zip(self.items, anchors):
            if anchor is not None:
                by_name.setdefault(it.name, []).append((it.kind, anchor))
        entries = []
        for name, targets in by_name.items():
            if len(targets) == 1:
                entries.append(f'<li><a href="#{html.escape(targets[0][1])}">'
                               f'{html.escape(name)}</a></li>')
            else:
                links = ", ".join(f'<a href="#{html.escape(a)}">{_KIND_WORD[k]}</a>'
                                  for k, a in targets)
                entries.append(f"<li>{html.escape(name)}: {links}</li>")
        return "".join(entries)

    def _item_html(self, it: _Item, anchor: str | None = None) -> str:
        from interp.viz.figures import figure_html

        parts = []
        if it.name and it.kind != "text":
            link = (f' <small>(<a href="{html.escape(it.link)}">{html.escape(it.link)}</a>)'
                    f'</small>') if it.link else ""
            label = "" if it.kind == "table" else f" <small>({_KIND_WORD[it.kind]})</small>"
            parts.append(f'<h3 id="{html.escape(anchor or _anchor(it.name))}">'
                         f'{html.escape(it.name)}{label}{link}</h3>')
        if it.caption and it.caption.strip():
            parts.append(f'<div class="caption">{_inline_md(it.caption)}</div>')
        elif it.kind != "text":
            parts.append('<div class="caption generated"><b>No caption given</b> '
                         f'(generated description): {_inline_md(describe_item(it))}</div>')
        if it.kind == "text":
            parts.append(markdown_to_html(it.payload))
        elif it.kind == "table":
            df, max_rows, legend, shown = it.payload
            if shown is None:
                parts.append(table_html(df, max_rows=max_rows, legend=legend))
            else:
                parts.append(table_html(shown, max_rows=max_rows, legend=legend,
                                        full_rows=len(df)))
        elif it.kind == "figure":
            parts.append(figure_html(it.payload, include_plotlyjs=False))
        else:
            frag = it.payload
            parts.append(frag.to_html(include_bundles=False) if isinstance(frag, View) else frag)
        return f'<section class="item item-{it.kind}">' + "\n".join(parts) + "</section>"

    def to_html(self, progress: bool | None = None) -> str:
        """The complete page (all JS inline). ``progress``: a bar over the items (shown
        once writing takes over a second; None: :func:`interp.progress.enabled`)."""
        from interp import progress as _progress

        facts = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(fact_text(v))}</li>"
                        for k, v in self.facts.items())
        anchors = self._anchors()
        toc = self._toc(anchors)
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
        bar = _progress.bar(None, desc="report", total=len(self.items), unit="item",
                            delay=1.0, show=progress)
        for it, anchor in zip(self.items, anchors):
            body.append(self._item_html(it, anchor))
            bar.update(1)
        bar.close()
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

    def save(self, path: str | Path, progress: bool | None = None) -> Path:
        """Write the page atomically; returns the path. ``progress``: as :meth:`to_html`."""
        return atomic_write_text(path, self.to_html(progress=progress))


_KIND_WORD = {"table": "table", "figure": "figure", "html": "view", "text": "text"}


def _anchor(name: str) -> str:
    return "item-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def fact_text(value: Any) -> str:
    """A fact's value as the page writes it: strings as they are, everything else as JSON
    (``false``, ``null``, ``[1, 2]``), like the config below it."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def _row_keys(df: pd.DataFrame) -> list[str]:
    """The leading columns that name a row (text or integer columns before the first float
    column)."""
    keys = []
    for col in df.columns:
        if pd.api.types.is_float_dtype(df[col]):
            break
        keys.append(str(col))
    return keys[:4]


def _axis_title(axis) -> str | None:
    title = getattr(axis, "title", None)
    text = getattr(title, "text", None)
    return str(text) if text else None


def describe_item(it: _Item) -> str:
    """A generated description of an item that came without a caption: a table's size, what
    a row is and its columns; a figure's title, axes and colour; a view's title."""
    if it.kind == "table":
        df, _, _, shown = it.payload
        frame = df if shown is None else shown
        keys = _row_keys(frame)
        per = f"one row per ({', '.join(keys)})" if keys else "rows"
        values = [str(c) for c in frame.columns if str(c) not in keys]
        return (f"{len(df):,} rows x {df.shape[1]} columns, {per}"
                + (f"; values: {', '.join(values)}" if values else "")
                + ". The legend below says what each column means.")
    if it.kind == "figure":
        fig = it.payload
        layout = getattr(fig, "layout", None)
        bits = []
        title = getattr(getattr(layout, "title", None), "text", None)
        if title:
            bits.append(f"“{title}”")
        kinds = sorted({getattr(t, "type", None) or "trace" for t in getattr(fig, "data", ())})
        if kinds:
            bits.append(f"a {'/'.join(kinds)} plot")
        x = _axis_title(getattr(layout, "xaxis", None))
        y = _axis_title(getattr(layout, "yaxis", None))
        if x:
            bits.append(f"x: {x}")
        if y:
            bits.append(f"y: {y}")
        color = None
        for t in getattr(fig, "data", ()):
            bar = getattr(t, "colorbar", None)
            color = color or _axis_title(bar)
        if color:
            bits.append(f"colour: {color}")
        return "; ".join(bits) + ". Hover a point for its values." if bits else \
            "a figure; hover a point for its values."
    link = f" (open {it.link} on its own)" if it.link else ""
    return f"an interactive view{link}."
