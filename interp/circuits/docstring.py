"""The docstring task (Heimersheim & Janiak 2023, "A circuit for Python docstrings in a 4-layer
attention-only transformer") as a :class:`~interp.circuits.tasks.PatchingTask`.

A row is a Python function whose docstring documents its parameters in order, cut where the
next ``:param`` name is due::

    def {func}(self, {A}, {B}, {C}, {D}):
        \"\"\"{w} {w} {w}

        :param {A}: {w} {w}
        :param {B}: {w} {w}
        :param

The model should continue with `` {C}``: the parameter after the ones already documented,
which it can only know from the definition. Corrupted: the same row with the definition's
parameter names replaced by other names (the docstring is unchanged), so the definition no
longer says what comes next. Metric (the paper's): ``logit[C]`` minus the largest logit of the
definition's other parameter names ``A, B, D`` at the last position, averaged over rows; the
corrupted run is scored with the clean row's names.

Words: parameter names, function names and description words come from lists in this module
(short English words that read as Python identifiers); a name is kept for a tokenizer only
where ``" " + name`` is one token (:func:`~interp.circuits.standard_tasks.single_token_words`),
so a row's names are one token each wherever they appear (after ``(``/``, `` and after
``:param``; checked per row). Each row is tokenized with the model's own convention; a row is
kept only when clean and corrupted have the batch's one length and differ exactly at the
definition's parameter positions (else redrawn).
"""
from __future__ import annotations

import torch

from interp.circuits.metrics import Metric, _rows
from interp.circuits.standard_tasks import _lm_tokenizer, single_token_words
from interp.circuits.tasks import PatchingTask
from interp.errors import InputError, Refused
from interp.probes.common import check_tokens, encode
from interp.tasks._sampling import check_int, generator

#: parameter names (and the corrupted replacements): short identifiers
DOCSTRING_NAMES: tuple[str, ...] = (
    "load", "size", "files", "last", "value", "data", "name", "path", "mode", "key", "count",
    "index", "text", "line", "item", "node", "user", "port", "host", "limit", "page", "state",
    "color", "width", "height", "order", "group", "level", "score", "token", "label", "field",
    "table", "model", "image", "query", "source", "target", "start", "end", "step", "rate",
    "title", "price", "parent", "child", "content", "result", "options", "config", "length",
    "number", "message", "location", "filename", "timeout", "default", "format", "offset",
    "shape", "weight", "action", "event", "request", "response", "context", "session",
)
#: function names and description words
DOCSTRING_WORDS: tuple[str, ...] = (
    "oil", "column", "piece", "crime", "population", "unit", "dark", "river", "stone",
    "market", "energy", "music", "paper", "glass", "water", "light", "sound",
    "horse", "metal", "north", "green", "house", "plant", "money", "night", "voice", "school",
    "cloud", "brain", "heart", "ocean", "forest", "silver", "window", "garden", "winter",
    "summer", "bridge", "letter", "dinner", "camera", "engine", "island", "planet",
)
_MAX_TRIES = 50


def _row_text(func: str, def_params: list[str], params: list[str], shown: int,
              words: list[str]) -> str:
    """The prompt text: the definition with ``def_params``, a one-line summary and the first
    ``shown`` of ``params`` documented, cut after the next ``:param``."""
    lines = [f"def {func}(self, {', '.join(def_params)}):",
             f'    """{words[0]} {words[1]} {words[2]}', ""]
    for i in range(shown):
        lines.append(f"    :param {params[i]}: {words[3 + 2 * i]} {words[4 + 2 * i]}")
    lines.append("    :param")
    return "\n".join(lines)


def docstring_metric(position: int, correct: torch.Tensor, others: torch.Tensor) -> Metric:
    """Mean over rows of ``logit[correct] - max_k logit[others[:, k]]`` at ``position``.

    Args:
        position: the query position (one for every row).
        correct: ``[batch]`` token ids.
        others: ``[batch, K]`` token ids of the competing names.

    Returns:
        ``logits [batch, seq, vocab] -> scalar tensor``.
    """
    correct, others = torch.as_tensor(correct), torch.as_tensor(others)

    def fn(logits: torch.Tensor) -> torch.Tensor:
        row = _rows(logits, [position])[:, 0]                                  # [b, V]
        c = row.gather(-1, correct.to(logits.device)[:, None])[:, 0]
        o = row.gather(-1, others.to(logits.device)).max(-1).values
        return (c - o).mean()

    return fn


