"""``interp stream``: StreamingLLM evaluation (perplexity per chunk of a long stream and
per-token decode cost) of dense, window-only, sink + window and recompute attention.

(``interp probe sink`` is wired by ``interp/commands/probe.py`` to
:func:`interp.probes.sink.sink_probe_table`.)
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from interp.cli import UserError, arguments, command, print_table, source_literal


def read_text_arg(value: str) -> str:
    """``--text``: an existing file (read as UTF-8) or a registered text name
    (:func:`interp.data.load_text`)."""
    from interp.data import load_text, normalize_text

    from interp.paths import read_text_file

    p = Path(value)
    if p.exists() or p.suffix or "/" in value:
        return normalize_text(read_text_file(p, "text file"))
    return load_text(value)


def _stream_args(p: argparse.ArgumentParser) -> None:
    # read from interp.streaming's source: importing it imports torch
    modes = source_literal("interp.streaming.evaluate", "MODES")
    p.add_argument("--model", default="smollm2-135m",
                   help="a Llama-family pretrained model (default smollm2-135m)")
    p.add_argument("--window", type=int, default=256, help="recent tokens kept (default 256)")
    p.add_argument("--sinks", type=int, default=4,
                   help="initial tokens kept for ever (default 4); window-only keeps "
                        "sinks + window recent tokens, the same memory")
    p.add_argument("--tokens", type=int, default=2048,
                   help="length of the stream in tokens (default 2048)")
    p.add_argument("--mode", action="append", choices=modes + ("all",),
                   help="repeatable; default sink; 'all' = every mode")
    p.add_argument("--text", default="alice",
                   help="a text file, or a registered text name (default alice)")
    p.add_argument("--chunk", type=int, default=512, help="tokens per reported chunk")
    p.add_argument("--recompute-stride", type=int, default=256,
                   help="recompute is evaluated at every N-th position (default 256)")
    p.add_argument("--no-bos", action="store_true", help="do not start the stream with BOS")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--out", default=None, help="write the per-chunk table here")


@command("stream", "StreamingLLM: perplexity per chunk and decode cost of dense, window, "
                   "sink+window and recompute attention on a long text", devices="model")
@arguments(_stream_args)
def cmd_stream(args) -> int:
    import torch

    from interp.models.pretrained import PRETRAINED
    from interp.models.registry import unknown_model_error
    from interp.streaming import MODES

    if args.model not in PRETRAINED:
        raise unknown_model_error(args.model)
    if not PRETRAINED[args.model].causal:
        raise UserError(f"{args.model} is not a causal LM; streaming needs a decoder")
    if args.window < 1 or args.sinks < 0 or args.tokens < 2 or args.chunk < 1:
        raise UserError("need --window >= 1, --sinks >= 0, --tokens >= 2, --chunk >= 1")
    modes = tuple(args.mode or ["sink"])
    if "all" in modes:
        modes = MODES
    text = read_text_arg(args.text)
    if args.out:                                   # before the model loads
        from interp.paths import check_output_path

        check_output_path(args.out, "results")
    before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run_stream(args, modes, text)
    finally:
        torch.set_num_threads(before)


def _run_stream(args, modes, text) -> int:
    from interp.experiment_kinds.streaming import streaming_lm
    from interp.streaming import evaluate_stream, stream_tokens

    lm = streaming_lm(args.model, args.device, args.dtype)
    tokens = stream_tokens(lm.tokenizer, text, args.tokens, bos=not args.no_bos)
    if "dense" in modes and args.tokens > lm.n_ctx:
        print(f"interp stream: dense is evaluated on the first {lm.n_ctx} tokens only (the "
              f"model's context)", file=sys.stderr)

    def show(row: dict) -> None:
        ms = row["ms_per_token"]
        ms_s = "" if math.isnan(ms) else f"  {ms:8.1f} ms/token"
        print(f"{row['mode']:>9}  tokens {row['start']:>6}-{row['end']:<6} "
              f"ppl {row['ppl']:9.2f}{ms_s}", file=sys.stderr, flush=True)

    result = evaluate_stream(lm, tokens, window=args.window, sinks=args.sinks, modes=modes,
                             chunk=args.chunk, recompute_stride=args.recompute_stride,
                             on_chunk=show, progress=False)
    summary = result.summary()
    print("\nsummary (ppl_after_evict: tokens past the cache capacity "
          f"{result.capacity}):", file=sys.stderr)
    print(summary.to_string(index=False), file=sys.stderr)
    print_table(result.chunks, args.format, args.out)
    return 0
