"""``interp probe <name> --model M [--prompt S | --text FILE]``: run one probe, print its table.

The probes available are the entries of :data:`PROBES` (name -> how to run it and how to sort
its table); ``--help`` and the ``name`` choices are built from it.

Inputs are checked before the model loads (empty prompt, unreadable ``--text``, unwritable
``--out``: one line, exit status 2). ``--text`` is cut to ``--max-tokens`` tokens before the
context-length check. The probes themselves validate the tokens
(:func:`interp.probes.common.check_prompt`): too short is an error, valid but uninformative
input (no repeated token for induction, a prompt shorter than the default sink positions or
than every locality window) is a ``warning:`` line and the table is still printed. A ``--text``
that names no file but looks like a sentence is refused with a pointer to ``--prompt``.

Progress (stderr; ``--no-progress`` turns it off): a line while the model loads and one when
it is loaded, and the probe's per-layer bars (the pattern scores, then the copying scores),
each once that step has run for more than a second (one line per update when stderr is not a
terminal, :mod:`interp.progress`); a quick run prints nothing but its table.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from interp.cli import UserError, arguments, command, print_table, source_literal

if TYPE_CHECKING:                 # imported where used: `interp --help` needs neither
    import pandas as pd


@dataclass(frozen=True)
class ProbeEntry:
    """How ``interp probe`` runs a probe: ``run(model, tokens_or_None, args) -> DataFrame``
    (``None`` = the probe's default inputs), then sorts by ``sort_by`` (top first)."""

    run: Callable[..., pd.DataFrame]
    sort_by: str
    ascending: bool
    help: str


def _induction(model, tokens, args) -> pd.DataFrame:
    from interp.probes.induction import induction_scores

    if tokens is None:
        return induction_scores(model, seg_len=args.seg_len, batch=args.batch, seed=args.seed,
                                method=args.method)
    return induction_scores(model, tokens, seg_len=None, method=args.method)


def _locality(model, tokens, args) -> pd.DataFrame:
    from interp.probes.induction import repeated_random_tokens
    from interp.probes.locality import locality_scores

    if tokens is None:
        tokens = repeated_random_tokens(model, batch=args.batch, seg_len=args.seg_len,
                                        seed=args.seed)
    return locality_scores(model, tokens, method=args.method)


def _sink(model, tokens, args) -> pd.DataFrame:
    from interp.probes.sink import sink_probe_table

    if tokens is None:                   # Gu et al.: 64-token natural-text prompts
        import torch

        from interp.data import load_text
        from interp.models.loading import ensure_info
        from interp.probes.common import check_tokens
        from interp.probes.sink import text_windows

        body = text_windows(model.tokenizer, load_text("alice"), n=args.batch, length=63,
                            skip=200)
        bos = model.tokenizer.bos_token_id if model.cfg.default_prepend_bos else None
        if ensure_info(model).causal and bos is not None:
            body = torch.cat([torch.full((body.shape[0], 1), bos, dtype=body.dtype,
                                         device=body.device), body], dim=1)
        tokens = check_tokens(model, body)
    return sink_probe_table(model, tokens, method=args.method)


PROBES: dict[str, ProbeEntry] = {
    "sink": ProbeEntry(_sink, "layer", True,
                       "per layer: attention mass on positions 0-3, Sink^0.3 share, key/value "
                       "norm ratio of the first token (default input: 64-token text windows)"),
    "induction": ProbeEntry(_induction, "induction", False,
                            "induction / prefix-matching / previous-token / duplicate-token / "
                            "copying scores per head (default input: repeated random tokens)"),
    "locality": ProbeEntry(_locality, "mass_inside", True,
                           "share of each head's attention inside sliding-window / block-sparse "
                           "layouts (lowest first: heads a sparse swap would hurt)"),
}


def _tokens(model, args):
    """The ``[batch, seq]`` ids of ``--text`` (its first ``--max-tokens`` tokens: cut
    first, then checked against the context length) or ``--prompt``; None = the probe's
    default input. ``args.text_content`` was read by :func:`_check_inputs`."""
    import torch

    from interp.probes.common import check_tokens, context_length, encode, to_tokens

    if args.text is not None:
        ids = encode(model, args.text_content, max_tokens=args.max_tokens)
        n_ctx = context_length(model)
        if len(ids) > n_ctx:
            raise UserError(f"--max-tokens {args.max_tokens} is over the context length of "
                            f"{n_ctx} for this model; use --max-tokens {n_ctx} or less")
        return check_tokens(model, torch.tensor([ids]))
    if args.prompt is not None:
        return to_tokens(model, args.prompt)
    return None


def _check_inputs(args) -> None:
    """Everything that can be checked without a model, so a typo costs no model load: the
    prompt (not empty), the text file (exists, readable, UTF-8, not empty), the output path
    (its folder exists or can be created and accepts files) and the numbers."""
    from interp.paths import check_output_path, read_text_file
    from interp.probes.common import check_prompt_text

    for flag, value, low in (("--max-tokens", args.max_tokens, 2), ("--seg-len", args.seg_len, 1),
                             ("--batch", args.batch, 1), ("--top", args.top, 1)):
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    if args.prompt is not None:
        check_prompt_text(args.prompt)
    args.text_content = None
    if args.text is not None:
        check_text_flag(args.text)
        args.text_content = read_text_file(args.text, "text file")
        if not args.text_content.strip():
            raise UserError(f"the text file {args.text} is empty")
    if args.out:
        check_output_path(args.out, "results")


def check_text_flag(value: str, flag: str = "--text", instead: str = "--prompt") -> None:
    """Refuse a ``--text FILE`` value that names no file: when it looks like text rather than a
    path (spaces, no file suffix), the message says to pass the text with ``--prompt``."""
    import os
    from pathlib import Path

    path = Path(value).expanduser()
    if os.path.lexists(path):
        return                                # read_text_file words any other problem
    looks_like_text = (any(ch.isspace() for ch in value.strip()) or not path.suffix
                       or len(value) > 255)
    if looks_like_text:
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise UserError(f"{flag} takes a FILE to read, and there is no file {shown!r}; to "
                        f"probe a text given on the command line use {instead} "
                        f"\"{shown}\"")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=sorted(PROBES), help="; ".join(
        f"{k}: {v.help}" for k, v in sorted(PROBES.items())))
    p.add_argument("--model", default="smollm2-135m", help="registry name (see `interp models`), model folder, .gguf file or hub id")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="probe this text")
    src.add_argument("--text", metavar="FILE",
                     help="probe the text in this UTF-8 file (its first --max-tokens tokens)")
    p.add_argument("--max-tokens", type=int, default=512,
                   help="with --text: keep the first N tokens, BOS included (default 512; "
                        "at most the model's context length)")
    p.add_argument("--seg-len", type=int, default=50, help="repeated segment length (default input)")
    p.add_argument("--batch", type=int, default=8, help="rows of the default input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=source_literal("interp.probes.blockwise", "METHODS"),
                   default="auto",
                   help="pattern: reduce each layer's [n, n] attention pattern; blockwise: a "
                        "block of query rows at a time, O(n) memory, stops after the last "
                        "probed layer (long texts); auto (default): blockwise for long inputs")
    p.add_argument("--top", type=int, default=None, help="print only the top N rows")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--out", help="write the table to this file instead of stdout")
    p.add_argument("--no-progress", action="store_true",
                   help="no stage lines or progress bars on stderr")


@command("probe", "run a probe on a model and print one row per layer/head, top heads first",
         devices="model")
@arguments(_args)
def cmd_probe(args) -> int:
    from interp import progress

    entry = PROBES[args.name]
    _check_inputs(args)
    with progress.settings(not args.no_progress):
        with progress.stage(f"interp probe: loading model {args.model}"):
            import interp

            model = interp.load_model(args.model, device=args.device, dtype=args.dtype)
        df = entry.run(model, _tokens(model, args), args)
    df = df.sort_values(entry.sort_by, ascending=entry.ascending).reset_index(drop=True)
    if args.top:
        df = df.head(args.top)
    print_table(df.round(4), args.format, args.out)
    return 0