def docstring_task(model, n: int = 32, seed: int = 0, n_params: int = 4,
                   shown: int = 2) -> PatchingTask:
    """Docstring task (Heimersheim & Janiak 2023; module docstring for the row format).

    Args:
        model: a causal LM with a tokenizer.
        n: rows (int >= 1).
        seed: the draw (names and words; CPU generator).
        n_params: parameters of each definition (besides ``self``), >= 3.
        shown: parameters already documented; the answer is parameter ``shown`` (0-based),
            1 <= shown <= n_params - 2 (so at least one parameter follows the answer).

    Returns:
        A task with ``clean``/``corrupted`` ``[n, seq]`` and ``info``: ``answer`` (``[n]``
        ids of the due name), ``others`` (``[n, n_params - 1]`` ids of the definition's other
        names), ``param_pos`` (the definition's name positions, same for every row),
        ``answer_position``, ``names`` (the kept names), ``example``/``corrupted_example``,
        ``metric``. No ``info["contrast"]``: the metric's competitor is the best of several.

    Raises:
        InputError: bad ``n``/``seed``/``n_params``/``shown``, a model without a tokenizer.
        Refused: an encoder; fewer than ``2 * n_params`` one-token names for this tokenizer;
            no row tokenizing as expected after 50 draws per row.
    """
    n, seed = check_int("n", n, 1), check_int("seed", seed, 0)
    n_params = check_int("n_params", n_params, 3)
    shown = check_int("shown", shown, 1)
    if shown > n_params - 2:
        raise InputError(f"docstring_task: shown must be <= n_params - 2 = {n_params - 2}, "
                         f"got {shown}")
    tok = _lm_tokenizer(model, "docstring_task")
    names = single_token_words(tok, DOCSTRING_NAMES)
    words = list(dict.fromkeys(DOCSTRING_WORDS))
    if len(names) < 2 * n_params:
        raise Refused(f"docstring_task: only {len(names)} of the names are one token for this "
                      f"tokenizer; {2 * n_params} needed")
    name_list = list(names)
    g = generator(seed)
    pick = lambda k, pool: [pool[i] for i in torch.randperm(len(pool), generator=g)[:k]]  # noqa: E731
    rows, corr_rows, meta, length, param_pos = [], [], [], None, None
    for _ in range(n):
        for _try in range(_MAX_TRIES):
            drawn = pick(2 * n_params, name_list)
            params, repl = drawn[:n_params], drawn[n_params:]
            ws = pick(3 + 2 * shown + 1, words)
            func = ws[-1]
            clean = encode(model, _row_text(func, params, params, shown, ws))
            corr = encode(model, _row_text(func, repl, params, shown, ws))
            if len(clean) != len(corr) or (length is not None and len(clean) != length):
                continue
            diff = [i for i, (a, b) in enumerate(zip(clean, corr)) if a != b]
            where = [clean.index(names[p]) if names[p] in clean else -1 for p in params]
            if diff != sorted(where) or where != sorted(where) or -1 in where:
                continue
            if param_pos is not None and where != param_pos:
                continue
            length, param_pos = len(clean), where
            rows.append(clean)
            corr_rows.append(corr)
            meta.append((names[params[shown]],
                         [names[p] for i, p in enumerate(params) if i != shown]))
            break
        else:
            raise Refused(f"docstring_task: no row tokenized as expected after {_MAX_TRIES} "
                          f"draws (names must be one token after '(', ', ' and ':param')")
    answer = torch.tensor([m[0] for m in meta])
    others = torch.tensor([m[1] for m in meta])
    last = length - 1
    return PatchingTask(check_tokens(model, torch.tensor(rows)),
                        check_tokens(model, torch.tensor(corr_rows)),
                        docstring_metric(last, answer, others), name="docstring",
                        info={"answer": answer.tolist(), "others": others.tolist(),
                              "param_pos": param_pos, "answer_position": last,
                              "names": names, "n_params": n_params, "shown": shown,
                              "metric": "logit(next param) - max logit(other def params) at "
                                        "the last position",
                              "example": tok.decode(rows[0]),
                              "corrupted_example": tok.decode(corr_rows[0])})
