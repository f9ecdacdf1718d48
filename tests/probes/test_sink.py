"""Sink probe: alpha and Sink^eps against direct computations from run_with_cache patterns
(Gu et al. 2024 formula), hand-made patterns, mass bookkeeping, key/value norms, the
positional nature of the sink, and the ablation hook."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from interp.hooks import attach, count_hooks
from interp.probes.sink import (
    first_token_variants,
    forbid_keys_hook,
    sink_ablation,
    sink_probe,
    sink_probe_table,
    sink_scores,
    sink_summary,
)

PROMPTS = ["The cat sat on the mat and looked at the door.",
           "A dog ran in the park while children were playing."]


def _patterns(model, tokens):
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return [cache[n].float() for n in names]                           # [b, h, T, T]


def _tokens(model, n=12):
    from interp.probes.common import to_tokens

    return torch.cat([to_tokens(model, p)[:, :n] for p in PROMPTS])


def test_alpha_matches_published_formula(smollm2):
    tokens = _tokens(smollm2)
    T = tokens.shape[1]
    positions = (0, 1, 3, -1)
    scores = sink_scores(smollm2, tokens, positions=positions, eps=0.3)
    pats = _patterns(smollm2, tokens)
    got = scores.set_index(["layer", "head", "position"])
    for layer, A in enumerate(pats):
        for k in (0, 1, 3, T - 1):
            # alpha(k) = 1/(T-k) sum_{i>=k} A[i, k], per sample, then batch mean
            per_sample = torch.stack([A[:, :, i, k] for i in range(k, T)], 0).sum(0) / (T - k)
            for h in range(A.shape[1]):
                row = got.loc[(layer, h, k)]
                assert row.alpha == pytest.approx(per_sample[:, h].mean().item(), abs=1e-5)
                share = (per_sample[:, h] > 0.3).float().mean().item()
                assert row.sink_share == pytest.approx(share)
                assert row.alpha_max == pytest.approx(per_sample[:, h].max().item(), abs=1e-5)
    assert len(scores) == smollm2.cfg.n_layers * smollm2.cfg.n_heads * len(positions)


def test_causal_masses_sum_to_T(smollm2):
    """Every row of A sums to 1, so sum_k (T - k) alpha(k) = T for each head."""
    tokens = _tokens(smollm2, 10)
    T = tokens.shape[1]
    scores = sink_scores(smollm2, tokens, positions=tuple(range(T)))
    total = (scores.alpha * (T - scores.position)).groupby(
        [scores["layer"], scores["head"]]).sum()
    assert ((total - T).abs() < 1e-4).all(), total.describe()


def test_encoder_cls_sep_mass(minilm):
    from interp.probes.common import to_tokens

    tokens = to_tokens(minilm, PROMPTS[0])
    T = tokens.shape[1]
    assert minilm.tokenizer.convert_ids_to_tokens([int(tokens[0, 0]), int(tokens[0, -1])]) == [
        "[CLS]", "[SEP]"]
    scores = sink_scores(minilm, tokens, positions=(0, -1))
    pats = _patterns(minilm, tokens)
    for layer, A in enumerate(pats):
        for k in (0, T - 1):                     # encoder: mean over all queries
            ref = A[0, :, :, k].mean(-1)
            got = scores[(scores.layer == layer) & (scores.position == k)].sort_values("head")
            assert torch.allclose(torch.tensor(got.alpha.values, dtype=torch.float32), ref,
                                  atol=1e-5)
    assert set(scores.token) == {"[CLS]", "[SEP]"}
    # masses over all keys: each query row sums to 1, so sum_k alpha(k) = 1 per head
    full = sink_scores(minilm, tokens, positions=tuple(range(T)))
    sums = full.groupby(["layer", "head"]).alpha.sum()
    assert sums.between(1 - 1e-4, 1 + 1e-4).all()


def test_sink_share_on_hand_made_pattern(toy_model):
    """Replace every layer's pattern by a known one; alpha and Sink^eps follow by hand."""
    b, h, T = 4, toy_model.cfg.n_heads, 8
    tri = torch.tril(torch.ones(T, T))
    uniform = tri / tri.sum(-1, keepdim=True)        # alpha(0) = mean_i 1/(i+1) ~ 0.34
    sink = torch.zeros(T, T)
    sink[:, 0] = 1.0                                  # alpha(0) = 1
    diag = torch.eye(T)                               # alpha(0) = 1/T = 0.125
    pat = diag.repeat(b, h, 1, 1)
    pat[0, 0] = sink                                  # head 0: sink in samples 0 and 1
    pat[1, 0] = sink
    pat[2, 1] = uniform                               # head 1: above 0.3 in one sample
    hand = torch.tensor([1.0, 1.0, 1 / T, 1 / T]).mean().item()

    def replace(p, hook):
        return pat.to(p.dtype)

    tokens = torch.randint(0, toy_model.cfg.d_vocab, (b, T))
    with attach(toy_model, [(lambda n: n.endswith("attn.hook_pattern"), replace)]):
        scores = sink_scores(toy_model, tokens, positions=(0,), eps=0.3)
    l0 = scores[scores.layer == 0].set_index("head")
    assert l0.loc[0, "sink_share"] == pytest.approx(0.5)
    assert l0.loc[0, "alpha"] == pytest.approx(hand)
    u = sum(1 / (i + 1) for i in range(T)) / T
    assert u > 0.3
    assert l0.loc[1, "sink_share"] == pytest.approx(0.25)
    assert l0.loc[1, "alpha"] == pytest.approx((u + 3 / T) / 4, abs=1e-6)
    assert l0.loc[2, "sink_share"] == 0.0
    per_layer = sink_summary(scores)
    overall = sink_summary(scores, per_layer=False)
    # share of (sample, layer, head) with alpha > eps: 3 of 4 * h per layer
    expect = 3 / (b * h)
    assert per_layer.sink_share.tolist() == pytest.approx([expect] * toy_model.cfg.n_layers)
    assert overall.sink_share.item() == pytest.approx(expect)


