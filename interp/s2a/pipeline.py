"""System 2 Attention (Weston & Sukhbaatar 2023) on a small chat model, three conditions:

- ``original``: answer from the context as given (relevant fact + distractors + opinion);
- ``s2a``: step 1, the model rewrites the context keeping only relevant, unbiased text
  (:data:`REWRITE_PROMPT`, the paper's instruction adapted for a 135M model: it is asked for
  the useful sentences only, and the question is appended by us in step 2 instead of being
  extracted by the model); step 2, it answers from the rewrite;
- ``oracle``: answer from the relevant segments only (distractors and opinions removed by the
  data's marks).

Architecture
------------
Answer prompts are one user message ``ANSWER_PROMPT`` in the chat template
(:func:`interp.generation.chat_text`); :func:`answer_prompt` returns it as a
:class:`interp.probes.distraction.LabelledPrompt` (character spans of the context's segments
and of the question inside the formatted string), which the distraction probe maps to tokens
with the tokenizer's offsets. For the rewrite, :func:`match_segments` finds the original
segments in the rewritten text (difflib matching blocks of at least ``min_match`` characters;
the longest block claims a character first) and reports the share of each label's text that
survives. Generation is greedy (:func:`interp.generation.greedy_generate`), by default with a
plain HF copy of the model and its own KV cache (tested equal to HF ``generate``), or with
``generate_with="bridge"`` on the hooked bridge itself through :func:`interp.generate`'s KV
cache (the same tokens, no second copy of the weights). Attention is always measured on the
hooked bridge at the last prompt token, where the first answer token is produced.

Each question is independent work (:func:`s2a_example`: rewrite, three answers, attention on
the three answer prompts, one forward each); :func:`run_s2a` maps it over the questions with a
plain loop or a given ``map_fn`` (the experiment kind passes ``RunContext.map``, so a sharded
run splits the questions over its ranks) and assembles the tables from the results in
question order.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd

from interp.errors import InputError
from interp.generation import chat_text, greedy_generate
from interp.probes.distraction import LabelledPrompt, distraction_scores
from interp.s2a.data import S2AExample, answer_in, is_correct

CONDITIONS = ("original", "s2a", "oracle")
ANSWER_PROMPT = "{context}\n\nQuestion: {question}\nAnswer in a few words."
REWRITE_PROMPT = (
    "Given the following text by a user, extract the part that is unbiased and not their "
    "opinion, so that using that text alone would be good context for answering the "
    "question. Do not answer the question. Copy, word for word, only the sentences from the "
    "text that are facts needed for the question.\n\nText: \"{context}\"\n\n"
    "Question: {question}")
_QUESTION_PREFIX = "\n\nQuestion: "


def answer_prompt(tokenizer, example_id: str, context: str,
                  context_spans: Sequence[tuple[int, int, str]], question: str) -> LabelledPrompt:
    """The chat-formatted answer prompt with the context's spans and the question marked."""
    content = ANSWER_PROMPT.format(context=context, question=question)
    text = chat_text(tokenizer, content)
    base = text.rfind(content)
    if base < 0:
        raise RuntimeError("the chat template changed the user message; cannot place spans")
    spans = [(base + s, base + e, lab) for s, e, lab in context_spans if e > s]
    q0 = base + len(context) + len(_QUESTION_PREFIX)
    spans.append((q0, q0 + len(question), "question"))
    return LabelledPrompt(example_id, text, tuple(spans))


def _segment_prompt(tokenizer, example_id: str, segments, question: str) -> LabelledPrompt:
    spans, pos = [], 0
    for s in segments:
        spans.append((pos, pos + len(s.text), s.label))
        pos += len(s.text)
    return answer_prompt(tokenizer, example_id, "".join(s.text for s in segments), spans,
                         question)


