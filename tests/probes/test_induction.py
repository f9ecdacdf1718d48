"""Induction probe: scores against direct definitions, TransformerLens' detect_head, known
facts about SmolLM2, and the K-composition / ablation circuit."""
from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch

from interp.circuits import ablate_heads, composition_scores, repeated_half_loss
from interp.circuits.composition import composition_dense
from interp.models.toy import ToyConfig, build_toy
from interp.probes.induction import (copying_scores, induction_scores, pattern_scores,
                                     repeated_random_tokens, top_heads)


@pytest.fixture(scope="module")
def smol_scores(smollm2):
    toks = repeated_random_tokens(smollm2, batch=8, seg_len=50, seed=0)
    return toks, induction_scores(smollm2, toks, seg_len=50)


def test_pattern_scores_match_loops_over_cached_patterns(toy_model):
    """Every column against a plain-Python reading of the definitions."""
    toks = torch.tensor([[0, 5, 9, 7, 5, 9, 7, 3, 5, 9], [0, 1, 2, 1, 2, 3, 1, 2, 3, 4]])
    df = pattern_scores(toy_model, toks, seg_len=None, offset=1)
    _, cache = toy_model.run_with_cache(toks)
    for layer in range(2):
        pat = cache[f"blocks.{layer}.attn.hook_pattern"]
        for h in range(4):
            prev, pref, dup = [], [], []
            for b in range(2):
                t = toks[b].tolist()
                for i in range(1, len(t)):
                    prev.append(pat[b, h, i, i - 1].item())
                    pj = [j for j in range(1, i + 1) if t[j - 1] == t[i] and j - 1 < i]
                    if pj:
                        pref.append(sum(pat[b, h, i, j].item() for j in pj))
                    dj = [j for j in range(i) if t[j] == t[i]]
                    if dj:
                        dup.append(sum(pat[b, h, i, j].item() for j in dj))
            row = df[(df.layer == layer) & (df["head"] == h)].iloc[0]
            assert row.previous_token == pytest.approx(np.mean(prev), abs=1e-5)
            assert row.prefix_matching == pytest.approx(np.mean(pref), abs=1e-5)
            assert row.duplicate_token == pytest.approx(np.mean(dup), abs=1e-5)


def test_induction_column_uses_the_repeat_offset(toy_model):
    toks = repeated_random_tokens(toy_model, batch=3, seg_len=7, seed=1)      # no BOS on toys
    df = pattern_scores(toy_model, toks, seg_len=7, offset=0)
    _, cache = toy_model.run_with_cache(toks)
    pat = cache["blocks.1.attn.hook_pattern"]
    expect = np.mean([pat[b, 2, i, i - 6].item() for b in range(3) for i in range(7, 14)])
    assert df[(df.layer == 1) & (df["head"] == 2)].induction.item() == pytest.approx(expect, abs=1e-5)


def test_copying_score_equals_full_vocab_eigenvalues():
    """The d_head x d_head shortcut equals eigenvalues of the explicit vocab x vocab OV circuit."""
    model = build_toy(ToyConfig(n_layers=2, d_model=24, n_heads=3, d_head=8, d_vocab=30,
                                normalization="none", seed=3))
    got = copying_scores(model)
    for layer in range(2):
        for h in range(3):
            full = (model.W_E @ model.W_V[layer, h] @ model.W_O[layer, h] @ model.W_U).double()
            eig = torch.linalg.eigvals(full)
            ref = (eig.sum().real / eig.abs().sum()).item()
            row = got[(got.layer == layer) & (got["head"] == h)].copying.item()
            assert row == pytest.approx(ref, abs=1e-6)


def test_copying_score_sign_on_constructed_heads():
    model = build_toy(ToyConfig(n_layers=1, d_model=16, n_heads=2, d_head=16, d_vocab=16,
                                normalization="none"))
    with torch.no_grad():
        eye = torch.eye(16)
        model.embed.original_component.weight.copy_(eye)
        model.unembed.original_component.weight.copy_(eye)
        attn = model.blocks[0].attn
        attn.v.original_component.weight.copy_(torch.cat([eye, eye]))   # both heads read x
        o = torch.cat([eye, -eye], dim=1)                                 # head 0 +x, head 1 -x
        attn.o.original_component.weight.copy_(o)
    df = copying_scores(model)
    assert df.copying.tolist() == pytest.approx([1.0, -1.0], abs=1e-6)


