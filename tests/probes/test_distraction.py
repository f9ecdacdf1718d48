"""Distraction probe: span -> token mapping, masses that sum to 1 and equal a direct
computation from run_with_cache patterns, hook hygiene."""
from __future__ import annotations

import pytest
import torch

from interp.hooks import count_hooks
from interp.probes.distraction import (CATEGORIES, LabelledPrompt, distraction_scores,
                                       distraction_summary, token_labels)
from interp.s2a import load_examples
from interp.s2a.pipeline import _segment_prompt


def _prompts(tok, n=None):
    out = []
    for ex in load_examples(limit=n):
        out.append((ex, ex.segments, _segment_prompt(tok, ex.id, ex.segments, ex.question)))
        oracle = ex.oracle_segments()
        out.append((ex, oracle, _segment_prompt(tok, ex.id + "/oracle", oracle, ex.question)))
    return out


def test_spans_map_to_the_right_tokens(smollm2_hf):
    """For every question (original and oracle prompt): the tokens inside each segment's
    character span decode to exactly the segment text and carry its label; the question is
    labelled 'question'; the per-label token counts add up."""
    _, tok = smollm2_hf
    for ex, segments, lp in _prompts(tok):
        ids, labels, offsets = token_labels(tok, lp.text, lp.spans)
        assert tok.decode(ids) == lp.text
        seg_spans = [s for s in lp.spans if s[2] != "question"]
        assert [s[2] for s in seg_spans] == [s.label for s in segments]
        expected = {c: 0 for c in CATEGORIES}
        for (s, e, lab), seg in zip(seg_spans, segments):
            pos = [i for i, (a, b) in enumerate(offsets) if a >= s and b <= e]
            assert tok.decode([ids[i] for i in pos]) == seg.text, (ex.id, seg)
            assert all(labels[i] == lab for i in pos)
            expected[lab] += len(pos)
        (qs, qe, _), = [s for s in lp.spans if s[2] == "question"]
        qpos = [i for i, lab in enumerate(labels) if lab == "question"]
        assert tok.decode([ids[i] for i in qpos]).strip() == ex.question
        for c in ("relevant", "distractor", "opinion"):
            assert labels.count(c) == expected[c], (ex.id, c)
        assert labels[-1] == "template"       # the answer position is the template's "\n"


def test_masses_sum_to_one_and_match_run_with_cache(smollm2):
    tok = smollm2.tokenizer
    items = _prompts(tok, 2)[:3]
    before = count_hooks(smollm2)
    df = distraction_scores(smollm2, [lp for _, _, lp in items])
    assert count_hooks(smollm2) == before
    n_layers, n_heads = smollm2.cfg.n_layers, smollm2.cfg.n_heads
    assert len(df) == len(items) * n_layers * n_heads
    sums = df[list(CATEGORIES)].sum(axis=1)
    assert torch.allclose(torch.tensor(sums.values), torch.ones(len(df), dtype=torch.float64),
                          atol=1e-5)
    assert (df[list(CATEGORIES)] >= 0).all().all()
    for _, _, lp in items:
        ids, labels, _ = token_labels(tok, lp.text, lp.spans)
        with torch.no_grad():
            _, cache = smollm2.run_with_cache(torch.tensor([ids]))
        for layer in (0, 7, n_layers - 1):
            pat = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, -1, :]       # [head, key]
            for c in CATEGORIES:
                keys = [k for k, lab in enumerate(labels) if lab == c]
                direct = pat[:, keys].sum(-1) if keys else torch.zeros(n_heads)
                got = df[(df.example == lp.id) & (df.layer == layer)].sort_values("head")[c]
                assert torch.allclose(torch.tensor(got.values, dtype=torch.float32),
                                      direct.float(), atol=1e-5), (lp.id, layer, c)
    summ = distraction_summary(df)
    assert list(summ.layer) == list(range(n_layers))
    assert abs(distraction_summary(df, by=())[list(CATEGORIES)].sum(axis=1).iloc[0] - 1) < 1e-5


def test_bad_spans_are_refused():
    with pytest.raises(ValueError, match="unknown label"):
        LabelledPrompt("x", "abc", ((0, 1, "nonsense"),))
    with pytest.raises(ValueError, match="overlap"):
        LabelledPrompt("x", "abcdef", ((0, 3, "relevant"), (2, 4, "opinion")))
    with pytest.raises(ValueError, match="outside"):
        LabelledPrompt("x", "abc", ((0, 9, "relevant"),))


def test_token_label_majority_rule(smollm2_hf):
    _, tok = smollm2_hf
    text = "Paris is nice."
    ids, labels, offsets = token_labels(tok, text, [(0, 5, "relevant")])
    assert labels[0] == "relevant" and labels[-1] == "template"
    assert len(ids) == len(labels) == len(offsets)