def match_segments(rewrite: str, example: S2AExample, min_match: int = 10
                   ) -> tuple[list[tuple[int, int, str]], dict[str, float]]:
    """Find the example's labelled segments in a rewritten context.

    Returns:
        ``(spans, survival)``: labelled character spans of ``rewrite`` (uncovered text is
        new text written by the model), and per label the share of the original label's
        characters found in the rewrite (0..1; ``nan`` when the example has no such text).
    """
    blocks = []
    for seg in example.segments:
        src = seg.text.strip()
        sm = difflib.SequenceMatcher(None, src, rewrite, autojunk=False)
        for b in sm.get_matching_blocks():
            if b.size >= min(min_match, len(src)) and b.size > 0:
                blocks.append((b.size, b.b, seg.label))
    owner: list[str | None] = [None] * len(rewrite)
    for size, start, label in sorted(blocks, key=lambda t: (-t[0], t[1])):
        for i in range(start, start + size):
            if owner[i] is None:
                owner[i] = label
    spans, i = [], 0
    while i < len(owner):
        if owner[i] is None:
            i += 1
            continue
        j = i
        while j < len(owner) and owner[j] == owner[i]:
            j += 1
        spans.append((i, j, owner[i]))
        i = j
    survival = {}
    for label in ("relevant", "distractor", "opinion"):
        total = sum(len(s.text.strip()) for s in example.segments if s.label == label)
        found = sum(1 for o in owner if o == label)
        survival[label] = min(1.0, found / total) if total else float("nan")
    return spans, survival


def clean_rewrite(text: str) -> str:
    """The rewrite as used for step 2: stripped of whitespace and enclosing quotes."""
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] == '"':
        t = t[1:-1].strip()
    return t or "(empty)"


@dataclass
class S2AResult:
    """Output of :func:`run_s2a`.

    Attributes:
        table: one row per condition: ``condition, accuracy, distractor_attention,
            relevant_attention, opinion_attention, question_attention,
            template_attention, follows_opinion, n`` (+ ``*_survival`` for ``s2a``).
        per_example: one row per (example, condition): prompt context, output, correct,
            follows_opinion, the rewrite and survival shares (``s2a``), mean masses.
        per_layer: one row per (condition, layer): mean mass of each category over heads
            and examples.
        scores: the raw probe table (example, condition, layer, head, masses).
    """

    table: pd.DataFrame
    per_example: pd.DataFrame
    per_layer: pd.DataFrame
    scores: pd.DataFrame


def s2a_example(model, ex: S2AExample, generator=None, answer_tokens: int = 24,
                rewrite_tokens: int = 64) -> tuple[list[dict], pd.DataFrame]:
    """One question through the three conditions: the rewrite, the three answers and the
    attention on the three answer prompts.

    Deterministic (greedy decoding, no random numbers), so a question gives the same result
    whichever process computes it and whatever ran before.

    Returns:
        ``(rows, scores)``: one per-example row per condition (see :class:`S2AResult`) and
        the probe table of the three answer prompts (``condition`` column first).
    """
    tok = model.tokenizer
    gen = generator if generator is not None else model
    rewrite_raw = greedy_generate(gen, REWRITE_PROMPT.format(context=ex.context,
                                                             question=ex.question),
                                  tokenizer=tok, max_new_tokens=rewrite_tokens).text
    rewrite = clean_rewrite(rewrite_raw)
    spans, survival = match_segments(rewrite, ex)
    lp = {
        "original": _segment_prompt(tok, f"{ex.id}/original", ex.segments, ex.question),
        "s2a": answer_prompt(tok, f"{ex.id}/s2a", rewrite, spans, ex.question),
        "oracle": _segment_prompt(tok, f"{ex.id}/oracle", ex.oracle_segments(), ex.question),
    }
    contexts = {"original": ex.context, "s2a": rewrite,
                "oracle": "".join(s.text for s in ex.oracle_segments())}
    rows = []
    for cond in CONDITIONS:
        out = greedy_generate(gen, ANSWER_PROMPT.format(context=contexts[cond],
                                                        question=ex.question),
                              tokenizer=tok, max_new_tokens=answer_tokens).text
        ok = is_correct(out, ex)
        row = {"example": ex.id, "condition": cond, "context": contexts[cond],
               "output": out.strip(), "correct": ok,
               "follows_opinion": (not ok) and answer_in(ex.opinion_answer, out)}
        if cond == "s2a":
            row.update({"rewrite_raw": rewrite_raw,
                        **{f"{k}_survival": v for k, v in survival.items()}})
        rows.append(row)
    scores = distraction_scores(model, [lp[c] for c in CONDITIONS])
    split = scores["example"].str.rsplit("/", n=1, expand=True)
    scores.insert(0, "condition", split[1])
    scores["example"] = split[0]
    return rows, scores


