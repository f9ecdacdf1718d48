"""``kind = "streaming"``: what the first tokens are for (Xiao et al. 2023, StreamingLLM).

Two parts on a long text from :func:`interp.data.load_text`:

1. **Window sweep** (:func:`interp.streaming.window_sweep.window_sweep`): one masked forward
   per (window, sinks) on ``sweep_tokens`` tokens; perplexity beyond the largest window for
   window-only attention and for ``sinks`` first tokens + window, against dense. Table
   ``window_sweep``, ``blowup`` (window-only / sink+window per window) and the figure
   ``ppl_vs_window``.
2. **Stream** (:func:`interp.streaming.evaluate_stream`): ``stream_tokens`` tokens decoded
   through the bounded KV caches (positions inside the cache), dense up to the model's
   context, and sliding-window recomputation at a stride. Tables ``stream_chunks`` and
   ``stream_summary``, figure ``ppl_per_chunk``. Skipped when ``stream_tokens = 0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp.config import ConfigError, DeviceConfig, require_at_least
from interp.experiments import RunContext, experiment


def streaming_lm(name: str, device: torch.device | None = None,
                 dtype: torch.dtype | str | None = None):
    """:class:`interp.streaming.StreamingLM` for model ``name`` (registry name, folder, hub
    id) in ``dtype`` on ``device`` (default CPU): its caches and tables follow the model."""
    from interp.streaming import StreamingLM

    return StreamingLM.from_name(name, dtype=dtype, device=device)


@dataclass(frozen=True)
class StreamingConfig(DeviceConfig):
    """Settings of the streaming study.

    Attributes:
        model: registered Llama-type model name.
        text: text name for :func:`interp.data.load_text` (``alice``, ``pydoc-topics``).
        bos: start the token stream with the tokenizer's BOS.
        sweep_tokens: tokens of the window sweep (within the model's context).
        windows: window sizes of the sweep.
        sinks: sink counts of the sweep (0 = window-only; must include 0 and one > 0).
        stream_tokens: tokens streamed through the KV caches (0 = no stream part).
        stream_window, stream_sinks: the bounded caches hold ``sinks + window`` tokens.
        chunk: the stream's perplexity is reported per ``chunk`` tokens.
        recompute_stride: sliding-window recomputation is evaluated every this many tokens.
        quick_sweep_tokens, quick_windows, quick_stream_tokens: used by ``--quick``.
        threads: torch CPU threads (0 = leave torch's default).
        device, dtype: where the model runs and its dtype (:class:`DeviceConfig`).
    """

    model: str = "smollm2-135m"
    text: str = "alice"
    bos: bool = True
    sweep_tokens: int = 2048
    windows: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    sinks: list[int] = field(default_factory=lambda: [0, 1, 4])
    stream_tokens: int = 2048
    stream_window: int = 64
    stream_sinks: int = 4
    chunk: int = 256
    recompute_stride: int = 128
    quick_sweep_tokens: int = 512
    quick_windows: list[int] = field(default_factory=lambda: [16, 64])
    quick_stream_tokens: int = 256
    threads: int = 0

    def __post_init__(self):
        require_at_least(self, ("sweep_tokens", "stream_window", "chunk", "recompute_stride",
                                "quick_sweep_tokens"), 1)
        require_at_least(self, ("stream_tokens", "stream_sinks", "quick_stream_tokens",
                                "threads"), 0)
        for name in ("windows", "quick_windows"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a non-empty list of sizes >= 1")
        if 0 not in self.sinks or max(self.sinks) < 1:
            raise ConfigError(f"sinks must include 0 (window-only) and a count > 0, "
                             f"got {self.sinks}")


@experiment("streaming", StreamingConfig)
def run_streaming(cfg: StreamingConfig, ctx: RunContext) -> None:
    """Window-only vs sink+window vs dense perplexity over window sizes (masked forwards),
    then a real stream through the StreamingLLM KV cache."""
    import interp
    from interp.data import load_text
    from interp.streaming import evaluate_stream, stream_tokens
    from interp.streaming.window_sweep import blowup_table, window_sweep
    from interp.viz.figures import streaming_ppl

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    text = load_text(cfg.text)
    n_sweep = cfg.quick_sweep_tokens if ctx.quick else cfg.sweep_tokens
    windows = cfg.quick_windows if ctx.quick else cfg.windows
    n_stream = cfg.quick_stream_tokens if ctx.quick else cfg.stream_tokens

    ctx.log(f"window sweep: {n_sweep} tokens, windows {list(windows)}, sinks {cfg.sinks}")
    model = interp.load_model(cfg.model, device=ctx.device, dtype=ctx.dtype)
    toks = stream_tokens(model.tokenizer, text, n_sweep, bos=cfg.bos)
    sweep = window_sweep(model, toks, windows=windows, sinks=cfg.sinks, progress=ctx.show_progress and ctx.is_main)
    del model
    blow = blowup_table(sweep)
    ctx.add_table("window_sweep", sweep,
                  f"perplexity of {cfg.model} on {n_sweep} tokens of {cfg.text!r}: every "
                  f"query keeps the first `sinks` keys + the `window` most recent (original "
                  f"positions); ppl_beyond = tokens after position "
                  f"{max(windows) + max(cfg.sinks)}")
    ctx.add_table("blowup", blow, "window-only / sink+window perplexity beyond the window")
    ctx.add_figure("ppl_vs_window", window_figure(sweep),
                   "perplexity beyond the window against the window size; dense is the "
                   "horizontal line")
    small = blow.iloc[0]
    ctx.add_text(f"Window {int(small.window)}: window-only perplexity {small.window_only:.1f} "
                 f"is {small.blowup:.1f}x that of {int(small.sinks)} sinks + window "
                 f"({small.with_sinks:.1f}); dense {small.dense:.1f}.", at_top=True)

    if n_stream:
        ctx.log(f"stream: {n_stream} tokens, {cfg.stream_sinks} sinks + {cfg.stream_window}")
        lm = streaming_lm(cfg.model, ctx.device, ctx.dtype)
        st = stream_tokens(lm.tokenizer, text, n_stream, bos=cfg.bos)
        res = evaluate_stream(lm, st, window=cfg.stream_window, sinks=cfg.stream_sinks,
                              chunk=cfg.chunk, recompute_stride=cfg.recompute_stride,
                              progress=ctx.show_progress and ctx.is_main)
        ctx.add_table("stream_chunks", res.chunks, "perplexity and decode ms per chunk")
        summary = res.summary()
        ctx.add_table("stream_summary", summary,
                      "ppl_after_evict: tokens after the first tokens left the bounded caches; "
                      "ms_per_token: median decode step (window and sink decoded as a pair)")
        ctx.add_figure("ppl_per_chunk", streaming_ppl(res.chunks),
                       "perplexity per chunk of the stream, per mode")


def window_figure(sweep):
    """Perplexity beyond the window against the window size, one trace per sink count, dense
    as a horizontal line (from a :func:`~interp.streaming.window_sweep.window_sweep` table)."""
    from interp.viz.figures import streaming_ppl

    rows = sweep.dropna(subset=["window"]).copy()
    rows["setting"] = [("window only" if s == 0 else f"{int(s)} sinks + window")
                       for s in rows["sinks"]]
    fig = streaming_ppl(rows, x="window", y="ppl_beyond", trace="setting",
                        title="what the first tokens are for: perplexity vs window")
    dense = float(sweep[sweep["window"].isna()]["ppl_beyond"].iloc[0])
    fig.add_hline(y=dense, line_dash="dash", annotation_text=f"dense {dense:.1f}")
    fig.update_layout(xaxis=dict(title="window (tokens)", type="log"))
    return fig
