"""``interp view``: write the attention patterns of chosen heads on a prompt as a standalone
HTML page (circuitsvis, JS bundle inline: opens with no network)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from interp.cli import UserError, arguments, command


def _window(value: str) -> int | tuple[int, int]:
    try:
        if ":" in value:
            start, end = value.split(":", 1)
            return int(start), int(end)
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or START:END, got {value!r}") from None


def _view_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registry name (interp models), model folder, .gguf file or hub id")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the text to run")
    src.add_argument("--text", metavar="FILE", help="read the text from this file (UTF-8)")
    p.add_argument("--out", required=True, metavar="FILE.html", help="where to write the page")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="keep only the first N tokens of the text, BOS included (needed when "
                        "the text is longer than the model's context)")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="layers to show (default all)")
    p.add_argument("--heads", type=int, nargs="+", default=None,
                   help="head indices to show in each layer (default all)")
    p.add_argument("--window", type=_window, default=None, metavar="N|START:END",
                   help="only tokens [0, N) or [START, END) (keeps long prompts small)")


@command("view", "write an attention-pattern view of a prompt as a standalone HTML page",
         devices="model")
@arguments(_view_args)
def cmd_view(args) -> int:
    import torch

    from interp.models.registry import load_model
    from interp.paths import PathError, check_output_path, file_error, read_text_file
    from interp.probes.common import check_prompt_text, check_tokens, context_length, encode
    from interp.probes.patterns import attention_view

    # everything that needs no model first: a typo costs no model load
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: expected a .html file name")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UserError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if args.text is not None:
        prompt = read_text_file(args.text, "text file")
        if not prompt.strip():
            raise UserError(f"the text file {args.text} is empty")
    else:
        prompt = args.prompt
        check_prompt_text(prompt)
    check_output_path(out, "the page")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    ids = encode(model, prompt, max_tokens=args.max_tokens)      # cut, then checked
    n_ctx = context_length(model)
    if len(ids) > n_ctx:
        if args.max_tokens is not None:
            raise UserError(f"--max-tokens {args.max_tokens} is over the context length of "
                            f"{n_ctx} for this model; use --max-tokens {n_ctx} or less")
        raise UserError(f"the {'text' if args.text is not None else 'prompt'} is over the "
                        f"context length of {n_ctx} tokens for this model; pass --max-tokens "
                        f"N (N <= {n_ctx}) to keep its first N tokens")
    tokens = check_tokens(model, torch.tensor([ids]))
    view = attention_view(model, tokens, layers=args.layers, heads=args.heads,
                          token_window=args.window)
    try:
        view.save(out)
    except OSError as exc:
        raise PathError(file_error(out, exc, "the page", write=True)) from None
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0
