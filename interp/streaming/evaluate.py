"""Streaming evaluation: perplexity per chunk of a long stream, and per-token decode cost,
for four ways of attending (Xiao et al. 2023, fig. 3 / table 1).

Modes (``C = sinks + window`` is the cache budget shared by the bounded modes):

- ``dense``: full causal attention over the whole stream (up to the model's context),
  computed chunk-wise through a cache that never evicts (exact dense logits). Its decode
  cost is timed by one extra single-token step at the end of each chunk (cache length L).
- ``window``: window-only KV cache of the ``C`` most recent tokens, positions in the cache,
  token-by-token decoding.
- ``sink``: StreamingLLM, ``sinks`` first tokens + the ``window`` most recent, positions in
  the cache, token-by-token decoding. When both ``window`` and ``sink`` are asked for they are
  decoded together as a batch of two streams (same capacity ``C``), so the model weights are
  read once per step; the reported step time is then that of the pair.
- ``recompute``: sliding window with re-computation: the prediction of token ``t`` comes
  from a fresh forward of the ``C`` tokens before it (positions ``0..C-1``). One forward per
  token is too slow to do everywhere on CPU, so it is evaluated at every
  ``recompute_stride``-th position; :meth:`StreamResult.summary` also reports every mode's
  perplexity on exactly those positions (``ppl_matched``).

Token ``t``'s loss is ``-log p(x_t | context)``; the first token has none. The bounded
modes equal ``dense`` exactly until the stream outgrows ``C``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor

from interp.errors import InputError
from interp.streaming.decoder import StreamingLM

MODES = ("dense", "window", "sink", "recompute")


@dataclass
class StreamResult:
    """Per-token losses and timings of one streaming evaluation.

    Attributes:
        nll: ``{mode: [T] float64}``, loss of token ``t`` (NaN where not evaluated).
        step_ms: ``{mode: [T] float64}``, wall time of the decode step that produced the
            prediction of token ``t`` (NaN where not timed; dense: only the probe steps).
        chunks: one row per (mode, chunk): ``mode, chunk, start, end, n_eval, ppl,
            ms_per_token``.
        capacity, sinks, window, chunk: the settings.
    """

    nll: dict[str, Tensor]
    step_ms: dict[str, Tensor]
    chunks: pd.DataFrame
    capacity: int
    sinks: int
    window: int
    chunk: int
    extra: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """One row per mode: ``ppl`` (all evaluated tokens), ``ppl_after_evict`` (tokens
        ``t >= capacity``, once the first tokens have left a bounded cache), ``ppl_matched``
        (on the recompute positions, if any), ``ms_per_token`` (median decode step), ``n_eval``."""
        rows = []
        matched = None
        if "recompute" in self.nll:
            matched = ~torch.isnan(self.nll["recompute"])
        for mode, nll in self.nll.items():
            ok = ~torch.isnan(nll)
            late = ok.clone()
            late[: self.capacity] = False
            ms = self.step_ms[mode]
            ms = ms[~torch.isnan(ms)]
            rows.append({
                "mode": mode,
                "ppl": _ppl(nll[ok]),
                "ppl_after_evict": _ppl(nll[late]),
                "ppl_matched": _ppl(nll[matched & ok]) if matched is not None else math.nan,
                "ms_per_token": float(ms.median()) if ms.numel() else math.nan,
                "n_eval": int(ok.sum()),
            })
        return pd.DataFrame(rows)


def _ppl(nll: Tensor) -> float:
    """``exp(mean nll)`` in float64; NaN for no tokens."""
    return float(torch.exp(nll.double().mean())) if nll.numel() else math.nan


def _nll(logits: Tensor, targets: Tensor) -> Tensor:
    """logits ``[..., vocab]`` (any device), targets ``[...]`` -> ``-log p(target)`` (float64,
    on the CPU; computed in float64 on the logits' device, float32 where it has no float64)."""
    wide = torch.float32 if logits.device.type == "mps" else torch.float64
    lp = torch.log_softmax(logits.to(wide), dim=-1)
    return -lp.gather(-1, targets.to(logits.device)[..., None])[..., 0].double().cpu()


def evaluate_stream(lm: StreamingLM, tokens: Tensor, window: int = 256, sinks: int = 4,
                    modes: Sequence[str] = MODES, chunk: int = 512,
                    recompute_stride: int = 256,
                    on_chunk: Callable[[dict], None] | None = None,
                    progress: bool = True) -> StreamResult:
    """Stream ``tokens`` ``[T]`` through ``lm`` in each of ``modes``.

    Args:
        lm: a :class:`StreamingLM`.
        tokens: 1-D token ids (the stream, e.g. a BOS then a long text).
        window, sinks: the bounded caches hold ``sinks + window`` tokens (window-only keeps
            that many recent tokens: the same memory as StreamingLLM).
        modes: any of ``"dense", "window", "sink", "recompute"``.
        chunk: perplexities are reported per ``chunk`` stream positions.
        recompute_stride: ``recompute`` is evaluated at every ``recompute_stride``-th position.
        on_chunk: called with each finished chunk row (a dict) as the evaluation goes.
        progress: tqdm progress bars on stderr.

    Returns:
        :class:`StreamResult`.

    Raises:
        InputError: (a ``ValueError``) an unknown mode, a bad window or sink count, a stream
            under 2 tokens, or a cache budget over the model's context.
    """
    tokens = torch.as_tensor(tokens).long().flatten()
    cap = _check_stream(lm, tokens.numel(), window, sinks, modes)
    rec = _Recorder(tokens.numel(), chunk, on_chunk)
    if "dense" in modes:
        _stream_dense(lm, tokens, rec, progress)
    bounded = [m for m in ("window", "sink") if m in modes]
    if bounded:
        _stream_bounded(lm, tokens, rec, bounded, cap, sinks, progress)
    if "recompute" in modes:
        _stream_recompute(lm, tokens, rec, cap, recompute_stride, progress)
    chunks = pd.DataFrame(rec.rows, columns=["mode", "chunk", "start", "end", "n_eval", "ppl",
                                             "ms_per_token"])
    return StreamResult(nll=rec.nll, step_ms=rec.step_ms, chunks=chunks, capacity=cap,
                        sinks=sinks, window=window, chunk=chunk)


def _check_stream(lm: StreamingLM, T: int, window, sinks, modes: Sequence[str]) -> int:
    """The cache budget ``sinks + window``, after checking the arguments of
    :func:`evaluate_stream`."""
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InputError(f"unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    if not (isinstance(window, int) and window >= 1) or not (isinstance(sinks, int)
                                                             and sinks >= 0):
        raise InputError(f"window must be >= 1 and sinks >= 0, got {window}, {sinks}")
    if T < 2:
        raise InputError("the stream needs at least 2 tokens")
    cap = sinks + window
    if cap > lm.n_ctx:
        raise InputError(f"sinks + window = {cap} is over the model's context of {lm.n_ctx}")
    return cap


class _Recorder:
    """Per-token losses and step times of each mode (``[T]`` float64, NaN where not
    evaluated), and one row per finished (mode, chunk), handed to ``on_chunk`` as it comes."""

    def __init__(self, T: int, chunk: int, on_chunk: Callable[[dict], None] | None) -> None:
        self.T, self.chunk, self.on_chunk = T, chunk, on_chunk
        self.nll: dict[str, Tensor] = {}
        self.step_ms: dict[str, Tensor] = {}
        self.rows: list[dict] = []
        #: ``(start, end)`` of every chunk of the stream
        self.bounds = [(c0, min(T, c0 + chunk)) for c0 in range(0, T, chunk)]

    def start(self, mode: str) -> None:
        self.nll[mode] = torch.full((self.T,), math.nan, dtype=torch.float64)
        self.step_ms[mode] = torch.full((self.T,), math.nan, dtype=torch.float64)

    def emit(self, mode: str, c0: int, c1: int) -> None:
        part = self.nll[mode][c0:c1]
        ok = ~torch.isnan(part)
        ms = self.step_ms[mode][c0:c1]
        ms = ms[~torch.isnan(ms)]
        row = {"mode": mode, "chunk": c0 // self.chunk, "start": c0, "end": c1,
               "n_eval": int(ok.sum()), "ppl": _ppl(part[ok]),
               "ms_per_token": float(ms.mean()) if ms.numel() else math.nan}
        self.rows.append(row)
        if self.on_chunk is not None:
            self.on_chunk(row)


def _stream_dense(lm: StreamingLM, tokens: Tensor, rec: _Recorder, progress: bool) -> None:
    """``dense``: chunk-wise through a cache that never evicts (up to the model's context);
    one timed single-token step at the end of each chunk."""
    from tqdm.auto import tqdm

    T = tokens.numel()
    rec.start("dense")
    nll, step_ms = rec.nll["dense"], rec.step_ms["dense"]
    n_dense = min(T, lm.n_ctx)
    cache = lm.new_cache(n_dense, 0)
    for c0, c1 in tqdm(rec.bounds, desc="dense", disable=not progress, leave=False):
        if c0 >= n_dense:
            rec.emit("dense", c0, c1)                   # beyond the model's context: NaN
            continue
        c1d = min(c1, n_dense)
        logits = lm.step(tokens[None, c0:c1d], cache)[0]           # [n, vocab]
        tgt = slice(c0 + 1, min(c1d + 1, T))
        nll[tgt] = _nll(logits[: tgt.stop - tgt.start], tokens[tgt])
        if c1d < min(T, n_dense):                       # time one decode step at length c1d
            t0 = time.perf_counter()
            lm.step(tokens[None, c1d:c1d + 1], cache)
            step_ms[c1d] = (time.perf_counter() - t0) * 1e3
            cache.truncate(c1d)
        rec.emit("dense", c0, c1)


def _stream_bounded(lm: StreamingLM, tokens: Tensor, rec: _Recorder, bounded: list[str],
                    cap: int, sinks: int, progress: bool) -> None:
    """``window`` and/or ``sink``: one cache of ``cap`` tokens per mode, decoded together as
    a batch (prefill while nothing is evicted, then one token at a time)."""
    from tqdm.auto import tqdm

    T, chunk, bounds = tokens.numel(), rec.chunk, rec.bounds
    for m in bounded:
        rec.start(m)
    cache = lm.new_cache(cap, [0 if m == "window" else sinks for m in bounded])
    b = len(bounded)
    pre = min(T, cap)
    done = 0
    bar = tqdm(total=T, desc="+".join(bounded), disable=not progress, leave=False)
    emitted = 0

    def flush(upto: int) -> int:
        nonlocal emitted
        while emitted < len(bounds) and bounds[emitted][1] <= upto:
            for m in bounded:
                rec.emit(m, *bounds[emitted])
            emitted += 1
        return emitted

    while done < pre:                                   # prefill: nothing evicted yet
        n = min(chunk, pre - done)
        logits = lm.step(tokens[None, done:done + n].expand(b, n), cache)   # [b, n, V]
        tgt = torch.arange(done + 1, min(done + n + 1, T))
        for i, m in enumerate(bounded):
            rec.nll[m][tgt] = _nll(logits[i, : tgt.numel()], tokens[tgt])
        done += n
        bar.update(n)
        flush(done)
    for t in range(done, T):                            # decode one token at a time
        t0 = time.perf_counter()
        logits = lm.step(tokens[t:t + 1].expand(b, 1), cache)[:, 0]         # [b, V]
        dt = (time.perf_counter() - t0) * 1e3
        if t + 1 < T:
            loss = _nll(logits, tokens[t + 1].expand(b))
            for i, m in enumerate(bounded):
                rec.nll[m][t + 1] = loss[i]
                rec.step_ms[m][t + 1] = dt
        bar.update(1)
        flush(t + 2)
    bar.close()
    flush(T + 1)


def _stream_recompute(lm: StreamingLM, tokens: Tensor, rec: _Recorder, cap: int,
                      recompute_stride: int, progress: bool) -> None:
    """``recompute``: a fresh forward of the ``cap`` tokens before every
    ``recompute_stride``-th position."""
    from tqdm.auto import tqdm

    T, chunk = tokens.numel(), rec.chunk
    rec.start("recompute")
    targets = list(range(recompute_stride, T, recompute_stride)) or [T - 1]
    by_chunk = {}
    for t in targets:
        by_chunk.setdefault(t // chunk, []).append(t)
    for c0, c1 in tqdm(rec.bounds, desc="recompute", disable=not progress, leave=False):
        for t in by_chunk.get(c0 // chunk, []):
            ctx = tokens[max(0, t - cap):t]
            t0 = time.perf_counter()
            logits = lm.forward(ctx[None])[0, -1]
            rec.step_ms["recompute"][t] = (time.perf_counter() - t0) * 1e3
            rec.nll["recompute"][t] = _nll(logits, tokens[t])
        rec.emit("recompute", c0, c1)


def stream_tokens(tokenizer, text: str, n_tokens: int | None = None,
                  bos: bool = True) -> Tensor:
    """The token stream ``[T]`` of ``text`` (a BOS first when ``bos`` and the tokenizer has
    one), cut to ``n_tokens``. Raises :class:`~interp.errors.InputError` (a ``ValueError``)
    when the text is too short."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    if n_tokens is not None:
        if len(ids) < n_tokens:
            raise InputError(f"the text has only {len(ids)} tokens, {n_tokens} were asked for")
        ids = ids[:n_tokens]
    return torch.tensor(ids, dtype=torch.long)
