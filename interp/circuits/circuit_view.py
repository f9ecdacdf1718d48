"""A circuit graph a person can read: the top-n edges of a ranked edge list on a fixed grid.

Input
-----
``edges``: one row per edge, ``sender, receiver, input, score`` (``input`` one of ``q``, ``k``,
``v`` (the receiving head's query / key / value input) or ``in`` (an MLP's or the logits'
residual input)), as :attr:`~interp.circuits.discovery.Circuit.edges` and
:meth:`~interp.circuits.graph.HeadGraph.edges_frame` return them; optionally a patching-effect
column (``effect``) shown on hover. ``nodes`` (optional): ``node, kind, layer, head [, score]``
as :attr:`~interp.circuits.discovery.Circuit.nodes`; without it kinds and layers are read from
the names of :mod:`interp.circuits.graph` (``embed``, ``L{l}H{h}``, ``L{l}KV{g}``,
``MLP{l}``, ``logits``).

Steps and the default size
--------------------------
Edges are ranked by ``|score|`` (descending, ties keep the table's order). Each step of the
slider shows the top ``n`` edges, for the ``sizes`` given or, by default, the 1-2-5 sequence
10, 20, 50, 100, ... below the number of edges, plus all of them, plus the default size. The
default step (the one the figure opens on) is, in this order:

1. ``default`` when given;
2. with ``recovered`` (``{n: normalised metric of the top-n circuit alone}``, measured with
   real patching, e.g. by :func:`recovery_curve`): the smallest measured ``n`` recovering at
   least ``target`` (0.8) of the clean - corrupted metric (the best measured ``n`` when none
   does);
3. otherwise a proxy: the smallest ``n`` whose edges carry ``target`` of the total ``|score|``.

An automatic choice (2 or 3) is capped at ``max_default`` (60) edges, past which no graph is
readable; the subtitle then says how many edges reaching the target would take. On
smollm2-135m's node-level induction circuit, for example, the top 300 of its 2,457 edges
recover only 0.24 of the metric (:mod:`interp.circuits.discovery`): no readable drawing is
the whole circuit there, and the slider shows the larger ones.

Layout (deterministic; positions fixed across steps)
----------------------------------------------------
One column per layer, left to right, with the embedding in a column of its own on the left
and the logits on the right. Within a column: heads stacked top to bottom by head index
(every head index keeps its height in every layer), then the key/value heads of GQA models
(``L{l}KV{g}``, which receive the k and v edges) in their own lane, then the MLP in its own
lane, half a column to the right (it reads its own layer's heads). Embed and logits sit at
the height of the middle head. Labels are short (``H3``, ``KV1``, ``MLP``; the column's tick
gives the layer; ``full_labels=True`` writes ``L14H3``) and stand beside their marker (left of
the embedding, right of the rest) on a white box, so edges pass under them. The column width
in pixels is computed from the longest label and the font, rows are 26 px (taller when there
are few), and the figure's size follows, so no two labels overlap, nor a label and a marker,
whatever the number of layers or heads: the figure grows instead (about 45 px per column:
30 layers are ~1,600 px wide, wider than the run report's column, which then scrolls).
Layers that no edge of any step touches get no column (the ticks name the real layers and the
axis title says some are left out); every other layer keeps its column in every step, and
each step draws only the nodes its edges touch.

Drawing
-------
Edges are cubic curves leaving the sender to the right and entering the receiver from the
left (q slightly above a head's centre, v slightly below); an edge that would run along its
own row for more than a column (MLP to MLP, say) drops into the free channel half a row below
instead of running through that row's markers and labels. Width is proportional to ``|score|``
(8 bins of the largest ``|score|``), colour says the receiver's input (legend), dashes a
negative score. Hovering over the middle of an edge shows sender, receiver, input, score,
rank and patching effect; hovering over a node shows its full name and its edges in the step.
The figure is plain plotly: :func:`interp.viz.figures.save_figure` writes it as an offline
page and :func:`interp.viz.figures.figure_html` embeds it in the run report.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.errors import InputError
from interp.viz.figures import TEMPLATE

INPUTS = ("q", "k", "v", "in")
INPUT_COLOURS = {"q": "#1f77b4", "k": "#d62728", "v": "#2ca02c", "in": "#7f7f7f"}
INPUT_NAMES = {"q": "query (q)", "k": "key (k)", "v": "value (v)", "in": "MLP / logits"}
KINDS = ("embed", "head", "kv_group", "mlp", "logits")
TARGET = 0.8
MAX_DEFAULT = 60

FONT_PX = 11            # label font size
CHAR_PX = 0.72 * FONT_PX  # a generous width per character (DejaVu Sans digits: 0.64 em)
ROW_PX = 26             # pixels per head row
LANE_GAP = 0.6          # extra rows between the head, KV and MLP lanes
MIN_COL_PX = 40
MARKER = {"head": 10, "kv_group": 11, "mlp": 10, "embed": 14, "logits": 14}
SYMBOL = {"head": "circle", "kv_group": "diamond", "mlp": "square", "embed": "square",
          "logits": "square"}
N_BINS = 8
CURVE_POINTS = 13
ARRIVAL = {"q": -0.2, "k": 0.0, "v": 0.2, "in": 0.0}   # rows; a head's inputs enter apart
LABEL_BG = "rgba(255,255,255,0.85)"   # labels sit on a box over the edges passing by
MIN_WIDTH = 760         # the legend in one row and the slider
MARGIN = dict(l=30, r=30, t=108, b=130)

_HEAD = re.compile(r"^L(\d+)H(\d+)$")
_KV = re.compile(r"^L(\d+)KV(\d+)$")
_MLP = re.compile(r"^MLP(\d+)$")


# ------------------------------------------------------------------------------ input checks
def _ranked(edges: pd.DataFrame, effect: str | None) -> tuple[pd.DataFrame, str | None]:
    """``edges`` checked and sorted by ``|score|`` (stable); the effect column to show."""
    if not isinstance(edges, pd.DataFrame):
        raise InputError(f"circuit_view: edges must be a pandas DataFrame (as Circuit.edges), "
                         f"got {type(edges).__name__}")
    need = ["sender", "receiver", "input", "score"]
    missing = [c for c in need if c not in edges.columns]
    if missing:
        raise InputError(f"circuit_view: the edge table needs column(s) {missing}; it has "
                         f"{list(edges.columns)}")
    if len(edges) == 0:
        raise InputError("circuit_view: the edge table is empty: there is no circuit to draw")
    if effect is None:
        effect = "effect" if "effect" in edges.columns else None
    elif effect not in edges.columns:
        raise InputError(f"circuit_view: no patching-effect column {effect!r} in the edge table "
                         f"(columns {list(edges.columns)})")
    try:
        score = pd.to_numeric(edges.score).to_numpy(dtype=float)
    except (TypeError, ValueError) as e:
        raise InputError(f"circuit_view: edge scores must be numbers ({e})") from None
    if not np.isfinite(score).all():
        raise InputError(f"circuit_view: {int((~np.isfinite(score)).sum())} edge score(s) are "
                         f"NaN or infinite; drop or fix those edges first")
    bad = sorted(set(map(str, edges.input)) - set(INPUTS))
    if bad:
        raise InputError(f"circuit_view: unknown edge input(s) {bad}; inputs are {list(INPUTS)} "
                         f"(q/k/v of a head, 'in' of an MLP or the logits)")
    dup = edges.duplicated(["sender", "receiver", "input"])
    if dup.any():
        e = edges[dup].iloc[0]
        raise InputError(f"circuit_view: edge {e.sender} -> {e.receiver} ({e.input}) appears "
                         f"more than once; give one row per edge")
    if effect is not None:
        try:
            pd.to_numeric(edges[effect])
        except (TypeError, ValueError):
            raise InputError(f"circuit_view: patching-effect column {effect!r} must hold "
                             f"numbers") from None
    out = edges.assign(score=score, sender=edges.sender.astype(str),
                       receiver=edges.receiver.astype(str), input=edges.input.astype(str))
    order = np.argsort(-np.abs(score), kind="stable")
    return out.iloc[order].reset_index(drop=True), effect


def _count(n, what: str, total: int) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise InputError(f"circuit_view: {what} must be a whole number of edges, got {n!r}")
    if not 1 <= int(n) <= total:
        raise InputError(f"circuit_view: {what} {int(n)} is outside 1..{total} (the number of "
                         f"edges in the table)")
    return int(n)


def default_sizes(n_edges: int) -> list[int]:
    """The 1-2-5 sequence 10, 20, 50, 100, ... below ``n_edges``, then ``n_edges``."""
    out, k = [], 0
    while True:
        for m in (1, 2, 5):
            n = m * 10 ** (k + 1)
            if n >= n_edges:
                return out + [n_edges]
            out.append(n)
        k += 1


def default_size(scores: Sequence[float], recovered: Mapping[int, float] | None = None,
                 target: float = TARGET, max_default: int | None = MAX_DEFAULT
                 ) -> tuple[int, int]:
    """The size the view opens on (module doc, rules 2-3) and the uncapped size reaching
    ``target``: ``(shown, needed)``.

    Args:
        scores: edge scores in rank order (``|score|`` descending).
        recovered: ``{n: normalised metric of the top-n circuit}`` (0 corrupted, 1 clean).
    """
    s = np.abs(np.asarray(scores, dtype=float))
    if recovered:
        hits = sorted(n for n, r in recovered.items() if r >= target)
        need = hits[0] if hits else max(recovered, key=lambda n: (recovered[n], -n))
    else:
        total = s.sum()
        if total == 0:
            need = len(s)
        else:
            need = int(np.searchsorted(np.cumsum(s) / total, target - 1e-12) + 1)
            need = min(need, len(s))
    shown = need if max_default is None else min(need, max_default)
    return shown, need


# ------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class _Node:
    kind: str
    layer: int
    head: int
    score: float | None


def _nodes_info(names: Sequence[str], nodes: pd.DataFrame | None) -> dict[str, _Node]:
    table: dict[str, _Node] = {}
    if nodes is not None:
        if not isinstance(nodes, pd.DataFrame):
            raise InputError(f"circuit_view: nodes must be a pandas DataFrame (as "
                             f"Circuit.nodes), got {type(nodes).__name__}")
        missing = [c for c in ("node", "kind", "layer", "head") if c not in nodes.columns]
        if missing:
            raise InputError(f"circuit_view: the node table needs column(s) {missing}; it has "
                             f"{list(nodes.columns)}")
        for r in nodes.itertuples():
            if r.kind not in KINDS:
                raise InputError(f"circuit_view: node {r.node} has unknown kind {r.kind!r}; "
                                 f"kinds are {list(KINDS)}")
            score = getattr(r, "score", None)
            try:
                table[str(r.node)] = _Node(str(r.kind), int(r.layer), int(r.head),
                                           None if score is None else float(score))
            except (TypeError, ValueError):
                raise InputError(f"circuit_view: node {r.node}: layer and head must be whole "
                                 f"numbers and score a number (got {r.layer!r}, {r.head!r}, "
                                 f"{score!r})") from None
    out = {}
    for n in names:
        if n in table:
            out[n] = table[n]
        elif n == "embed":
            out[n] = _Node("embed", -1, -1, None)
        elif n == "logits":
            out[n] = _Node("logits", -2, -1, None)      # layer set below
        elif m := _HEAD.match(n):
            out[n] = _Node("head", int(m[1]), int(m[2]), None)
        elif m := _KV.match(n):
            out[n] = _Node("kv_group", int(m[1]), int(m[2]), None)
        elif m := _MLP.match(n):
            out[n] = _Node("mlp", int(m[1]), -1, None)
        else:
            raise InputError(f"circuit_view: cannot place node {n!r}: names are embed, "
                             f"L<layer>H<head>, L<layer>KV<group>, MLP<layer> and logits "
                             f"(or pass a node table with kind, layer and head)")
    return out


def _label(name: str, node: _Node, full: bool) -> str:
    if node.kind in ("embed", "logits") or full:
        return name
    return {"head": f"H{node.head}", "kv_group": f"KV{node.head}", "mlp": "MLP"}[node.kind]


@dataclass(frozen=True)
class _Layout:
    table: pd.DataFrame                 # node, kind, layer, head, x, y, label
    ticks: list[tuple[float, str]]
    skipped: bool
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    col_px: float


def _layout(names: Sequence[str], nodes: pd.DataFrame | None, full_labels: bool) -> _Layout:
    info = _nodes_info(sorted(set(names)), nodes)
    layers = sorted({v.layer for v in info.values() if v.kind in ("head", "kv_group", "mlp")})
    has_embed = any(v.kind == "embed" for v in info.values())
    has_logits = any(v.kind == "logits" for v in info.values())
    col = {l: i + (1 if has_embed else 0) for i, l in enumerate(layers)}
    last = (col[layers[-1]] if layers else (0 if has_embed else -1))
    n_head_rows = 1 + max([v.head for v in info.values() if v.kind == "head"], default=-1)
    n_kv_rows = 1 + max([v.head for v in info.values() if v.kind == "kv_group"], default=-1)
    has_mlp = any(v.kind == "mlp" for v in info.values())
    kv0 = n_head_rows + (LANE_GAP if n_head_rows else 0)
    mlp_y = kv0 + n_kv_rows + (LANE_GAP if n_kv_rows else 0)
    mid = (n_head_rows - 1) / 2 if n_head_rows else (kv0 + (n_kv_rows - 1) / 2 if n_kv_rows
                                                      else mlp_y if has_mlp else 0.0)
    logits_layer = 1 + max([v.layer for v in info.values()], default=-1)
    rows = []
    for n, v in info.items():
        if v.kind == "embed":
            x, y = 0.0, mid
        elif v.kind == "logits":
            x, y = float(last + 1), mid
            v = _Node("logits", v.layer if v.layer >= 0 else logits_layer, -1, v.score)
        elif v.kind == "head":
            x, y = float(col[v.layer]), float(v.head)
        elif v.kind == "kv_group":
            x, y = float(col[v.layer]), kv0 + v.head
        else:
            x, y = col[v.layer] + 0.5, mlp_y
        rows.append({"node": n, "kind": v.kind, "layer": v.layer, "head": v.head, "x": x,
                     "y": float(y), "label": _label(n, v, full_labels), "score": v.score})
    table = pd.DataFrame(rows).sort_values(["x", "y"], kind="stable").reset_index(drop=True)
    same = table[table.duplicated(["x", "y"], keep=False)]
    if len(same):
        raise InputError(f"circuit_view: nodes {sorted(same.node)[:4]} would share one place "
                         f"(same kind, layer and head); give each node its own layer/head")
    # pixels: a column holds a marker, a gap and the longest label of the layer lanes, with room
    # to spare; the embed label stands left of its marker, the logits label right of its own
    lane = table[table.kind.isin(["head", "kv_group", "mlp"])]
    longest = max([len(s) for s in lane.label], default=3)
    col_px = max(MIN_COL_PX, math.ceil(MARKER["kv_group"] / 2 + 4 + longest * CHAR_PX + 12))
    end = {k: max([len(s) for s in table.label[table.kind == k]], default=0)
           for k in ("embed", "logits")}
    left = -0.5 - ((MARKER["embed"] / 2 + 6 + end["embed"] * CHAR_PX) / col_px
                   if has_embed else 0)
    right = last + 1 + ((MARKER["logits"] / 2 + 6 + end["logits"] * CHAR_PX) / col_px
                        if has_logits else 0.5)
    if has_mlp and not has_logits:
        right = max(right, last + 0.5 + (MARKER["mlp"] / 2 + 6 + longest * CHAR_PX) / col_px)
    ticks = [(float(col[l]), str(l)) for l in layers]
    skipped = bool(layers) and layers != list(range(layers[0], layers[-1] + 1))
    y_max = max(table.y.max(), mid)
    return _Layout(table, ticks, skipped, (left, right), (y_max + 0.8, -0.8), float(col_px))


def circuit_layout(edges: pd.DataFrame, nodes: pd.DataFrame | None = None,
                   full_labels: bool = False) -> pd.DataFrame:
    """Where :func:`circuit_view` puts each node of ``edges`` (the module doc's layout): one row
    per node, ``node, kind, layer, head, x, y, label, score`` (x in columns, y in head rows
    counted downwards). Deterministic: the same edge set gives the same table.

    Raises:
        InputError: a bad edge or node table (see :func:`circuit_view`).
    """
    ranked, _ = _ranked(edges, None)
    names = list(ranked.sender) + list(ranked.receiver)
    return _layout(names, nodes, full_labels).table


# ----------------------------------------------------------------------------------- drawing
def _bezier(x0: float, y0: float, x1: float, y1: float, c: float, n: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """A cubic Bezier from (x0, y0) to (x1, y1), horizontal at both ends (handles ``c``)."""
    t = np.linspace(0.0, 1.0, n)
    b = np.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3])
    return np.array([x0, x0 + c, x1 - c, x1]) @ b, np.array([y0, y0, y1, y1]) @ b


def _curve(x0: float, y0: float, x1: float, y1: float
           ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The path of one edge and the point its hover sits on. An edge leaves its sender to the
    right and enters its receiver from the left. One that stays in its row for more than a
    column would run through the markers and labels of that row: it drops half a row into the
    free channel between rows, runs there, and climbs back."""
    if x1 - x0 > 1.05 and abs(y1 - y0) < 0.45:
        yc = y0 + (-0.5 if y1 < y0 else 0.5)
        ax, ay = _bezier(x0, y0, x0 + 0.5, yc, 0.25, 7)
        bx, by = _bezier(x1 - 0.5, yc, x1, y1, 0.25, 7)
        return (np.concatenate([ax, bx]), np.concatenate([ay, by]), (x0 + x1) / 2, yc)
    px, py = _bezier(x0, y0, x1, y1, min(0.5 * (x1 - x0), 0.8), CURVE_POINTS)
    return px, py, float(px[CURVE_POINTS // 2]), float(py[CURVE_POINTS // 2])


def _annotation(r) -> dict:
    """The label of node row ``r`` of the layout: beside its marker (left of the embedding,
    right of everything else) on a white box, in data coordinates."""
    left = r.kind == "embed"
    shift = MARKER[r.kind] / 2 + 3
    return dict(x=r.x, y=r.y, xref="x", yref="y", text=r.label, showarrow=False,
                xanchor="right" if left else "left", yanchor="middle",
                xshift=-shift if left else shift, font=dict(size=FONT_PX, color="#222"),
                bgcolor=LABEL_BG, borderpad=0, captureevents=False)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def circuit_view(edges: pd.DataFrame, nodes: pd.DataFrame | None = None,
                 sizes: Sequence[int] | None = None, default: int | None = None,
                 title: str = "circuit", recovered: Mapping[int, float] | None = None,
                 effect: str | None = None, target: float = TARGET,
                 max_default: int | None = MAX_DEFAULT, full_labels: bool = False,
                 note: str | None = None) -> go.Figure:
    """The circuit of the top-n edges of ``edges`` as a plotly figure with a slider over n
    (module doc: ranking, default size, layout, drawing).

    Args:
        edges: ``sender, receiver, input, score`` per edge (:attr:`Circuit.edges`), any order.
        nodes: optional ``node, kind, layer, head [, score]`` (:attr:`Circuit.nodes`): kinds
            and layers of nodes whose names do not say them; ``score`` is shown on hover.
        sizes: the slider's edge counts (each 1..len(edges)); default: 10, 20, 50, ... and all.
        default: the edge count the figure opens on (added to ``sizes``); default: the
            smallest circuit reaching ``target`` (see module doc), capped at ``max_default``.
        recovered: ``{n: normalised metric of the top-n edges alone}`` (1 = clean, 0 =
            corrupted), e.g. from :func:`recovery_curve`; shown in the step titles and used
            for the default.
        effect: a column of ``edges`` with each edge's patching effect, shown on hover
            (default: the column ``effect`` when there is one; NaN: not measured).
        full_labels: label nodes ``L14H3`` instead of ``H3`` under the layer's tick.
        note: a line added under every step's title.

    Returns:
        A figure with one slider step per size; the default step is active. Trace ``meta``
        fields say what each trace is (``{"role": "edges"|"edge_hover"|"nodes"|"legend",
        "n": size}``), for tests and tools.

    Raises:
        InputError: not a DataFrame, missing columns, no edges, non-finite scores, unknown
            inputs, duplicate edges, names that cannot be placed, an edge that goes backwards,
            bad ``sizes`` / ``default`` / ``recovered`` / ``target`` / ``max_default``.
    """
    ranked, effect = _ranked(edges, effect)
    N = len(ranked)
    if not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise InputError(f"circuit_view: target must be in (0, 1], got {target!r}")
    if max_default is not None:
        if (isinstance(max_default, (bool, np.bool_))
                or not isinstance(max_default, (int, np.integer)) or max_default < 1):
            raise InputError(f"circuit_view: max_default must be a positive whole number of "
                             f"edges or None, got {max_default!r}")
        max_default = int(max_default)
    if recovered is not None:
        if not isinstance(recovered, Mapping):
            raise InputError("circuit_view: recovered must map edge counts to the normalised "
                             "metric of those edges alone, e.g. {20: 0.61, 50: 0.83}")
        try:
            recovered = {_count(n, "a recovered size", N): float(r)
                         for n, r in recovered.items()}
        except (TypeError, ValueError):
            raise InputError("circuit_view: recovered values must be numbers (the normalised "
                             "metric of each top-n circuit)") from None
    sizes = (default_sizes(N) if sizes is None
             else [_count(n, "a size", N) for n in sizes])
    if not sizes:
        raise InputError("circuit_view: sizes is empty; give at least one edge count")
    needed = None
    if default is None:
        default, needed = default_size(ranked.score.to_numpy(), recovered, target, max_default)
    else:
        default = _count(default, "default", N)
    sizes = sorted(set(sizes) | {default})

    lay = _layout(list(ranked.sender[:sizes[-1]]) + list(ranked.receiver[:sizes[-1]]),
                  nodes, full_labels)
    pos = lay.table.set_index("node")
    xs, ys = pos.x.to_dict(), pos.y.to_dict()
    kinds = pos.kind.to_dict()
    wmax = float(np.abs(ranked.score).max()) or 1.0
    share = np.cumsum(np.abs(ranked.score.to_numpy())) / (np.abs(ranked.score).sum() or 1.0)

    # geometry of every edge that some step shows (a prefix of the ranking)
    shown = ranked.iloc[:sizes[-1]]
    rad = {k: MARKER[k] / 2 / lay.col_px for k in MARKER}
    effects = None if effect is None else pd.to_numeric(shown[effect]).to_numpy(dtype=float)
    geo = []
    for rank, e in enumerate(shown.itertuples()):
        x0, y0 = xs[e.sender] + rad[kinds[e.sender]], ys[e.sender]
        x1 = xs[e.receiver] - rad[kinds[e.receiver]]
        y1 = ys[e.receiver] + (ARRIVAL[e.input] if kinds[e.receiver] in ("head", "kv_group")
                               else 0.0)
        if xs[e.receiver] <= xs[e.sender]:
            raise InputError(f"circuit_view: edge {e.sender} -> {e.receiver} goes backwards "
                             f"(the receiver does not come after the sender); check the table")
        cx, cy, hx, hy = _curve(x0, y0, x1, y1)
        b = min(N_BINS - 1, int(abs(e.score) / wmax * N_BINS))
        hover = (f"<b>{e.sender} → {e.receiver}</b> (into {INPUT_NAMES[e.input]})"
                 f"<br>score {_fmt(e.score)}<br>rank {rank + 1:,} of {N:,}")
        if effect is not None:
            v = float(effects[rank])
            hover += f"<br>patching effect {_fmt(v) if np.isfinite(v) else 'not measured'}"
        geo.append((cx, cy, b, e.input, e.score < 0, hover, hx, hy))

    fig = go.Figure()
    traces_of: dict[int, list[int]] = {}
    labels_of: dict[int, list[dict]] = {}
    for n in sizes:
        idx = []
        step = geo[:n]
        groups: dict[tuple, list[int]] = {}
        for i, g in enumerate(step):
            groups.setdefault((g[2], INPUTS.index(g[3]), g[4]), []).append(i)
        for (b, inp, neg), members in sorted(groups.items()):
            # one polyline per edge, NaN between edges (a gap for plotly.js); float32 arrays
            # travel as compact typed arrays
            gap = np.array([np.nan])
            px = np.concatenate([a for i in members for a in (step[i][0], gap)]).astype("f4")
            py = np.concatenate([a for i in members for a in (step[i][1], gap)]).astype("f4")
            idx.append(len(fig.data))
            fig.add_trace(go.Scatter(
                x=px, y=py, mode="lines", hoverinfo="skip", showlegend=False, opacity=0.8,
                line=dict(color=INPUT_COLOURS[INPUTS[inp]], width=0.75 + 5.25 * (b + 1) / N_BINS,
                          dash="dash" if neg else "solid", shape="linear"),
                meta={"role": "edges", "n": n}, visible=False))
        idx.append(len(fig.data))
        fig.add_trace(go.Scatter(
            x=[g[6] for g in step], y=[g[7] for g in step],
            mode="markers", hovertext=[g[5] for g in step], hoverinfo="text", showlegend=False,
            marker=dict(size=10, opacity=0, color=[INPUT_COLOURS[g[3]] for g in step]),
            name="", meta={"role": "edge_hover", "n": n}, visible=False))
        # nodes touched by this step's edges
        sub = ranked.iloc[:n]
        n_in = sub.receiver.value_counts().to_dict()
        n_out = sub.sender.value_counts().to_dict()
        touched = set(sub.sender) | set(sub.receiver)
        tab = lay.table[lay.table.node.isin(touched)]
        hover = []
        for r in tab.itertuples():
            h = f"<b>{r.node}</b> ({r.kind.replace('_', ' ')})"
            if r.kind == "kv_group":
                h += f"<br>key/value head {r.head} of layer {r.layer} (GQA: shared by a group " \
                     f"of query heads)"
            h += f"<br>in this view: {n_in.get(r.node, 0)} in, {n_out.get(r.node, 0)} out"
            if r.score is not None and not pd.isna(r.score):
                h += f"<br>node score {_fmt(r.score)}"
            hover.append(h)
        idx.append(len(fig.data))
        fig.add_trace(go.Scatter(
            x=tab.x.tolist(), y=tab.y.tolist(), mode="markers", hovertext=hover,
            hoverinfo="text",
            marker=dict(size=[MARKER[k] for k in tab.kind], symbol=[SYMBOL[k] for k in tab.kind],
                        color="#3a3a3a", line=dict(color="white", width=1)),
            showlegend=False, name="", meta={"role": "nodes", "n": n}, visible=False))
        labels_of[n] = [_annotation(r) for r in tab.itertuples()]
        traces_of[n] = idx
    legend = []
    for x in INPUTS:
        legend.append(len(fig.data))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=INPUT_NAMES[x],
                                 line=dict(color=INPUT_COLOURS[x], width=3),
                                 meta={"role": "legend"}))
    legend.append(len(fig.data))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="dashed: score < 0",
                             line=dict(color="#555", width=2, dash="dash"),
                             meta={"role": "legend"}))

    def title_of(n: int) -> tuple[str, str]:
        """The step's title (one line) and subtitle (the note, the cap; lines)."""
        head = f"{title}: top {n:,} of {N:,} edges by |score|"
        if recovered and n in recovered:
            head += f", recovering {recovered[n]:.2f} of clean − corrupted"
        else:
            head += f" ({share[n - 1]:.0%} of the total |score|)"
        sub = [note] if note else []
        if needed is not None and needed > default and n == default:
            what = ("recovering {:.0%} of the clean − corrupted metric" if recovered
                    else "carrying {:.0%} of the total |score|").format(target)
            sub.append(f"showing the {default} strongest edges; {what} takes {needed:,} "
                       f"edges (slider)")
        return head, "<br>".join(sub)

    n_sub = max(len([t for t in title_of(n)[1].split("<br>") if t]) for n in sizes)
    margin = dict(MARGIN, t=MARGIN["t"] + 15 * max(0, n_sub - 1))
    n_traces = len(fig.data)
    steps = []
    for n in sizes:
        vis = [False] * n_traces
        for i in traces_of[n] + legend:
            vis[i] = True
        steps.append(dict(method="update", label=f"{n:,}",
                          args=[{"visible": vis},
                                {"title.text": title_of(n)[0],
                                 "title.subtitle.text": title_of(n)[1],
                                 "annotations": labels_of[n]}]))
        if n == default:
            for i in traces_of[n]:
                fig.data[i].visible = True
    x0, x1 = lay.x_range
    y0, y1 = lay.y_range
    width = margin["l"] + margin["r"] + (x1 - x0) * lay.col_px
    # a few rows get taller ones (room for their edges), many rows ROW_PX each
    row_px = max(ROW_PX, min(2 * ROW_PX, 260 / (y0 - y1)))
    height = margin["t"] + margin["b"] + (y0 - y1) * row_px
    width = max(width, MIN_WIDTH)     # wider columns when few: never narrower ones
    height = max(height, 380)
    fig.update_layout(
        title=dict(text=title_of(default)[0], subtitle=dict(text=title_of(default)[1],
                                                            font=dict(size=11)),
                   x=0.01, xanchor="left", y=1 - 12 / round(height), yref="container",
                   yanchor="top", font=dict(size=15)),
        annotations=labels_of[default],
        template=TEMPLATE, width=round(width), height=round(height), autosize=False,
        margin=margin, hovermode="closest", plot_bgcolor="white",
        showlegend=True,
        legend=dict(orientation="h", x=0, xanchor="left", y=1.0, yanchor="bottom",
                    title=dict(text="edge into:", font=dict(size=11)),
                    itemclick=False, itemdoubleclick=False, font=dict(size=11)),
        xaxis=dict(range=[x0, x1], tickvals=[t[0] for t in lay.ticks],
                   ticktext=[t[1] for t in lay.ticks], showgrid=False, zeroline=False,
                   title=("layer (layers no shown edge touches are left out)" if lay.skipped
                          else "layer"), tickfont=dict(size=10)),
        yaxis=dict(range=[y0, y1], visible=False, showgrid=False, zeroline=False),
        shapes=[dict(type="line", xref="x", yref="paper", x0=t[0], x1=t[0], y0=0, y1=1,
                     line=dict(color="#eeeeee", width=1), layer="below") for t in lay.ticks],
        sliders=[dict(active=sizes.index(default), steps=steps, x=0, len=1.0, y=0,
                      yanchor="top", pad=dict(t=45, b=5),
                      currentvalue=dict(prefix="edges shown: ", font=dict(size=12)))])
    return fig


