"""Open interp's HTML in headless Chromium (the Debian package) from file:// with the network
blocked, and check that the visualisations really render: plotly's SVG and circuitsvis'
canvases exist, no JS errors, no request leaves the machine, and the pixels are not blank.

Chromium is driven over the DevTools protocol by Playwright from PyPI, launched with the
system binary (``executable_path``); Playwright's own browser download is never used.
"""
from __future__ import annotations

import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp.experiments import RunContext, experiment, run_experiment

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Loaded:
    page: object
    requests: list[str]
    errors: list[str]


@pytest.fixture(scope="module")
def browser_context():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent: install the Debian package "
                    f"(apt-get install -y chromium) to run the browser tests")
    from playwright.sync_api import sync_playwright

    user_data = tempfile.mkdtemp(prefix="interp-chromium-")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            user_data, executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900}, offline=True)
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(user_data, ignore_errors=True)


@pytest.fixture
def open_file(browser_context):
    pages = []

    def _open(path: Path, settle_ms: int = 500) -> Loaded:
        requests: list[str] = []
        errors: list[str] = []
        page = browser_context.new_page()
        pages.append(page)

        def route(r):
            if r.request.url.startswith("file:"):
                r.continue_()
            else:                       # anything else would leave the machine
                requests.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        page.goto(Path(path).resolve().as_uri(), wait_until="load")
        page.wait_for_timeout(settle_ms)
        return Loaded(page, requests, errors)

    yield _open
    for p in pages:
        p.close()


def _pixel_stddev(png: bytes) -> float:
    from PIL import Image, ImageStat

    return ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).stddev[0]


def _check_plotly(page, n_figures: int) -> None:
    figs = page.locator(".plotly-graph-div")
    assert figs.count() == n_figures
    for i in range(n_figures):
        fig = figs.nth(i)
        fig.scroll_into_view_if_needed()
        assert fig.locator(".plotly .main-svg").count() >= 1, f"figure {i} has no SVG"
        assert fig.locator(".plotly .main-svg .heatmaplayer image, .plotly .main-svg "
                           ".scatterlayer path").count() >= 1, f"figure {i} drew no data"
        assert _pixel_stddev(fig.screenshot()) > 5, f"figure {i} looks blank"


def _check_circuitsvis(page, n_views: int, heads_per_view: list[int]) -> None:
    roots = page.locator(".interp-circuitsvis")
    assert roots.count() == n_views
    for i, n_heads in enumerate(heads_per_view):
        root = roots.nth(i)
        root.scroll_into_view_if_needed()
        # thumbnails (one canvas per head) + the zoomed pattern, drawn once visible
        page.wait_for_function(
            "([el, n]) => el.querySelectorAll('canvas').length >= n",
            arg=[root.element_handle(), n_heads + 1], timeout=15000)
        assert root.get_by_text("Head Selector").count() == 1
        big = root.locator("canvas").last
        big.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        assert big.bounding_box()["width"] > 200
        assert _pixel_stddev(big.screenshot()) > 5, f"view {i}: zoomed pattern is blank"


@dataclass(frozen=True)
class BrowserDemoConfig:
    seq: int = 16


@experiment("test_browser_demo", BrowserDemoConfig)
def run_browser_demo(cfg: BrowserDemoConfig, ctx: RunContext) -> None:
    """A small report with a table, two figures and an attention view of a toy model."""
    from interp.models.toy import ToyConfig, build_toy
    from interp.probes.patterns import attention_view
    from interp.viz import head_heatmap, sink_curves

    model = build_toy(ToyConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=50,
                                n_ctx=64, seed=0))
    df = pd.DataFrame([{"layer": layer, "head": h, "score": (layer + 1) * (h + 1) / 8}
                       for layer in range(2) for h in range(4)])
    ctx.add_table("scores", df)
    ctx.add_table("induction", pd.DataFrame({"layer": [0, 1], "head": [0, 1],
                                             "induction": [0.1, 0.9]}))
    ctx.add_figure("heatmap", head_heatmap(df, "score"), "a heatmap")
    ctx.add_figure("curve", sink_curves(df, "score", group=None), "a curve")
    toks = torch.randint(0, 50, (1, cfg.seq), generator=torch.Generator().manual_seed(0))
    ctx.add_html("view", attention_view(model, toks, layers=[1]), "an attention view")
    ctx.add_text("Done.")


