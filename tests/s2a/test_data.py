"""Integrity of data/s2a/questions.jsonl and the answer matcher."""
from __future__ import annotations

import json

import pytest

from interp.s2a.data import DATA_FILE, LABELS, answer_in, is_correct, load_examples


def test_data_file_integrity():
    raw = [json.loads(l) for l in DATA_FILE.read_text().splitlines() if l.strip()]
    exs = load_examples()
    assert 40 <= len(exs) <= 60 and len(exs) == len(raw)
    assert len({e.id for e in exs}) == len(exs)
    for e in exs:
        assert "".join(s.text for s in e.segments) == e.context
        assert {s.label for s in e.segments} <= set(LABELS)
        assert {"relevant", "distractor", "opinion"} <= {s.label for s in e.segments}
        rel = " ".join(s.text for s in e.segments if s.label == "relevant")
        assert any(answer_in(a, rel) for a in e.accepted), e.id
        op = " ".join(s.text for s in e.segments if s.label == "opinion")
        assert answer_in(e.opinion_answer, op), e.id
        assert not any(answer_in(a, e.opinion_answer) for a in e.accepted), e.id
        assert not any(answer_in(a, op) for a in e.accepted), e.id
        for i, s in enumerate(e.segments):       # segment boundaries fall on spaces
            assert s.text.strip() and (i == 0) == (not s.text.startswith(" "))
        assert "".join(s.text for s in e.oracle_segments()) == rel.strip()


def test_answer_matching():
    assert answer_in("0", "It freezes at 0 degrees.") and not answer_in("0", "It boils at 100.")
    assert answer_in("paris", "PARIS!") and answer_in("bark", "Dogs barks.")
    assert not answer_in("red", "It is bored.")
    ex = load_examples(limit=1)[0]
    assert is_correct("The capital of France is Paris.", ex)
    assert not is_correct("Lyon.", ex)


def test_bad_files_are_refused(tmp_path):
    good = json.loads(DATA_FILE.read_text().splitlines()[0])
    for change, msg in [({"context": "x"}, "concatenate"), ({"answer": "Zurich"}, "no relevant"),
                        ({"extra": 1}, "unknown fields"),
                        ({"segments": [{"label": "fact", "text": "x"}]}, "bad segment")]:
        p = tmp_path / "bad.jsonl"
        p.write_text(json.dumps({**good, **change}) + "\n")
        with pytest.raises(ValueError, match=msg):
            load_examples(p)
    p.write_text((json.dumps(good) + "\n") * 2)
    with pytest.raises(ValueError, match="duplicate"):
        load_examples(p)
