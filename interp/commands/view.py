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
    from interp.models.registry import load_model
    from interp.viz import attention_view

    if args.text is not None:
        path = Path(args.text)
        if not path.is_file():
            raise UserError(f"--text {path}: no such file")
        prompt = path.read_text(encoding="utf-8")
    else:
        prompt = args.prompt
    if not prompt.strip():
        raise UserError("the prompt is empty")
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: expected a .html file name")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    view = attention_view(model, prompt, layers=args.layers, heads=args.heads,
                          token_window=args.window)
    view.save(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0
