"""The readable circuit graph (:mod:`interp.circuits.circuit_view`): layout, slider steps,
colours, hover, the default size, bad input; and ``circuit_figure`` delegating to it. The
rendering in Chromium (labels never overlap, the default view's edge count) is checked in
``tests/browser/test_render.py``."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from interp.circuits.circuit_view import (INPUT_COLOURS, circuit_layout, circuit_view,
                                          default_size, default_sizes, recovery_curve)
from interp.circuits.discovery import Circuit, circuit_figure, node_mask, prune
from interp.circuits.graph import HeadGraph
from interp.errors import InputError


def smollm2_shaped_edges(n_edges: int = 1623, seed: int = 0) -> pd.DataFrame:
    """A synthetic circuit shaped like smollm2-135m's node-level one: 30 layers, 9 query heads
    in 3 KV groups, MLPs; 22 heads with every MLP, the embedding and the logits, every edge
    among them on an embed -> logits path; heavy-tailed scores (a quarter negative), ranked,
    the top ``n_edges`` kept, and a patching-effect column."""
    g = HeadGraph(30, 9, 3, True)
    rng = np.random.default_rng(seed)
    heads = sorted({f"L{l}H{h}" for l, h in zip(rng.integers(0, 30, 24), rng.integers(0, 9, 24))})
    mask = prune(g, node_mask(g, heads[:22]))
    scores = torch.tensor(rng.lognormal(0, 2, mask.shape) * rng.choice([-1, 1, 1, 1], mask.shape))
    edges = g.edges_frame(scores, mask).head(n_edges).copy()
    edges["effect"] = edges.score * rng.uniform(0.5, 1.5, len(edges))
    return edges


def toy_edges() -> pd.DataFrame:
    """A hand-made 2-layer, 4-head circuit without GQA (k/v edges go to the heads)."""
    rows = [("embed", "L0H3", "v", 0.67), ("embed", "L1H1", "v", 0.27),
            ("L0H3", "L1H1", "k", 0.19), ("L1H1", "logits", "in", 0.17),
            ("L0H3", "L1H2", "k", -0.13), ("L1H2", "logits", "in", 0.12),
            ("embed", "L0H1", "q", 0.05), ("L0H1", "L1H2", "q", 0.02)]
    df = pd.DataFrame(rows, columns=["sender", "receiver", "input", "score"])
    df["sender_layer"] = [-1 if s == "embed" else int(s[1]) for s in df.sender]
    df["receiver_layer"] = [2 if r == "logits" else int(r[1]) for r in df.receiver]
    return df


@pytest.fixture(scope="module")
def big() -> pd.DataFrame:
    return smollm2_shaped_edges()


def _role(fig, role: str, n: int | None = None) -> list:
    return [t for t in fig.data if t.meta and t.meta["role"] == role
            and (n is None or t.meta["n"] == n)]


def _step_sizes(fig) -> list[int]:
    return [int(s.label.replace(",", "")) for s in fig.layout.sliders[0].steps]


def _edges_drawn(traces) -> int:
    """Edges in line traces: one polyline per edge, each followed by a NaN gap."""
    return sum(int(np.isnan(np.asarray(t.x, dtype=float)).sum()) for t in traces)


# ------------------------------------------------------------------------------------- layout
def test_layout_is_deterministic_and_positions_distinct(big):
    a = circuit_layout(big)
    b = circuit_layout(big.sample(frac=1.0, random_state=3))     # any row order
    pd.testing.assert_frame_equal(a, b)
    assert set(a.node) == set(big.sender) | set(big.receiver)
    assert not a.duplicated(["x", "y"]).any()
    pos = a.set_index("node")
    heads, kv, mlp = (a[a.kind == k] for k in ("head", "kv_group", "mlp"))
    # a layer's heads share a column, stacked by head index, a head keeps its height in every layer
    for _, sub in heads.groupby("layer"):
        assert sub.x.nunique() == 1
    assert (heads.y == heads["head"]).all()
    # lanes: heads above the KV heads above the MLPs; the MLP half a column right of its layer
    assert heads.y.max() < kv.y.min() and kv.y.max() < mlp.y.min() and mlp.y.nunique() == 1
    col = heads.groupby("layer").x.first()
    for r in mlp.itertuples():
        if r.layer in col.index:
            assert r.x == col[r.layer] + 0.5
    # layers left to right, embed left of everything, logits right of everything
    by_layer = a[a.kind.isin(["head", "kv_group"])].groupby("layer").x.first()
    assert by_layer.is_monotonic_increasing and by_layer.is_unique
    assert pos.x["embed"] == a.x.min() and pos.x["logits"] == a.x.max()
    assert set(heads.label) <= {f"H{h}" for h in range(9)}
    assert set(kv.label) <= {"KV0", "KV1", "KV2"} and set(mlp.label) == {"MLP"}


def test_layout_without_gqa_or_mlps_and_skipped_layers():
    lay = circuit_layout(toy_edges())
    assert set(lay.kind) == {"embed", "head", "logits"}     # no KV or MLP lane
    assert not lay.duplicated(["x", "y"]).any()
    full = circuit_layout(toy_edges(), full_labels=True)
    assert set(full.label) == set(full.node)
    # layers no edge touches get no column, and the axis says so
    gap = pd.DataFrame({"sender": ["embed", "L3H0"], "receiver": ["L3H0", "L11H2"],
                        "input": ["q", "k"], "score": [1.0, 0.5]})
    lay = circuit_layout(gap).set_index("node")
    assert lay.x["L11H2"] - lay.x["L3H0"] == 1
    assert "left out" in circuit_view(gap).layout.xaxis.title.text
    assert "left out" not in circuit_view(toy_edges()).layout.xaxis.title.text


def test_node_table_gives_kinds_layers_and_scores():
    edges = pd.DataFrame({"sender": ["tok", "A"], "receiver": ["A", "out"],
                          "input": ["q", "in"], "score": [1.0, 2.0]})
    nodes = pd.DataFrame({"node": ["tok", "A", "out"], "kind": ["embed", "head", "logits"],
                          "layer": [-1, 0, 1], "head": [-1, 2, -1], "score": [0.1, 0.7, 0.2]})
    lay = circuit_layout(edges, nodes).set_index("node")
    assert lay.kind["A"] == "head" and lay.y["A"] == 2
    fig = circuit_view(edges, nodes)
    hover = " ".join(_role(fig, "nodes")[0].hovertext)
    assert "node score 0.7" in hover


def test_figure_size_follows_layers_and_heads(big):
    small = circuit_view(toy_edges())
    large = circuit_view(big)
    assert large.layout.width > 2 * small.layout.width
    assert large.layout.height > small.layout.height
    lay = circuit_layout(big)
    n_cols = lay[lay.kind == "head"].layer.nunique()
    assert 35 * n_cols < large.layout.width < 80 * (n_cols + 4)


# -------------------------------------------------------------------------------------- steps
def test_default_sizes_are_log_spaced():
    assert default_sizes(1623) == [10, 20, 50, 100, 200, 500, 1000, 1623]
    assert default_sizes(50) == [10, 20, 50]
    assert default_sizes(7) == [7]


def test_each_step_shows_the_top_n(big):
    fig = circuit_view(big, sizes=[5, 40, 300, 1623], default=40)
    assert _step_sizes(fig) == [5, 40, 300, 1623]
    ranked = big.reindex(big.score.abs().sort_values(ascending=False, kind="stable").index)
    lay = circuit_layout(big).set_index("node")
    for step, n in zip(fig.layout.sliders[0].steps, _step_sizes(fig)):
        assert _edges_drawn(_role(fig, "edges", n)) == n
        assert len(_role(fig, "edge_hover", n)[0].x) == n
        vis = step.args[0]["visible"]
        shown = [t for t, v in zip(fig.data, vis) if v]
        assert {t.meta["n"] for t in shown if t.meta["role"] != "legend"} == {n}
        # only the nodes this step's edges touch, at the fixed positions
        nodes = _role(fig, "nodes", n)[0]
        top = ranked.head(n)
        names = set(top.sender) | set(top.receiver)
        assert len(nodes.x) == len(names) == len(step.args[1]["annotations"])
        got = {(a["text"], a["x"], a["y"]) for a in step.args[1]["annotations"]}
        assert got == {(lay.label[m], lay.x[m], lay.y[m]) for m in names}
        assert f"top {n:,} of 1,623" in step.args[1]["title.text"]
    active = fig.layout.sliders[0].active
    assert _step_sizes(fig)[active] == 40
    assert all(t.visible is True for t in _role(fig, "edges", 40))
    assert not any(t.visible is True for t in _role(fig, "edges", 300))


def test_default_is_the_smallest_circuit_reaching_the_target():
    scores = np.array([5.0, 3.0, 1.0, 0.5, 0.5])          # cumulative share .5 .8 .9 .95 1
    assert default_size(scores) == (2, 2)
    assert default_size(scores, target=0.9) == (3, 3)
    assert default_size(scores, max_default=1) == (1, 2)
    # a measured curve wins over the |score| share
    assert default_size(scores, {1: 0.3, 3: 0.85, 5: 0.99}) == (3, 3)
    assert default_size(scores, {1: 0.3, 3: 0.5}) == (3, 3)      # none reaches: the best
    edges = pd.DataFrame({"sender": ["embed"] * 5, "receiver": [f"L0H{h}" for h in range(5)],
                          "input": ["q"] * 5, "score": scores})
    fig = circuit_view(edges, sizes=[1, 5], recovered={1: 0.3, 3: 0.85, 5: 0.99})
    assert _step_sizes(fig) == [1, 3, 5]                        # the default joins the steps
    assert _step_sizes(fig)[fig.layout.sliders[0].active] == 3
    assert "recovering 0.85 of clean" in fig.layout.title.text


def test_default_view_is_capped_and_says_what_reaching_the_target_takes(big):
    fig = circuit_view(big)
    n = _step_sizes(fig)[fig.layout.sliders[0].active]
    assert n == 60
    need = default_size(big.reindex(big.score.abs().sort_values(ascending=False).index).score)[1]
    assert need > 60
    assert f"takes {need:,}" in fig.layout.title.subtitle.text
    assert _edges_drawn([t for t in _role(fig, "edges") if t.visible is True]) == 60
    chosen = circuit_view(big, default=500).layout.sliders[0]
    assert chosen.steps[chosen.active].label == "500"      # a chosen default is not capped


# ------------------------------------------------------------------------------ colour, hover
def test_colour_dash_and_width_follow_input_sign_and_score():
    edges = toy_edges()
    fig = circuit_view(edges, sizes=[len(edges)])
    traces = _role(fig, "edges", len(edges))
    by_colour = {}
    for t in traces:
        by_colour[t.line.color] = by_colour.get(t.line.color, 0) + _edges_drawn([t])
    want = edges.input.map(INPUT_COLOURS).value_counts().to_dict()
    assert by_colour == want
    dashed = sum(_edges_drawn([t]) for t in traces if t.line.dash == "dash")
    assert dashed == int((edges.score < 0).sum()) == 1
    widest = max(traces, key=lambda t: t.line.width)
    assert widest.line.color == INPUT_COLOURS["v"] and _edges_drawn([widest]) == 1
    assert min(t.line.width for t in traces) < widest.line.width / 3
    legend = [t.name for t in _role(fig, "legend")]
    assert len(legend) == 5 and any("query" in n for n in legend)


def test_hover_shows_score_rank_and_patching_effect():
    edges = toy_edges()
    plain = _role(circuit_view(edges, sizes=[8]), "edge_hover", 8)[0].hovertext
    assert plain[0].startswith("<b>embed → L0H3</b>") and "score 0.67" in plain[0]
    assert "rank 1 of 8" in plain[0] and "patching" not in " ".join(plain)
    edges["effect"] = np.linspace(0.5, -0.2, len(edges))
    edges.loc[3, "effect"] = np.nan
    hover = _role(circuit_view(edges, sizes=[8]), "edge_hover", 8)[0].hovertext
    assert "patching effect 0.5" in hover[0]
    assert "patching effect not measured" in hover[3]
    edges = edges.rename(columns={"effect": "d metric"})      # any column name
    hover = _role(circuit_view(edges, sizes=[8], effect="d metric"), "edge_hover", 8)[0].hovertext
    assert "patching effect 0.5" in hover[0]
    nodes = _role(circuit_view(edges, sizes=[8]), "nodes", 8)[0].hovertext
    assert any("<b>L1H2</b> (head)" in h and "2 in, 1 out" in h for h in nodes)


# ---------------------------------------------------------------------------------- bad input
def _edges(**change) -> pd.DataFrame:
    df = toy_edges()
    for k, v in change.items():
        df[k] = v
    return df


@pytest.mark.parametrize("call", [
    lambda: circuit_view([("embed", "L0H0", "q", 1.0)]),
    lambda: circuit_view(toy_edges().drop(columns="input")),
    lambda: circuit_view(toy_edges().iloc[:0]),
    lambda: circuit_view(_edges(score=[np.nan] + [1.0] * 7)),
    lambda: circuit_view(_edges(score=["big"] * 8)),
    lambda: circuit_view(_edges(input=["q"] * 7 + ["o"])),
    lambda: circuit_view(pd.concat([toy_edges(), toy_edges().iloc[:1]])),
    lambda: circuit_view(_edges(receiver=["L0H3", "attn"] + list(toy_edges().receiver[2:]))),
    lambda: circuit_view(_edges(sender=["L1H1"] + list(toy_edges().sender[1:]))),   # backwards
    lambda: circuit_view(toy_edges(), sizes=[0]),
    lambda: circuit_view(toy_edges(), sizes=[9]),
    lambda: circuit_view(toy_edges(), sizes=[]),
    lambda: circuit_view(toy_edges(), sizes=[2.5]),
    lambda: circuit_view(toy_edges(), default=True),
    lambda: circuit_view(toy_edges(), default=20),
    lambda: circuit_view(toy_edges(), effect="missing"),
    lambda: circuit_view(toy_edges(), target=0),
    lambda: circuit_view(toy_edges(), max_default=0),
    lambda: circuit_view(toy_edges(), recovered=[0.5]),
    lambda: circuit_view(toy_edges(), recovered={99: 0.5}),
    lambda: circuit_view(toy_edges(), recovered={2: "most"}),
    lambda: circuit_view(toy_edges(), nodes=pd.DataFrame({"node": ["embed"]})),
    lambda: circuit_view(toy_edges(), nodes=pd.DataFrame(
        {"node": ["L0H3"], "kind": ["neuron"], "layer": [0], "head": [3]})),
    lambda: circuit_view(toy_edges(), nodes=pd.DataFrame(
        {"node": ["L0H3"], "kind": ["head"], "layer": ["zero"], "head": [3]})),
    lambda: circuit_view(toy_edges(), nodes=pd.DataFrame(
        {"node": ["L0H3", "L0H1"], "kind": ["head"] * 2, "layer": [0, 0], "head": [3, 3]})),
    lambda: circuit_layout("edges.csv"),
], ids=["not-a-frame", "no-input-column", "empty", "nan-score", "text-score", "unknown-input",
        "duplicate-edge", "unplaceable-name", "backwards-edge", "size-0", "size-too-big",
        "no-sizes", "fractional-size", "bool-default", "default-too-big", "no-effect-column",
        "target-0", "max-default-0", "recovered-not-mapping", "recovered-size-too-big",
        "recovered-text", "nodes-missing-columns", "unknown-kind", "text-layer",
        "two-nodes-one-place", "layout-not-a-frame"])
def test_bad_input_is_an_input_error(call):
    with pytest.raises(InputError):
        call()


# --------------------------------------------------------------------------- circuit_figure
def _circuit(edges: pd.DataFrame, normalised: float = 0.9) -> Circuit:
    cols = ["node", "kind", "layer", "head", "score"]
    nodes = circuit_layout(edges)[cols] if len(edges) else pd.DataFrame(columns=cols)
    return Circuit(nodes, edges, torch.zeros(1, 1, dtype=torch.bool), 1.0, normalised, 2.0, 0.5)


def test_circuit_figure_delegates_to_the_view(big):
    fig = circuit_figure(_circuit(big), "induction circuit")
    assert fig.layout.sliders and _step_sizes(fig)[fig.layout.sliders[0].active] == 60
    assert fig.layout.title.text.startswith("induction circuit: top 60 of 1,623")
    assert "whole circuit: 1,623 edges" in fig.layout.title.subtitle.text
    fig = circuit_figure(_circuit(big), sizes=[10, 30], default=30, full_labels=True)
    assert _step_sizes(fig) == [10, 30]
    assert all(a.text == "embed" or a.text.startswith(("L", "MLP", "logits"))
               for a in fig.layout.annotations)
    empty = circuit_figure(_circuit(big.iloc[:0]))
    assert "no edges" in empty.layout.title.text and not empty.layout.sliders


def test_saved_view_is_offline(tmp_path):
    from interp.viz import figure_html, has_cdn_script, save_figure

    path = save_figure(circuit_view(toy_edges()), tmp_path / "circuit.html")
    text = path.read_text()
    assert not has_cdn_script(text) and "Plotly.newPlot" in text
    assert not has_cdn_script(figure_html(circuit_view(toy_edges())))


def test_recovery_curve_is_real_patching(toy_model):
    """Each point is the runner's normalised metric of the top-n edges alone: all edges give
    the clean run (1), and a prefix equals the mask built by hand."""
    from interp.circuits.attribution import edge_attribution
    from interp.circuits.runner import CircuitRunner
    from interp.circuits.tasks import induction_task

    task = induction_task(toy_model, batch=2, seg_len=5, seed=1)
    runner = CircuitRunner(toy_model, task)
    g = runner.graph
    edges = g.edges_frame(edge_attribution(toy_model, task))
    curve = recovery_curve(runner, edges, [3, len(edges)])
    assert math.isclose(curve[len(edges)], 1.0, abs_tol=1e-4)
    snd = {n: i for i, n in enumerate(g.senders().name)}
    rcv = {(n, x): j for j, (n, x) in enumerate(zip(g.receivers().node, g.receivers().input))}
    mask = torch.zeros_like(runner.valid)
    for e in edges.head(3).itertuples():
        mask[snd[e.sender], rcv[(e.receiver, e.input)]] = True
    assert math.isclose(curve[3], runner.normalised(runner.metric(mask)), rel_tol=1e-6)
    with pytest.raises(InputError):
        recovery_curve(runner, pd.DataFrame({"sender": ["MLP0"], "receiver": ["logits"],
                                             "input": ["in"], "score": [1.0]}))
    fig = circuit_figure(_circuit(edges), runner=runner, sizes=[3, len(edges)])
    assert any("recovering" in s.args[1]["title.text"] for s in fig.layout.sliders[0].steps)
