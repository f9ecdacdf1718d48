"""The S2A question set: short factual questions whose context mixes the relevant fact with
distractors and opinions, written for this project (``data/s2a/questions.jsonl``).

One JSON object per line::

    {"id": "capital-france", "question": "What is the capital of France?",
     "answer": "Paris", "aliases": [], "opinion_answer": "Lyon",
     "context": "Berlin is ... Paris. I think the answer is Lyon, ...",
     "segments": [{"label": "distractor", "text": "Berlin is a large city in Germany."},
                  {"label": "relevant", "text": " The capital of France is Paris."}, ...]}

The segments concatenate exactly to ``context`` (a segment after the first starts with its
space, so token boundaries fall on segment boundaries). ``opinion_answer`` is the wrong
answer the opinion pushes.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InputError
from interp.paths import read_text_file

LABELS = ("relevant", "distractor", "opinion")
DATA_FILE = Path(__file__).resolve().parents[2] / "data" / "s2a" / "questions.jsonl"


@dataclass(frozen=True)
class Segment:
    label: str
    text: str


@dataclass(frozen=True)
class S2AExample:
    id: str
    question: str
    answer: str
    aliases: tuple[str, ...]
    opinion_answer: str
    context: str
    segments: tuple[Segment, ...]

    def spans(self) -> list[tuple[int, int, str]]:
        """``(start, end, label)`` of each segment in ``context``."""
        out, pos = [], 0
        for s in self.segments:
            out.append((pos, pos + len(s.text), s.label))
            pos += len(s.text)
        return out

    def oracle_segments(self) -> tuple[Segment, ...]:
        """The relevant segments only (distractors and opinions removed by the marks); the
        first loses its leading space."""
        keep = [s for s in self.segments if s.label == "relevant"]
        return tuple(Segment(s.label, s.text.lstrip() if i == 0 else s.text)
                     for i, s in enumerate(keep))

    @property
    def accepted(self) -> tuple[str, ...]:
        return (self.answer, *self.aliases)


def _example(obj: dict, where: str) -> S2AExample:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    need = {"id", "question", "answer", "aliases", "opinion_answer", "context", "segments"}
    missing, unknown = need - set(obj), set(obj) - need
    if missing or unknown:
        raise InputError(f"{where}: missing fields {sorted(missing)}, unknown fields "
                         f"{sorted(unknown)}")
    segs = []
    for s in obj["segments"]:
        if set(s) != {"label", "text"} or s["label"] not in LABELS:
            raise InputError(f"{where}: bad segment {s!r}; labels are {LABELS}")
        segs.append(Segment(s["label"], s["text"]))
    ex = S2AExample(obj["id"], obj["question"], obj["answer"], tuple(obj["aliases"]),
                    obj["opinion_answer"], obj["context"], tuple(segs))
    if "".join(s.text for s in segs) != ex.context:
        raise InputError(f"{where}: segments do not concatenate to the context")
    if not any(s.label == "relevant" and any(answer_in(a, s.text) for a in ex.accepted)
               for s in segs):
        raise InputError(f"{where}: the answer {ex.answer!r} is in no relevant segment")
    return ex


def load_examples(path: str | Path | None = None, limit: int | None = None) -> list[S2AExample]:
    """Read and validate the question set (default ``data/s2a/questions.jsonl``).

    Raises:
        InputError: (a ``ValueError``) a malformed line (names the line and the problem),
            duplicate ids; :class:`~interp.paths.PathError` for a file that cannot be read
            (:class:`~interp.paths.MissingPath`, also a ``FileNotFoundError``, when there is
            none).
    """
    path = Path(path) if path is not None else DATA_FILE
    out, seen = [], set()
    for i, line in enumerate(read_text_file(path, "file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{i}: not valid JSON ({exc})") from None
        ex = _example(obj, f"{path}:{i}")
        if ex.id in seen:
            raise InputError(f"{path}:{i}: duplicate id {ex.id!r}")
        seen.add(ex.id)
        out.append(ex)
    return out[:limit] if limit else out


def answer_in(answer: str, text: str) -> bool:
    """Whether ``answer`` occurs in ``text`` as a word (case-insensitive; a plural ``s`` /
    ``es`` is allowed): ``"0"`` does not match ``"100"``."""
    pat = r"(?<![\w])" + re.escape(answer.lower()) + r"(?:s|es)?(?![\w])"
    return re.search(pat, text.lower()) is not None


def is_correct(output: str, example: S2AExample) -> bool:
    """String match of the answer or an alias in a generated answer."""
    return any(answer_in(a, output) for a in example.accepted)
