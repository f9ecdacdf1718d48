"""S2A pipeline pieces: matching the original segments in a rewrite, the answer prompt's
spans, the experiment config, and a short end-to-end run."""
from __future__ import annotations

import math

import pytest

from interp.experiments import load_experiment
from interp.config import ConfigError
from interp.probes.distraction import token_labels
from interp.s2a import CONDITIONS, answer_prompt, load_examples, match_segments, run_s2a


def test_match_segments_exact_copy():
    ex = load_examples(limit=1)[0]           # capital-france
    rel = next(s.text.strip() for s in ex.segments if s.label == "relevant")
    dis = next(s.text.strip() for s in ex.segments if s.label == "distractor")
    rewrite = f"Here: {rel} Also {dis}"
    spans, surv = match_segments(rewrite, ex)
    got = {lab: [rewrite[s:e] for s, e, l in spans if l == lab] for lab in ("relevant", "distractor")}
    assert got["relevant"] == [rel] and got["distractor"] == [dis]
    assert surv["relevant"] == 1.0 and surv["opinion"] == 0.0
    total_dis = sum(len(s.text.strip()) for s in ex.segments if s.label == "distractor")
    assert math.isclose(surv["distractor"], len(dis) / total_dis)
    spans, surv = match_segments("Something else entirely.", ex)
    assert spans == [] and surv["distractor"] == 0.0


def test_answer_prompt_spans(smollm2_hf):
    _, tok = smollm2_hf
    ex = load_examples(limit=1)[0]
    rewrite = "The capital of France is Paris."
    spans, _ = match_segments(rewrite, ex)
    lp = answer_prompt(tok, "x", rewrite, spans, ex.question)
    assert [lp.text[s:e] for s, e, l in lp.spans] == [rewrite, ex.question]
    ids, labels, _ = token_labels(tok, lp.text, lp.spans)
    rel = [i for i, l in enumerate(labels) if l == "relevant"]
    assert tok.decode([ids[i] for i in rel]).strip() == rewrite


def test_experiment_file_validates():
    kind, cfg, _ = load_experiment("experiments/s2a.toml")
    assert kind.name == "s2a" and cfg.model == "smollm2-135m"
    with pytest.raises(ConfigError):
        load_experiment({"kind": "s2a", "config": {"limt": 3}})
    with pytest.raises((ConfigError, ValueError)):
        load_experiment({"kind": "s2a", "config": {"generate_with": "magic"}})


def test_run_s2a_end_to_end(smollm2, smollm2_hf):
    hf, _ = smollm2_hf
    res = run_s2a(smollm2, load_examples(limit=1), generator=hf, answer_tokens=12,
                  rewrite_tokens=32)
    assert list(res.table.condition) == list(CONDITIONS)
    assert set(res.table.columns) >= {"condition", "accuracy", "distractor_attention",
                                      "relevant_attention", "opinion_attention", "n"}
    t = res.table.set_index("condition")
    assert t.loc["oracle", "distractor_attention"] == 0 and t.loc["oracle", "opinion_attention"] == 0
    assert (t.n == 1).all()
    assert len(res.per_layer) == 3 * smollm2.cfg.n_layers


@pytest.mark.slow
def test_questions_are_independent_of_order(smollm2, smollm2_hf):
    """A map that computes the questions in reverse (as ranks of a sharded run would, in
    any order) gives the same tables as the plain loop."""
    import pandas as pd

    hf, _ = smollm2_hf
    kw = dict(generator=hf, answer_tokens=4, rewrite_tokens=8)
    examples = load_examples(limit=2)
    plain = run_s2a(smollm2, examples, **kw)
    seen = []

    def backwards(fn, items):
        out = {}
        for i in reversed(range(len(items))):
            seen.append(items[i].id)
            out[i] = fn(items[i])
        return [out[i] for i in range(len(items))]

    mapped = run_s2a(smollm2, examples, map_fn=backwards, **kw)
    assert seen == [e.id for e in reversed(examples)]
    for name in ("table", "per_example", "per_layer", "scores"):
        pd.testing.assert_frame_equal(getattr(mapped, name), getattr(plain, name),
                                      check_exact=True)