def test_report_renders_offline(open_file, tmp_path):
    out = run_experiment({"kind": "test_browser_demo"}, out_dir=tmp_path / "run",
                         progress=False)
    loaded = open_file(out / "report.html")
    page = loaded.page
    assert page.locator("h1").inner_text().startswith("test_browser_demo")
    assert page.locator("table.data").count() == 2
    legend = page.locator("dl.legend").all_inner_texts()
    assert any("Olsson et al. 2022" in t and "induction" in t for t in legend), legend
    assert page.locator("dl.legend dd").first.is_visible()
    _check_plotly(page, 2)
    _check_circuitsvis(page, 1, [4])
    assert loaded.requests == [], f"the page tried the network: {loaded.requests}"
    assert loaded.errors == [], f"JS errors: {loaded.errors}"
    assert _pixel_stddev(page.screenshot()) > 5


def test_attention_view_file_renders_offline(open_file, tmp_path, toy_model):
    from interp.probes.patterns import attention_view

    toks = torch.randint(0, 50, (1, 20))
    path = attention_view(toy_model, toks, heads=[(0, 1), (1, 2), (1, 3)]).save(
        tmp_path / "view.html")
    loaded = open_file(path)
    _check_circuitsvis(loaded.page, 1, [3])
    assert loaded.requests == [] and loaded.errors == [], (loaded.requests, loaded.errors)


def test_standalone_figure_renders_offline(open_file, tmp_path):
    from interp.viz import save_figure, streaming_ppl

    df = pd.DataFrame({"mode": ["sink", "window"] * 2, "end": [512, 512, 1024, 1024],
                       "ppl": [10.0, 12.0, 11.0, 300.0]})
    loaded = open_file(save_figure(streaming_ppl(df), tmp_path / "fig.html"))
    _check_plotly(loaded.page, 1)
    assert loaded.requests == [] and loaded.errors == [], (loaded.requests, loaded.errors)


@pytest.mark.slow
def test_quickstart_report_renders_offline(open_file):
    from tests.viz.runs import quickstart_quick_run

    out = quickstart_quick_run()
    loaded = open_file(out / "report.html", settle_ms=1500)
    page = loaded.page
    _check_plotly(page, page.locator(".plotly-graph-div").count())
    assert page.locator(".plotly-graph-div").count() >= 5
    _check_circuitsvis(page, 1, [4])
    assert loaded.requests == [] and loaded.errors == [], (loaded.requests, loaded.errors)


def test_checks_catch_a_cdn_page(open_file, tmp_path):
    """The checks are not vacuous: circuitsvis' own ``str(obj)`` (a CDN import) is caught as
    a network attempt and renders nothing offline."""
    import circuitsvis.attention

    obj = circuitsvis.attention.attention_heads(torch.rand(2, 5, 5), list("abcde"))
    path = tmp_path / "cdn.html"
    path.write_text(f"<!DOCTYPE html><html><body>{str(obj)}</body></html>")
    loaded = open_file(path)
    assert any("unpkg.com" in url for url in loaded.requests)
    assert loaded.page.locator("canvas").count() == 0


def test_attribution_view_renders_offline(open_file, tmp_path, toy_model):
    """The logit-lens heatmap (a token written in each cell), the DLA head heatmap and the
    component bars all draw."""
    from interp.attribution import direct_logit_attribution, top_tokens
    from interp.attribution.view import attribution_view

    toks = torch.randint(0, 50, (1, 12))
    dla = direct_logit_attribution(toy_model, toks, 3, 4)
    view = attribution_view(top_tokens(toy_model, toks, k=1), dla)
    loaded = open_file(view.save(tmp_path / "lens.html"))
    page = loaded.page
    figs = page.locator(".plotly-graph-div")
    assert figs.count() == 3
    for i in range(2):
        assert figs.nth(i).locator(".heatmaplayer image").count() >= 1, f"figure {i}: no heatmap"
    # cell texts of the lens: one per (layer, position)
    assert figs.nth(0).locator(".heatmaplayer text").count() == 3 * 12
    others = (~dla.component.str.match(r"^L\d+H\d+$")).sum()          # embed, biases
    assert figs.nth(2).locator(".barlayer .point").count() == others
    for i in range(3):
        figs.nth(i).scroll_into_view_if_needed()
        assert _pixel_stddev(figs.nth(i).screenshot()) > 5, f"figure {i} looks blank"
    assert loaded.requests == [] and loaded.errors == [], (loaded.requests, loaded.errors)