# ---------------------------------------------------------------------------- recovery curve
def recovery_curve(runner, edges: pd.DataFrame, sizes: Sequence[int] | None = None,
                   progress: bool = False) -> dict[int, float]:
    """``{n: normalised metric}`` of the top-n edges of ``edges`` (ranked as in
    :func:`circuit_view`) evaluated alone with real patching: one
    :meth:`~interp.circuits.runner.CircuitRunner.metric` forward per size (default sizes:
    :func:`default_sizes`). Feed it to :func:`circuit_view` as ``recovered``.

    Raises:
        InputError: a bad edge table, sizes, or an edge that is not in the runner's graph.
    """
    import torch
    from tqdm.auto import tqdm

    ranked, _ = _ranked(edges, None)
    N = len(ranked)
    sizes = sorted({_count(n, "a size", N) for n in (sizes or default_sizes(N))})
    g = runner.graph
    s_idx = {n: i for i, n in enumerate(g.senders().name)}
    rcv = g.receivers()
    r_idx = {(n, x): j for j, (n, x) in enumerate(zip(rcv.node, rcv.input))}
    rows, cols = [], []
    for e in ranked.itertuples():
        if e.sender not in s_idx or (e.receiver, e.input) not in r_idx:
            raise InputError(f"recovery_curve: edge {e.sender} -> {e.receiver} ({e.input}) is "
                             f"not in the model's graph")
        rows.append(s_idx[e.sender])
        cols.append(r_idx[(e.receiver, e.input)])
    rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
    out = {}
    for n in tqdm(sizes, desc="recovery", disable=not progress):
        mask = torch.zeros_like(runner.valid)
        mask[rows_t[:n], cols_t[:n]] = True
        out[n] = float(runner.normalised(runner.metric(mask)))
    return out


__all__ = ["INPUT_COLOURS", "circuit_layout", "circuit_view", "default_size", "default_sizes",
           "recovery_curve"]