def run_s2a(model, examples: Sequence[S2AExample], generator=None,
            answer_tokens: int = 24, rewrite_tokens: int = 64,
            progress: Callable | None = None, log: Callable[[str], None] | None = None,
            map_fn: Callable[[Callable, list], list] | None = None) -> S2AResult:
    """Run the three conditions on ``examples`` (each through :func:`s2a_example`).

    Args:
        model: the hooked bridge (attention is measured on it).
        examples: :func:`interp.s2a.data.load_examples` output.
        generator: the model that generates (default ``model``, full forwards; pass the
            plain HF copy from :func:`interp.models.registry.load_hf` for its KV cache).
        answer_tokens / rewrite_tokens: ``max_new_tokens`` of answers / rewrites.
        progress: ``fn(iterable, desc=..., total=...)`` (e.g. ``RunContext.progress``);
            used only without ``map_fn``.
        log: ``fn(message)`` for stage lines.
        map_fn: ``fn(per_question, examples) -> results in order`` (default a plain loop);
            e.g. :meth:`interp.experiments.RunContext.map` to split the questions over the
            ranks of a sharded run. The tables are the same either way.
    """
    examples = list(examples)
    if not examples:
        raise InputError("no examples given")

    def one(ex: S2AExample):
        return s2a_example(model, ex, generator=generator, answer_tokens=answer_tokens,
                           rewrite_tokens=rewrite_tokens)

    if log:
        log(f"s2a: {len(examples)} questions (rewrite, three answers, attention)")
    if map_fn is None:
        wrap = progress or (lambda it, desc=None, total=None: it)
        results = [one(ex) for ex in wrap(examples, desc="s2a", total=len(examples))]
    else:
        results = map_fn(one, examples)
    rows = [row for ex_rows, _ in results for row in ex_rows]
    scores = pd.concat([sc for _, sc in results], ignore_index=True)
    return summarize(pd.DataFrame(rows), scores)


def summarize(per_example: pd.DataFrame, scores: pd.DataFrame) -> S2AResult:
    """Build the condition table and per-layer table from per-example rows and probe
    scores (see :class:`S2AResult`)."""
    cats = ["distractor", "relevant", "opinion", "question", "template"]
    mean_ex = scores.groupby(["example", "condition"])[cats].mean().reset_index()
    per_example = per_example.merge(
        mean_ex.rename(columns={c: f"{c}_attention" for c in cats}),
        on=["example", "condition"], how="left")
    rows = []
    for cond in CONDITIONS:
        sub = per_example[per_example.condition == cond]
        if sub.empty:
            continue
        row = {"condition": cond, "accuracy": float(sub.correct.mean()),
               **{f"{c}_attention": float(sub[f"{c}_attention"].mean()) for c in cats},
               "follows_opinion": float(sub.follows_opinion.mean()), "n": int(len(sub))}
        for lab in ("distractor", "opinion", "relevant"):
            col = f"{lab}_survival"
            row[col] = float(sub[col].mean()) if col in sub and sub[col].notna().any() else None
        rows.append(row)
    table = pd.DataFrame(rows)
    per_layer = scores.groupby(["condition", "layer"])[cats].mean().reset_index()
    return S2AResult(table, per_example, per_layer, scores)


def layer_figure(per_layer: pd.DataFrame, column: str = "distractor"):
    """Plotly figure: mean attention mass on ``column`` per layer, one trace per condition."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for cond in CONDITIONS:
        sub = per_layer[per_layer.condition == cond].sort_values("layer")
        if sub.empty:
            continue
        fig.add_trace(go.Scatter(x=sub.layer, y=sub[column], mode="lines+markers", name=cond))
    fig.update_layout(title=f"attention from the answer position to {column} tokens",
                      xaxis_title="layer", yaxis_title=f"mean mass on {column} (heads, examples)",
                      template="plotly_white")
    return fig