# ------------------------------------------------------------------------ circuit graph view
_CIRCUIT_VIEW_STATE = """(gd) => {
    const box = (el) => { const r = el.getBoundingClientRect();
                          return [r.left, r.top, r.right, r.bottom]; };
    const shown = gd._fullData.filter((t) => t.visible === true);
    const groups = Array.from(gd.querySelectorAll('.scatterlayer .trace'));
    let edges = 0;
    const markers = [];
    shown.forEach((t, i) => {
        const role = t.meta && t.meta.role;
        if (role === 'edges')
            groups[i].querySelectorAll('path.js-line').forEach((p) => {
                edges += ((p.getAttribute('d') || '').match(/M/g) || []).length; });
        if (role === 'nodes')
            groups[i].querySelectorAll('path.point').forEach((p) => markers.push(box(p)));
    });
    const labels = Array.from(gd.querySelectorAll('.infolayer .annotation text'))
        .map((t) => [t.textContent].concat(box(t)));
    return {n_shown: shown.length, n_groups: groups.length, edges, markers, labels,
            step: gd._fullLayout.sliders[0].active};
}"""


def _circuit_view_state(page) -> dict:
    return page.evaluate(_CIRCUIT_VIEW_STATE, page.locator(".plotly-graph-div").element_handle())


def _overlaps(a, b, slack: float = 0.5) -> bool:
    return (a[0] < b[2] - slack and b[0] < a[2] - slack and a[1] < b[3] - slack
            and b[1] < a[3] - slack)


def _check_readable(state: dict, n_edges: int) -> None:
    """Every edge of the step drawn once, one label per drawn node, and no label box overlaps
    another label or any node marker."""
    assert state["n_groups"] == state["n_shown"], state        # SVG groups = shown traces
    assert state["edges"] == n_edges
    labels, markers = state["labels"], state["markers"]
    assert len(labels) == len(markers) > 0
    boxes = [lab[1:] for lab in labels]
    for i, a in enumerate(boxes):
        assert a[2] - a[0] > 3 and a[3] - a[1] > 3, labels[i]
        for j in range(i + 1, len(boxes)):
            assert not _overlaps(a, boxes[j]), (labels[i], labels[j])
        for m in markers:
            assert not _overlaps(a, m), (labels[i], m)


