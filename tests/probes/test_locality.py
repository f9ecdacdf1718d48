from __future__ import annotations

import pytest
import torch

from interp import attention
from interp.probes.locality import locality_scores

TOKENS = torch.randint(100, 20000, (2, 96), generator=torch.Generator().manual_seed(1))


def test_matches_masked_cached_patterns(smollm2):
    layouts = {"w16": attention.get("sliding_window", window=16),
               "bs": attention.get("block_sparse", block_size=16)}
    df = locality_scores(smollm2, TOKENS, layouts=layouts, layers=[0, 17])
    assert len(df) == 2 * 9 * 2
    _, cache = smollm2.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("hook_pattern"))
    i = torch.arange(96)[:, None]
    j = torch.arange(96)[None, :]
    band = ((i - j) < 16) & (j <= i)                      # written here from the definition
    for layer in (0, 17):
        pat = cache[f"blocks.{layer}.attn.hook_pattern"]
        expect = (pat * band).sum(-1).mean(dim=(0, 2))
        got = df[(df.layer == layer) & (df.layout == "w16")].sort_values("head").mass_inside
        assert torch.allclose(torch.tensor(got.values, dtype=torch.float32), expect, atol=1e-5)
    assert ((df.mass_inside >= 0) & (df.mass_inside <= 1 + 1e-5)).all()


def test_window_covering_sequence_keeps_everything(toy_model):
    toks = torch.randint(0, 50, (3, 40))
    df = locality_scores(toy_model, toks, layouts={"all": attention.get("sliding_window",
                                                                         window=40)})
    assert torch.allclose(torch.tensor(df.mass_inside.values), torch.ones(len(df)).double(),
                          atol=1e-5)


def test_bad_input(toy_model):
    with pytest.raises(ValueError, match="context length"):
        locality_scores(toy_model, torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="no sparse layout"):
        locality_scores(toy_model, torch.zeros(1, 8, dtype=torch.long),
                        layouts={"s": attention.get("softmax")})
