"""``kind = "quickstart"``: a short probe report on one pretrained model.

Stages (one forward each, except composition which reads weights only):

1. load the model (:func:`interp.load_model`);
2. induction-circuit scores of every head on repeated random tokens
   (:func:`interp.probes.induction.induction_scores`): top-heads table, layer x head heatmaps
   of ``induction`` and ``previous_token``;
3. locality (:func:`interp.probes.locality.locality_scores`) on the prompt: share of each
   head's attention inside a sliding window, heatmap for the first window;
4. K-composition (:func:`interp.circuits.composition_scores`) of the top previous-token heads
   into the top induction heads, with each pair's percentile among all earlier heads;
5. attention-sink mass of the first tokens per layer (:mod:`interp.probes.sink`);
6. an attention view (circuitsvis, inline bundle) of the top induction heads and the top
   previous-token head on a repeated random sequence;
7. a short text summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.models.loading import ensure_info
from interp.config import ConfigError, DeviceConfig, require_at_least
from interp.experiments import RunContext, experiment

DEFAULT_PROMPT = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. He carried a "
    "small brass lamp, a notebook with a cracked leather cover, and a flask of tea that had "
    "usually gone cold by the time he reached the top. From the gallery he could see the "
    "whole bay: the fishing boats returning with their lights swaying, the long grey line "
    "of the breakwater, and the village where windows were beginning to glow one by one. "
    "He wrote down the direction of the wind, the height of the waves and the names of the "
    "boats that passed. Nobody had asked him to keep the notebook, but after thirty years "
    "it had become a history of the harbour that no one else could tell. When the storm "
    "of that winter arrived, the notebook was the only record of which boats had gone out "
    "and which had come back."
)


@dataclass(frozen=True)
class QuickstartConfig(DeviceConfig):
    """Settings of the quickstart report.

    Attributes:
        model: registered model name (:func:`interp.list_models`).
        prompt: natural text for the locality and sink probes.
        seg_len: length of the random segment repeated twice for the induction probe.
        batch: number of repeated random sequences (``quick_batch`` with ``--quick``).
        quick_batch: batch used by ``--quick``.
        locality_windows: sliding-window sizes for the locality probe (the heatmap shows
            the first).
        top_k: number of top induction / previous-token heads in tables and composition.
        view_seg_len: segment length of the repeated sequence shown in the attention view.
        sink_positions: key positions whose attention mass the sink probe measures.
        seed: seed of the random token sequences.
        threads: torch CPU threads (0 = leave torch's default).
        device, dtype: where the model runs and its dtype (:class:`DeviceConfig`).
    """

    model: str = "smollm2-135m"
    prompt: str = DEFAULT_PROMPT
    seg_len: int = 50
    batch: int = 8
    quick_batch: int = 2
    locality_windows: list[int] = field(default_factory=lambda: [32, 128])
    top_k: int = 5
    view_seg_len: int = 20
    sink_positions: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    seed: int = 0
    threads: int = 0

    def __post_init__(self):
        require_at_least(self, ("seg_len", "batch", "quick_batch", "top_k", "view_seg_len"), 1)
        if not self.locality_windows or min(self.locality_windows) < 1:
            raise ConfigError("locality_windows must be a non-empty list of sizes >= 1")
        if not self.prompt.strip():
            raise ConfigError("prompt must not be empty")


def _label(layer: int, head: int) -> str:
    return f"L{int(layer)}H{int(head)}"


def composition_table(comp: pd.DataFrame, src_heads: list[tuple[int, int]],
                      dst_heads: list[tuple[int, int]]) -> pd.DataFrame:
    """Composition score of each (src, dst) pair with ``src_layer < dst_layer``, plus its
    percentile among all heads of earlier layers writing into the same dst head, and the
    mean over those heads (the baseline)."""
    rows = []
    for dl, dh in dst_heads:
        into = comp[(comp.dst_layer == dl) & (comp.dst_head == dh)]
        for sl, sh in src_heads:
            if sl >= dl:
                continue
            s = into[(into.src_layer == sl) & (into.src_head == sh)]["score"]
            score = float(s.iloc[0])
            rows.append({"src": _label(sl, sh), "dst": _label(dl, dh), "score": score,
                         "percentile": float((into["score"] < score).mean() * 100),
                         "baseline_mean": float(into["score"].mean())})
    return pd.DataFrame(rows, columns=["src", "dst", "score", "percentile", "baseline_mean"])


@experiment("quickstart", QuickstartConfig)
def run_quickstart(cfg: QuickstartConfig, ctx: RunContext) -> None:
    """Induction, previous-token, locality, K-composition and sink probes on one model,
    with heatmaps and an attention view."""
    import interp
    from interp.probes.common import to_tokens

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    stage = _Stages(ctx, ["load model", "induction scores", "locality", "K-composition",
                          "sinks", "attention view"])
    stage("load model")
    model = interp.load_model(cfg.model, device=ctx.device, dtype=ctx.dtype)
    info = ensure_info(model)
    ctx.report.facts["model"] = (f"{cfg.model} ({model.cfg.n_layers} layers x "
                                 f"{model.cfg.n_heads} heads)")
    stage("induction scores")
    ind, top_ind, top_prev = _induction_stage(model, cfg, ctx)
    stage("locality")
    tokens = to_tokens(model, cfg.prompt)
    loc, windows = _locality_stage(model, tokens, cfg, ctx)
    stage("K-composition")
    ktab = _composition_stage(model, top_prev, top_ind, ctx)
    stage("sinks")
    sink = _sink_stage(model, tokens, cfg, ctx)
    stage("attention view")
    _view_stage(model, top_ind, top_prev, cfg, ctx)
    ctx.add_text(_summary(cfg, model, info.causal, ind, ktab, loc, windows, sink), at_top=True)
    stage.close()


class _Stages:
    """One progress bar over the named stages; ``stage(name)`` starts the next one (and logs
    it), :meth:`close` finishes the last."""

    def __init__(self, ctx: RunContext, names: list[str]) -> None:
        self.ctx = ctx
        self.bar = ctx.progress(None, desc="quickstart", total=len(names))
        self.done: list[str] = []

    def __call__(self, name: str) -> None:
        self.bar.set_postfix_str(name, refresh=not self.done)
        if self.done:
            self.bar.update(1)          # one redraw, showing the stage that starts
        self.done.append(name)
        self.ctx.log(name)

    def close(self) -> None:
        self.bar.update(1)
        self.bar.close()


def _induction_stage(model, cfg: QuickstartConfig, ctx: RunContext):
    """Induction-circuit scores of every head: tables and heatmaps. Returns the scores and
    the top induction / previous-token heads."""
    from interp.probes.induction import induction_scores, top_heads
    from interp.viz import head_heatmap

    batch = cfg.quick_batch if ctx.quick else cfg.batch
    ind = induction_scores(model, seg_len=cfg.seg_len, batch=batch, seed=cfg.seed)
    ctx.add_table("induction_scores",
                  ind.sort_values("induction", ascending=False).reset_index(drop=True),
                  f"every head's induction-circuit scores on {batch} random sequences of "
                  f"{cfg.seg_len} tokens repeated twice (Olsson et al. 2022), one row per "
                  f"head, highest induction score first. An induction head scores near 1 on "
                  f"`induction` and near 0 on `previous_token`; a previous-token head the "
                  f"reverse", max_rows=15)
    top_ind = top_heads(ind, "induction", cfg.top_k)
    top_prev = top_heads(ind, "previous_token", cfg.top_k)
    tops = pd.concat([
        ind.nlargest(cfg.top_k, "induction").assign(ranked_by="induction"),
        ind.nlargest(cfg.top_k, "previous_token").assign(ranked_by="previous_token"),
    ], ignore_index=True)
    tops.insert(0, "head_name", [_label(r.layer, r.head) for r in tops.itertuples()])
    ctx.add_table("top_heads", tops,
                  f"the top {cfg.top_k} heads by induction score, then the top {cfg.top_k} by "
                  f"previous-token score (`ranked_by` says which list a row is from); these "
                  f"heads feed the K-composition table and the attention view")
    ctx.add_figure("induction_heatmap", head_heatmap(ind, "induction", zmin=0, zmax=1,
                                                     title="induction score per head"),
                   "induction score of every head: rows are layers (0 at the top), columns "
                   "heads, colour the attention from a token in the second copy to the token "
                   "after its first occurrence (0-1; bright = an induction head)")
    ctx.add_figure("previous_token_heatmap",
                   head_heatmap(ind, "previous_token", zmin=0, zmax=1,
                                title="previous-token score per head"),
                   "previous-token score of every head: rows are layers, columns heads, "
                   "colour the attention to the immediately preceding token (0-1; bright = "
                   "a previous-token head, the first half of an induction circuit)")
    return ind, top_ind, top_prev


def _locality_stage(model, tokens, cfg: QuickstartConfig, ctx: RunContext):
    """Locality on the prompt for the windows shorter than it: table and heatmap of the
    first window. Returns the scores (None when no window fits) and those windows."""
    from interp.attention import get as get_attention
    from interp.probes.locality import locality_scores
    from interp.viz import head_heatmap

    n_tok = tokens.shape[1]
    windows = [w for w in cfg.locality_windows if w < n_tok]
    if not windows:
        ctx.add_text(f"Locality skipped: the prompt has {n_tok} tokens, not more than any "
                     f"window in {list(cfg.locality_windows)}.")
        return None, windows
    layouts = {f"window_{w}": get_attention("sliding_window", window=w) for w in windows}
    loc = locality_scores(model, tokens, layouts=layouts, min_query=windows[0])
    first = loc[loc.layout == f"window_{windows[0]}"]
    shown = first.sort_values("mass_inside", kind="stable").head(15).reset_index(drop=True)
    others = ", ".join(str(w) for w in windows[1:])
    ctx.add_table("locality", loc,
                  f"share of each head's attention that stays inside a sliding window of the "
                  f"{windows[0]} most recent tokens (the window of the heatmap below), for the "
                  f"queries at positions >= {windows[0]} of the {n_tok}-token prompt: the "
                  f"{len(shown)} heads that reach furthest back, lowest first. 1 = the head "
                  f"would lose nothing under a {windows[0]}-token sliding window"
                  + (f"; the CSV also has windows {others}" if others else ""),
                  shown=shown)
    ctx.add_figure("locality_heatmap",
                   head_heatmap(first, "mass_inside", zmin=0, zmax=1,
                                title=f"attention mass inside a {windows[0]}-token window"),
                   f"the table's window ({windows[0]} tokens) for every head: rows are "
                   f"layers, columns heads, colour the share of attention inside the window. "
                   f"1 = the head only looks at the last {windows[0]} tokens; low = it reaches "
                   f"further back (often to the first token, an attention sink)")
    return loc, windows


def _composition_stage(model, top_prev, top_ind, ctx: RunContext) -> pd.DataFrame:
    """K-composition of the top previous-token heads into the top induction heads: table
    and heatmap. Returns the table."""
    from interp.circuits import composition_scores
    from interp.viz import matrix_heatmap

    comp = composition_scores(model, "K")
    ktab = composition_table(comp, top_prev, top_ind)
    ctx.add_table("k_composition", ktab,
                  "K-composition (Elhage et al. 2021) of each top previous-token head (src) "
                  "into each top induction head (dst) of a later layer: how much dst's keys "
                  "read what src writes, the mechanism of an induction circuit. Raw scores "
                  "are small; read them against `percentile` and `baseline_mean`, which "
                  "compare src with every head of an earlier layer writing into the same dst")
    if not ktab.empty:
        ctx.add_figure("k_composition_heatmap",
                       matrix_heatmap(ktab, "src", "dst", "score",
                                      title="K-composition: previous-token -> induction heads",
                                      row_title="previous-token head (src)",
                                      col_title="induction head (dst)"),
                       "the table's scores as a grid: rows are previous-token heads (src), "
                       "columns induction heads (dst), colour the K-composition score "
                       "(brighter = stronger); blank: src is not in an earlier layer than dst")
    return ktab


def _sink_stage(model, tokens, cfg: QuickstartConfig, ctx: RunContext) -> pd.DataFrame:
    """Attention-sink mass of the first tokens per layer: table and curves. Returns the
    per-layer table."""
    from interp.probes.sink import sink_scores, sink_summary
    from interp.viz import sink_curves

    n_tok = tokens.shape[1]
    positions = tuple(p for p in cfg.sink_positions if -n_tok <= p < n_tok)
    sink = sink_summary(sink_scores(model, tokens, positions=positions))
    shown = sink_by_layer(sink)
    tokens_text = ", ".join(f"{int(r.position)} = {r.token}"
                            for r in sink.drop_duplicates("position").itertuples())
    first = int(sink.position.iloc[0]) if len(sink) else 0
    ctx.add_table("sink_per_layer", sink,
                  f"attention sinks (Gu et al. 2024), one row per layer: `mass_p` is the "
                  f"attention the queries pay to key position p, averaged over the layer's "
                  f"heads (alpha); for position {first}, `max_head_alpha_{first}` is the "
                  f"strongest single head and `sink_share_{first}` the share of heads with "
                  f"alpha > 0.3. A sink layer puts most of its attention on position "
                  f"{first} whatever the text. Positions: {tokens_text}",
                  max_rows=max(20, len(shown)), shown=shown,
                  legend={"sink_share_p": "share of the layer's heads whose alpha at key "
                                          "position p is above 0.3 (Sink^eps of the layer, "
                                          "Gu et al. 2024); 0-1"})
    ctx.add_figure("sink_curves", sink_curves(sink, "mass", "position",
                                              title="attention mass on the first tokens"),
                   "the table's `mass` columns as curves: x is the layer, y the attention "
                   "paid to a key position (mean over heads and queries, 0-1), one line per "
                   "position; a line near 1 marks the layers where that token is a sink")
    return sink


def sink_by_layer(sink: pd.DataFrame) -> pd.DataFrame:
    """One row per layer from a :func:`~interp.probes.sink.sink_summary` table (one row per
    (layer, position)): ``mass_<p>`` for every position, then ``max_head_alpha_<p>`` and
    ``sink_share_<p>`` of the first position (the usual sink), so every layer fits on the
    page."""
    if sink.empty:
        return pd.DataFrame(columns=["layer"])
    first = sink.position.iloc[0]
    wide = sink.pivot(index="layer", columns="position", values="mass")
    wide.columns = [f"mass_{int(p)}" for p in wide.columns]
    top = sink[sink.position == first].set_index("layer")
    wide[f"max_head_alpha_{int(first)}"] = top["max_head_alpha"]
    wide[f"sink_share_{int(first)}"] = top["sink_share"]
    return wide.reset_index()


def _view_stage(model, top_ind, top_prev, cfg: QuickstartConfig, ctx: RunContext) -> None:
    """An attention view of the top induction heads and the top previous-token head on a
    repeated random sequence."""
    from interp.probes.induction import repeated_random_tokens
    from interp.probes.patterns import attention_view

    rep = repeated_random_tokens(model, batch=1, seg_len=cfg.view_seg_len, seed=cfg.seed)
    view_heads = list(dict.fromkeys(top_ind[:3] + top_prev[:1]))
    view = attention_view(model, rep, heads=view_heads)
    ctx.add_html("attention_view", view,
                 f"{', '.join(_label(*h) for h in view_heads)} on a random sequence of "
                 f"{cfg.view_seg_len} tokens repeated twice: induction heads attend to the "
                 f"token after the previous occurrence (a stripe below the diagonal), the "
                 f"previous-token head to the token before. Pick a head to see its pattern: "
                 f"each row is a query token, each column a key token, darker = more "
                 f"attention")


def _summary(cfg: QuickstartConfig, model, causal: bool, ind: pd.DataFrame,
             ktab: pd.DataFrame, loc: pd.DataFrame | None, windows: list[int],
             sink: pd.DataFrame) -> str:
    """The report's summary (markdown) from the stages' tables."""
    best = ind.nlargest(1, "induction").iloc[0]
    prev = ind.nlargest(1, "previous_token").iloc[0]
    lines = [
        "## Summary",
        f"- Model **{cfg.model}**: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, "
        f"{'causal' if causal else 'bidirectional'}.",
        f"- Top induction head **{_label(best['layer'], best['head'])}** "
        f"(score {best['induction']:.3f});"
        f" {int((ind.induction > 0.3).sum())} heads score above 0.3.",
        f"- Top previous-token head **{_label(prev['layer'], prev['head'])}** "
        f"(score {prev['previous_token']:.3f}).",
    ]
    if not ktab.empty:
        k = ktab.nlargest(1, "score").iloc[0]
        lines.append(f"- Strongest K-composition among the top heads: **{k['src']} -> "
                     f"{k['dst']}** (score {k['score']:.3f}, {k['percentile']:.0f}th "
                     f"percentile of the heads feeding {k['dst']}; their mean "
                     f"{k['baseline_mean']:.3f}).")
    if loc is not None:
        first = loc[loc.layout == f"window_{windows[0]}"]
        lines.append(f"- {int((first.mass_inside > 0.9).sum())} of {len(first)} heads keep "
                     f"over 90% of their attention inside a {windows[0]}-token window.")
    if 0 in sink.position.values:
        s0 = sink[sink.position == 0]
        lines.append(f"- Mean attention on token 0 over layers: {s0['mass'].mean():.3f} "
                     f"(share of heads with alpha > 0.3: {s0['sink_share'].mean():.2f}).")
    return "\n".join(lines)
