"""Report text (:mod:`interp.report`): every table, figure and view has a caption (a missing
one shows as a marked, generated description); every column has a legend line; one contents
entry per name with unique anchors; facts as JSON; and, for every experiment kind's quick run,
no item without a caption and no column without a meaning. The quickstart's sink table shows
every layer and its locality table uses the heatmap's window."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser

import pandas as pd
import plotly.graph_objects as go
import pytest

from interp.experiments import RunContext, experiment, get_kind, kinds, run_experiment
from interp.report import Report, column_legend, table_html


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.toc: list[str] = []
        self._in_nav = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "nav":
            self._in_nav = True
        if self._in_nav and tag == "a":
            self.toc.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_nav = False


def _parse(page: str) -> _Ids:
    p = _Ids()
    p.feed(page)
    return p


def _heatmap(title="score per head"):
    fig = go.Figure(go.Heatmap(z=[[0.1, 0.2]], colorbar=dict(title="normalised")))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer")
    return fig


# -- the page ------------------------------------------------------------------------------------

def test_facts_are_json_values():
    rep = Report("r", facts={"quick": False, "seed": 0, "windows": [32, 128], "none": None,
                             "model": "smollm2-135m"})
    page = rep.to_html()
    for text in ("<b>quick</b>: false", "<b>windows</b>: [32, 128]", "<b>none</b>: null",
                 "<b>model</b>: smollm2-135m"):
        assert text in page, text
    assert "False" not in page and "None" not in page


def test_one_contents_entry_per_name_and_unique_anchors():
    rep = Report("r")
    df = pd.DataFrame({"layer": [0], "head": [1], "normalised": [0.5]})
    rep.add_table("head_patching", df, caption="a table")
    rep.add_figure("head_patching", _heatmap(), caption="a figure")
    rep.add_table("other", df, caption="another")
    p = _parse(rep.to_html())
    assert len(p.ids) == len(set(p.ids)), p.ids
    nav = rep.to_html().split("<nav>")[1].split("</nav>")[0]
    assert nav.count("<li>") == 2 and nav.count("<li>head_patching: ") == 1
    assert ">table</a>" in nav and ">figure</a>" in nav
    assert set(p.toc) <= {f"#{i}" for i in p.ids} and len(p.toc) == 3


def test_missing_caption_shows_a_generated_description_and_is_listed():
    rep = Report("r")
    rep.add_table("edges", pd.DataFrame({"sender": ["L0H1"], "receiver": ["logits"],
                                         "score": [0.25]}))
    rep.add_figure("fig", _heatmap("normalised metric per head"))
    rep.add_table("fine", pd.DataFrame({"layer": [0]}), caption="what it shows")
    page = rep.to_html()
    assert rep.uncaptioned() == ["edges (table)", "fig (figure)"]
    assert page.count('class="caption generated"') == 2
    assert "one row per (sender, receiver)" in page and "values: score" in page
    assert "normalised metric per head" in page and "x: head" in page and "y: layer" in page
    assert "colour: normalised" in page


@dataclass(frozen=True)
class _NoCaptionConfig:
    n: int = 1


@experiment("test_report_no_caption", _NoCaptionConfig)
def _run_no_caption(cfg: _NoCaptionConfig, ctx: RunContext) -> None:
    """Adds one table without a caption."""
    ctx.add_table("bare", pd.DataFrame({"layer": [0], "head": [0], "score": [1.0]}))


def test_a_run_logs_the_items_without_caption(tmp_path, capsys):
    out = run_experiment({"kind": "test_report_no_caption"}, out_dir=tmp_path / "r",
                         progress=True)
    err = capsys.readouterr().err
    assert "1 item(s) without a caption" in err and "bare (table)" in err
    assert "No caption given" in (out / "report.html").read_text()


def test_legend_meaning_from_the_table_context_and_overrides():
    comp = dict(column_legend(["src", "dst", "score", "percentile", "baseline_mean"]))
    assert "composition" in comp["score"] and "see the table's caption" not in comp["score"]
    edges = dict(column_legend(["sender", "receiver", "input", "sender_layer",
                                "receiver_layer", "score"]))
    assert "edge" in edges["score"] and "-1 = the embeddings" in edges["sender_layer"]
    assert all(edges.values()), edges
    nodes = dict(column_legend(["node", "kind", "layer", "head", "score"]))
    assert "-1" in nodes["head"] and "n_layers = the logits" in nodes["layer"]
    own = dict(column_legend(["layer", "score"], {"score": "my own meaning"}))
    assert own["score"] == "my own meaning"


def test_position_columns_share_one_legend_line():
    lines = column_legend(["layer", "mass_0", "mass_1", "sink_share_0", "odd_3"])
    keys = [k for k, _ in lines]
    assert keys == ["layer", "mass_p", "sink_share_p", "odd_3"]
    assert "key position p" in dict(lines)["mass_p"] and dict(lines)["odd_3"] is None


def test_a_summary_is_shown_and_the_full_row_count_named():
    full = pd.DataFrame({"layer": [0, 0, 1, 1], "position": [0, 1, 0, 1],
                         "mass": [0.5, 0.1, 0.6, 0.2]})
    rep = Report("r")
    rep.add_table("sinks", full, caption="c", shown=full[full.position == 0])
    page = rep.to_html()
    assert "the CSV has the full table (4 rows)" in page
    assert page.count("<tr>") == 1 + 2           # header + the two shown rows


def test_missing_values_show_as_a_dash():
    out = table_html(pd.DataFrame({"component": ["embed"], "layer": pd.array([None],
                                                                              dtype="Int64")}))
    assert "&lt;NA&gt;" not in out and 'class="na"' in out


# -- every kind's quick run ---------------------------------------------------------------------

#: items a kind still adds without a caption, in files this change could not edit; shrink it
#: as their owners add captions (the test fails on any other uncaptioned item)
PENDING_CAPTIONS: dict[str, set[str]] = {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from tests.families.tiny import build_family

    return str(build_family("llama", tmp_path_factory.mktemp("tiny-llama")))


def _interp_kinds() -> list[str]:
    return [k for k in kinds() if get_kind(k).run.__module__.startswith("interp.")]


@pytest.fixture()
def reports(monkeypatch):
    """Every :class:`Report` saved during the test."""
    saved: list[Report] = []
    real = Report.save

    def save(self, path, progress=None):
        saved.append(self)
        return real(self, path, progress)

    monkeypatch.setattr(Report, "save", save)
    return saved


@pytest.mark.parametrize("name", _interp_kinds())
def test_every_kind_captions_its_items_and_explains_its_columns(name, tiny, tmp_path, reports,
                                                                toy_induction_dir, one_thread):
    from tests.test_devices import KIND_CONFIGS

    assert name in KIND_CONFIGS, f"add a minimal config of kind {name!r} to KIND_CONFIGS"
    out = run_experiment({"kind": name, "config": KIND_CONFIGS[name](tiny)},
                         out_dir=tmp_path / "run", quick=True, progress=False)
    rep, = reports
    missing = set(rep.uncaptioned()) - PENDING_CAPTIONS.get(name, set())
    assert not missing, f"{name}: add a caption (what it shows, how to read it) to {missing}"
    unexplained = {}
    for it in rep.items:
        if it.kind == "table":
            df, _, legend, shown = it.payload
            cols = (df if shown is None else shown).columns
            gaps = [c for c, text in column_legend(cols, legend) if not text]
            if gaps:
                unexplained[it.name] = gaps
    assert not unexplained, (f"{name}: columns without a meaning (add them to "
                             f"interp.viz.legend.COLUMNS or pass legend=): {unexplained}")
    page = (out / "report.html").read_text()
    ids = _parse(page).ids
    assert len(ids) == len(set(ids)), f"{name}: duplicate anchors"
    assert '<dd class="missing">' not in page
    assert re.search(r"<b>quick</b>: true", page)


def test_quickstart_sink_table_has_every_layer_and_locality_uses_the_heatmap_window(
        tiny, tmp_path, reports, one_thread):
    from tests.test_devices import KIND_CONFIGS

    config = {**KIND_CONFIGS["quickstart"](tiny), "locality_windows": [4, 8],
              "prompt": "one two three four five six seven eight nine ten eleven twelve"}
    out = run_experiment({"kind": "quickstart", "config": config}, out_dir=tmp_path / "qs",
                         quick=True, progress=False)
    rep, = reports
    items = {(it.kind, it.name): it for it in rep.items}
    sink_df, _, _, sink_shown = items["table", "sink_per_layer"].payload
    meta = json.loads((out / "run.json").read_text())
    assert sink_shown is not None and list(sink_shown.layer) == sorted(sink_df.layer.unique())
    assert {"mass_0", "max_head_alpha_0", "sink_share_0"} <= set(sink_shown.columns)
    loc_df, _, _, loc_shown = items["table", "locality"].payload
    assert set(loc_df.layout) == {"window_4", "window_8"}           # the CSV has both
    assert set(loc_shown.layout) == {"window_4"}                    # the page: the heatmap's
    fig = items["figure", "locality_heatmap"].payload
    assert "4-token window" in fig.layout.title.text
    assert "4 most recent tokens" in items["table", "locality"].caption
    assert meta["status"] == "finished"