def test_sink_summary_counts_sample_layer_head():
    rows = []
    # layer 0: 2 heads, shares 1.0 and 0.0; layer 1: shares 0.5 and 0.5
    for layer, shares in [(0, (1.0, 0.0)), (1, (0.5, 0.5))]:
        for h, s in enumerate(shares):
            rows.append({"layer": layer, "head": h, "position": 0, "token": "x",
                         "alpha": 0.1 * (h + 1), "sink_share": s})
    df = pd.DataFrame(rows)
    per = sink_summary(df)
    assert per.sink_share.tolist() == [0.5, 0.5]
    assert per.mass.tolist() == pytest.approx([0.15, 0.15])
    assert sink_summary(df, per_layer=False).sink_share.item() == pytest.approx(0.5)


def test_norms_match_hooked_keys_and_values(smollm2):
    tokens = _tokens(smollm2)
    before = count_hooks(smollm2)
    rep = sink_probe(smollm2, tokens, positions=(0,), layers=[0, 5, 29])
    assert count_hooks(smollm2) == before
    names = [f"blocks.{l}.attn.hook_{x}" for l in (0, 5, 29) for x in "kv"]
    _, cache = smollm2.run_with_cache(tokens, names_filter=lambda n: n in names)
    for layer in (0, 5, 29):
        for x in "kv":
            act = cache[f"blocks.{layer}.attn.hook_{x}"].float()       # [b, T, kvh, d]
            nrm = act.norm(dim=-1)
            sink_ref = nrm[:, 0].mean(0)
            rest_ref = nrm[:, 1:].mean(dim=(0, 1))
            got = rep.norms[rep.norms.layer == layer].sort_values("kv_head")
            assert len(got) == 3                                       # GQA: 3 KV heads
            assert torch.allclose(torch.tensor(got[f"{x}_norm_sink"].values,
                                               dtype=torch.float32), sink_ref, rtol=1e-5)
            assert torch.allclose(torch.tensor(got[f"{x}_norm_rest"].values,
                                               dtype=torch.float32), rest_ref, rtol=1e-5)
    assert sorted(rep.scores.layer.unique()) == [0, 5, 29]


def test_first_token_is_a_sink_whatever_it_is(smollm2):
    from interp.data import load_text

    text = load_text("pydoc-topics")
    variants = first_token_variants(smollm2.tokenizer, text, n=4, length=48)
    assert set(variants) == {"bos", "none", "newline", "word"}
    for name, toks in variants.items():
        summ = sink_summary(sink_scores(smollm2, toks, positions=(0, 1)), per_layer=False)
        m0, m1 = summ.set_index("position").mass[[0, 1]]
        assert m0 > 0.3 and m0 > 5 * m1, (name, m0, m1)


def test_probe_table_one_row_per_layer(smollm2):
    table = sink_probe_table(smollm2, _tokens(smollm2))
    assert len(table) == smollm2.cfg.n_layers
    for col in ["layer", "mass_0", "mass_3", "sink_share_0", "k_ratio", "v_ratio"]:
        assert col in table.columns
    assert table.mass_0.between(0, 1).all()


def test_bad_positions_are_refused(smollm2):
    tokens = _tokens(smollm2, 6)
    with pytest.raises(ValueError, match="outside a sequence of 6"):
        sink_scores(smollm2, tokens, positions=(0, 6))
    with pytest.raises(ValueError, match="twice"):
        sink_scores(smollm2, tokens, positions=(5, -1))


def test_forbid_hook_renormalises_rows():
    torch.manual_seed(1)
    T = 7
    scores = torch.randn(2, 3, T, T).masked_fill(~torch.tril(torch.ones(T, T)).bool(),
                                                   -math.inf)
    pat = scores.softmax(-1)
    out = forbid_keys_hook((0,))(pat, None)
    assert torch.allclose(out.sum(-1), torch.ones(2, 3, T), atol=1e-6)
    assert (out[:, :, 1:, 0] == 0).all()
    assert torch.equal(out[:, :, 0], pat[:, :, 0])           # query 0 sees only key 0: kept
    # the remaining keys keep their relative weights
    ratio = out[:, :, 1:, 1:] / pat[:, :, 1:, 1:].clamp_min(1e-30)
    kept = pat[:, :, 1:, 1:] > 0
    expect = 1 / (1 - pat[:, :, 1:, :1])
    assert torch.allclose(ratio[kept], expect.expand_as(ratio)[kept], rtol=1e-4)
    assert not torch.isnan(out).any()


def test_ablation_changes_loss_and_cleans_up(smollm2):
    from interp.data import load_text

    toks = first_token_variants(smollm2.tokenizer, load_text("pydoc-topics"), 2, 64)["bos"]
    before = count_hooks(smollm2)
    df = sink_ablation(smollm2, toks, {"mid": [12, 13, 14, 15, 16]})
    assert count_hooks(smollm2) == before
    logits = smollm2(toks)
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    ref = -lp.gather(-1, toks[:, 1:, None]).mean().item()
    base = df.set_index("ablated").loc["none"]
    assert base.loss == pytest.approx(ref, rel=1e-5)
    mid = df.set_index("ablated").loc["mid"]
    assert mid.delta_loss > 0.05 and mid.n_layers == 5
    assert mid.ppl == pytest.approx(math.exp(mid.loss), rel=1e-6)


def test_ablation_refuses_encoders(minilm):
    with pytest.raises(ValueError, match="no meaningful next-token loss"):
        sink_ablation(minilm, "hello world")