def test_smollm2_known_induction_heads(smol_scores):
    """REFERENCES.md (measured on SmolLM2-135M-Instruct, random 50 x 2, batch 8): top heads
    L18H6 0.89, L17H3 0.78, L17H4 0.74."""
    _, df = smol_scores
    top = top_heads(df, "induction", 5)
    assert top[0] == (18, 6) and {(17, 3), (17, 4)} <= set(top)
    assert df.induction.max() > 0.8
    # induction heads are not previous-token heads, and vice versa
    assert df.set_index(["layer", "head"]).loc[(18, 6)].previous_token < 0.1
    assert df.previous_token.max() > 0.8


def test_agrees_with_transformer_lens_detect_head(smollm2):
    from transformer_lens.head_detector import detect_head

    text = ("The quick brown fox jumps over the lazy dog near the old mill by the river. " * 2
            + "Mary had a little lamb whose fleece was white as snow. " * 2)
    toks = smollm2.to_tokens(text)
    ours = pattern_scores(smollm2, toks, seg_len=None)
    for column, name in (("prefix_matching", "induction_head"),
                         ("previous_token", "previous_token_head")):
        ref = detect_head(smollm2, text, name).flatten().numpy()
        mine = pd.Series(ours.sort_values(["layer", "head"])[column].values)
        rho = mine.rank().corr(pd.Series(ref).rank())            # Spearman = Pearson on ranks
        assert rho >= 0.9, (column, rho)


def test_k_composition_finds_previous_token_head(smollm2, smol_scores):
    """The strongest K-composition sources of the top induction heads include a strong
    previous-token head (L16H0 on SmolLM2)."""
    _, df = smol_scores
    comp = composition_scores(smollm2, "K")
    prev = df.set_index(["layer", "head"]).previous_token
    for dst in [(18, 6), (17, 3)]:
        c = comp[(comp.dst_layer == dst[0]) & (comp.dst_head == dst[1])]
        best = c.nlargest(2, "score")
        sources = [(int(r.src_layer), int(r.src_head)) for r in best.itertuples()]
        assert (16, 0) in sources
        assert max(prev[s] for s in sources) > 0.8
        assert best.score.iloc[0] > 2 * c.score.median()


def test_composition_fast_equals_dense():
    model = build_toy(ToyConfig(n_layers=3, d_model=32, n_heads=3, d_head=8, seed=5))
    for mode in "QKV":
        df = composition_scores(model, mode)
        ref = composition_dense(model, mode)
        assert len(df) == 3 * 9
        for r in df.itertuples():
            assert r.score == pytest.approx(ref[r.src_layer, r.src_head, r.dst_layer,
                                                r.dst_head].item(), abs=1e-6)
    with pytest.raises(ValueError, match="mode"):
        composition_scores(model, "X")


def test_ablating_top_induction_heads_hurts_far_more_than_random(smollm2, smol_scores):
    toks, df = smol_scores
    top = top_heads(df, "induction", 5)
    loss = repeated_half_loss(50, offset=1)
    with torch.no_grad():
        clean = loss(smollm2(toks), toks).item()
    top_loss = ablate_heads(smollm2, toks, top, loss, mode="zero")
    rng = random.Random(0)
    deltas = []
    for _ in range(3):
        rnd, used = [], set(top)
        for layer, _ in top:               # same layers, distinct heads not in the top set
            h = rng.choice([x for x in range(9) if (layer, x) not in used])
            used.add((layer, h))
            rnd.append((layer, h))
        deltas.append(ablate_heads(smollm2, toks, rnd, loss, mode="zero") - clean)
    assert top_loss - clean > 5 * max(max(deltas), 0.05)
    assert ablate_heads(smollm2, toks, top, loss, mode="mean") - clean > 5 * max(max(deltas), 0.05)


def test_bad_input(toy_model):
    with pytest.raises(ValueError, match="does not exist"):
        ablate_heads(toy_model, torch.zeros(1, 5, dtype=torch.long), [(2, 0)],
                     repeated_half_loss(2, 0))
    with pytest.raises(ValueError, match="seg_len"):
        pattern_scores(toy_model, torch.zeros(1, 10, dtype=torch.long), seg_len=8)