def _keep_artifact(path: Path) -> None:
    import os

    where = os.environ.get("INTERP_TEST_ARTIFACTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(where) / path.name)


def _hover_edge(page, fig, n: int) -> str:
    """Move the mouse onto the hover point of the strongest edge of step ``n``; the hover text."""
    i = next(k for k, t in enumerate(fig.data) if t.meta and t.meta.get("role") == "edge_hover"
             and t.meta["n"] == n)
    x, y = fig.data[i].x[0], fig.data[i].y[0]
    px = page.evaluate("""([gd, x, y]) => {
        const L = gd._fullLayout, r = gd.getBoundingClientRect();
        return [r.left + L._size.l + L.xaxis.l2p(x), r.top + L._size.t + L.yaxis.l2p(y)]; }""",
                       [page.locator(".plotly-graph-div").element_handle(), x, y])
    page.mouse.move(*px)
    page.wait_for_selector(".hoverlayer .hovertext", timeout=5000)
    return page.locator(".hoverlayer .hovertext").first.text_content()


def test_circuit_view_of_a_smollm2_sized_circuit_is_readable(open_file, tmp_path):
    """The issue's case: 1,623 ranked edges of a 30-layer, 9-head (3 KV heads) model with MLPs.
    The default view draws at most 60 edges; no node label overlaps another label or a marker,
    there or after moving the slider to all 1,623 edges; hover shows score and patching effect."""
    from interp.circuits.circuit_view import circuit_view
    from interp.viz import save_figure
    from tests.circuits.test_circuit_view import smollm2_shaped_edges

    edges = smollm2_shaped_edges()
    fig = circuit_view(edges, title="synthetic smollm2-shaped circuit")
    sizes = [int(s.label.replace(",", "")) for s in fig.layout.sliders[0].steps]
    default = sizes[fig.layout.sliders[0].active]
    assert default <= 60
    loaded = open_file(save_figure(fig, tmp_path / "circuit_view.html"), settle_ms=1000)
    page = loaded.page
    page.set_viewport_size({"width": fig.layout.width + 40, "height": 900})   # all of it
    page.wait_for_timeout(300)
    _check_plotly(page, 1)
    state = _circuit_view_state(page)
    _check_readable(state, default)
    shot = tmp_path / "circuit_view_smollm2.png"
    page.locator(".plotly-graph-div").screenshot(path=str(shot))
    _keep_artifact(shot)
    assert _pixel_stddev(shot.read_bytes()) > 5
    text = _hover_edge(page, fig, default)
    first = edges.loc[edges.score.abs().idxmax()]
    assert f"{first.sender} → {first.receiver}" in text
    assert "score" in text and "patching effect" in text and "rank 1 of 1,623" in text
    # the slider's last label: all edges, the same positions, still no overlapping label
    page.mouse.move(5, 5)
    last = page.locator(".slider-container .slider-label").last
    assert last.text_content().replace(",", "") == str(len(edges))
    last.scroll_into_view_if_needed()  # the figure is wider than the window
    b = last.bounding_box()            # a click there lands on the slider's rail, as a user's
    page.mouse.click(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    page.wait_for_timeout(800)
    state = _circuit_view_state(page)
    assert state["step"] == len(sizes) - 1
    _check_readable(state, len(edges))
    shot = tmp_path / "circuit_view_smollm2_all_edges.png"
    page.locator(".plotly-graph-div").screenshot(path=str(shot))
    _keep_artifact(shot)
    assert loaded.requests == [] and loaded.errors == [], (loaded.requests, loaded.errors)


@pytest.mark.slow
def test_circuit_view_of_the_trained_toy(open_file, tmp_path):
    """A real circuit: EAP on the trained induction toy, each slider step's recovery measured
    with real patching, the top edges' patching effect (clean metric minus the metric without
    the edge) on hover; it opens on the smallest step recovering 0.8."""
    from interp.circuits.circuit_view import recovery_curve
    from interp.circuits.discovery import circuit_figure, eap_circuit
    from interp.circuits.runner import CircuitRunner
    from interp.circuits.tasks import induction_task
    from interp.recipes.toy_induction import circuit_toy
    from interp.viz import save_figure

    model = circuit_toy()
    task = induction_task(model, batch=4, seg_len=8)
    runner = CircuitRunner(model, task)
    circuit = eap_circuit(model, task, top_n=81, runner=runner)
    edges = circuit.edges.copy()
    rcv = runner.graph.receivers()
    snd = {n: i for i, n in enumerate(runner.graph.senders().name)}
    col = {(n, x): j for j, (n, x) in enumerate(zip(rcv.node, rcv.input))}
    effect = [float("nan")] * len(edges)
    for k, e in enumerate(edges.head(5).itertuples()):
        mask = circuit.mask.clone()
        mask[snd[e.sender], col[(e.receiver, e.input)]] = False
        effect[k] = runner.clean_metric - runner.metric(mask)
    edges["effect"] = effect
    circuit.edges = edges
    curve = recovery_curve(runner, edges)
    fig = circuit_figure(circuit, "toy induction circuit (EAP)", recovered=curve)
    active = fig.layout.sliders[0].active
    n = int(fig.layout.sliders[0].steps[active].label)
    assert curve[n] >= 0.8 and all(v < 0.8 for m, v in curve.items() if m < n)
    loaded = open_file(save_figure(fig, tmp_path / "toy_circuit.html"), settle_ms=1000)
    page = loaded.page
    _check_plotly(page, 1)
    _check_readable(_circuit_view_state(page), n)
    shot = tmp_path / "circuit_view_toy.png"
    page.locator(".plotly-graph-div").screenshot(path=str(shot))
    _keep_artifact(shot)
    text = _hover_edge(page, fig, n)
    assert "patching effect" in text and "not measured" not in text
    assert loaded.requests == [] and loaded.errors == [], (loaded.requests, loaded.errors)


def test_circuit_view_label_check_catches_overlaps(open_file, tmp_path, monkeypatch):
    """The overlap check is not vacuous: with columns too narrow for their labels (the layout's
    pixel sizes patched down) the same check fails."""
    import interp.circuits.circuit_view as cv
    from interp.viz import save_figure
    from tests.circuits.test_circuit_view import smollm2_shaped_edges

    monkeypatch.setattr(cv, "CHAR_PX", 1.0)
    monkeypatch.setattr(cv, "MIN_COL_PX", 8)
    monkeypatch.setattr(cv, "MIN_WIDTH", 100)
    fig = cv.circuit_view(smollm2_shaped_edges(), sizes=[300], default=300, full_labels=True)
    loaded = open_file(save_figure(fig, tmp_path / "cramped.html"))
    state = _circuit_view_state(loaded.page)
    assert state["edges"] == 300 and state["n_groups"] == state["n_shown"]
    with pytest.raises(AssertionError, match="L[0-9]+H[0-9]+|MLP|KV"):     # labels collide
        _check_readable(state, 300)
