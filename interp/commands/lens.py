"""``interp lens --model M --prompt TEXT [--answer TOK [--contrast TOK]]``: the logit lens at
one position (the top tokens read from the residual after every block) and, given an answer,
the direct logit attribution of every component to ``logit[answer] - logit[contrast]``.

Prints two tables: one row per layer (0 = the embeddings) with the top tokens and, with
``--answer``, the answer's rank and probability at that layer; then the DLA rows, strongest
first (``--top``), with the sum of all rows and the model's own logit difference. ``--html``
writes both as a standalone page (:func:`interp.attribution.view.attribution_view`). Bad
input (an answer that is not one token, a position outside the prompt, an unknown
``--components`` name) is one ``error:`` line, exit status 2.
"""
from __future__ import annotations

import argparse

from interp.cli import UserError, arguments, command, print_table


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="registry name (see `interp models`), model folder, .gguf file or hub id")
    p.add_argument("--prompt", required=True, help="the text to run")
    p.add_argument("--answer", help="the answer token (a single token, e.g. ' Mary' with its "
                                    "leading space, or a token id): adds the DLA table")
    p.add_argument("--contrast", help="attribute logit[answer] - logit[contrast] (needs --answer)")
    p.add_argument("--position", type=int, default=-1,
                   help="the position read (default -1: the last token)")
    p.add_argument("--k", type=int, default=3, help="top tokens per layer (default 3)")
    p.add_argument("--top", type=int, default=20,
                   help="DLA rows to print, largest |value| first (default 20; 0 = all)")
    p.add_argument("--components", nargs="+", default=None, metavar="NAME",
                   help="print only these DLA rows (embed, L3H2, L3.mlp, L3.attn_bias, bias)")
    p.add_argument("--html", metavar="FILE.html", help="also write the lens and DLA figures here")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")


def _token(text: str | None):
    """A token given as an id (digits) stays an int; anything else is a token string."""
    if text is None:
        return None
    return int(text) if text.strip().isdigit() and text == text.strip() else text


def _check(args) -> None:
    from interp.paths import check_output_path
    from interp.probes.common import check_prompt_text

    check_prompt_text(args.prompt)
    if args.contrast is not None and args.answer is None:
        raise UserError("--contrast needs --answer")
    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    if args.top < 0:
        raise UserError(f"--top must be >= 0, got {args.top}")
    if args.components and args.answer is None:
        raise UserError("--components needs --answer")
    if args.html:
        check_output_path(args.html, "page")


def lens_table(model, top, answer_id: int | None, lens_at_answer=None):
    """One row per layer: ``layer, top`` (the top tokens, ``repr`` joined by spaces),
    ``prob`` (of the first), and with an answer its ``answer_rank`` (0 = top) and
    ``answer_prob``."""
    import pandas as pd

    rows = []
    for layer, g in top.groupby("layer", sort=True):
        g = g.sort_values("rank")
        row = {"layer": int(layer), "top": " ".join(repr(t) for t in g.token),
               "prob": round(float(g.prob.iloc[0]), 4)}
        if lens_at_answer is not None:
            logits = lens_at_answer[int(layer)]
            row["answer_rank"] = int((logits > logits[answer_id]).sum())
            row["answer_prob"] = round(float(logits.softmax(-1)[answer_id]), 4)
        rows.append(row)
    return pd.DataFrame(rows)


@command("lens", "logit lens at a position and direct logit attribution of an answer token",
         devices="model")
@arguments(_args)
def cmd_lens(args) -> int:
    import interp
    from interp.attribution import answer_ids, direct_logit_attribution, logit_lens, top_tokens
    from interp.probes.common import to_tokens

    _check(args)
    model = interp.load_model(args.model, device=args.device, dtype=args.dtype)
    tokens = to_tokens(model, args.prompt)
    answer = _token(args.answer)
    top = top_tokens(model, tokens, k=args.k, positions=[args.position])
    position = int(top.position.iloc[0])
    lens_at = a_id = shown = dla = None
    if answer is not None:             # every input checked before anything is printed
        a_id = int(answer_ids(model, answer, 1)[0])
        lens_at = logit_lens(model, tokens, positions=[position])[:, 0, 0]
        shown = direct_logit_attribution(model, tokens, answer, _token(args.contrast), position,
                                         components=args.components)
        dla = shown if not (args.html and args.components) else direct_logit_attribution(
            model, tokens, answer, _token(args.contrast), position)
    tok = getattr(model, "tokenizer", None)
    at = f" ({tok.decode(tokens[0, position])!r})" if tok is not None else ""
    print(f"logit lens at position {position}{at}")
    print_table(lens_table(model, top, a_id, lens_at), args.format, None)
    if shown is not None:
        total, diff = shown.attrs["total"][0], shown.attrs["logit_diff"][0]
        shown = shown.reindex(shown.value.abs().sort_values(ascending=False).index)
        if args.top:
            shown = shown.head(args.top)
        what = f"logit[{args.answer!r}]" + (f" - logit[{args.contrast!r}]"
                                            if args.contrast is not None else "")
        print(f"\ndirect logit attribution to {what}: rows sum to {total:.4f}; "
              f"the model's own value {diff:.4f}")
        print_table(shown.round(4), args.format, None)
    if args.html:
        from interp.attribution.view import attribution_view
        from interp.viz.attention import token_strings

        labels = token_strings(model.tokenizer, tokens[0]) \
            if getattr(model, "tokenizer", None) is not None else None
        full = top_tokens(model, tokens, k=1)
        path = attribution_view(full, dla, position_labels=labels,
                                caption=f"{model.cfg.model_name}: {args.prompt!r}").save(args.html)
        print(f"wrote {path}")
    return 0
