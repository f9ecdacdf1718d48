"""Bottleneck measures: effective rank, energy rank, row entropy, and the per-head probe."""
from __future__ import annotations

import math

import pytest
import torch

from interp import attention
from interp.probes.retrieval import (
    attention_bottleneck, effective_rank, energy_rank, relate_retrieval_error, row_entropy,
)
from interp.retrieval import MixerSpec, RetrievalModel, RetrievalModelConfig


@pytest.mark.parametrize("n", [1, 5, 32])
def test_identity_and_rank_one(n):
    assert effective_rank(torch.eye(n)).item() == pytest.approx(n)
    assert energy_rank(torch.eye(n)).item() == n
    u, v = torch.randn(n, 1, dtype=torch.float64), torch.randn(1, n, dtype=torch.float64)
    assert effective_rank(u @ v).item() == pytest.approx(1.0, abs=1e-6)
    assert energy_rank(u @ v).item() == 1


def test_known_spectrum_and_batching():
    m = torch.diag(torch.tensor([3.0, 1.0, 0.0, 0.0]))
    p = torch.tensor([0.75, 0.25])
    assert effective_rank(m).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert energy_rank(m, 0.9).item() == 1  # 9 / 10 of the squared mass in sigma_1
    assert energy_rank(m, 0.99).item() == 2
    batch = torch.stack([torch.eye(4), m, torch.zeros(4, 4)])
    assert effective_rank(batch).tolist() == pytest.approx([4.0, effective_rank(m).item(), 0.0])


def test_row_entropy():
    uniform = torch.full((3, 6, 6), 1 / 6)
    assert row_entropy(uniform).tolist() == pytest.approx([math.log(6)] * 3)
    assert row_entropy(torch.eye(6)).item() == 0.0
    causal = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5)[:, None]
    assert row_entropy(causal).item() == pytest.approx(
        sum(math.log(i) for i in range(1, 5)) / 4)


@pytest.mark.parametrize("feature_map, d_head", [("elu", 4), ("relu", 6), ("performer", 8)])
def test_linear_attention_pattern_rank_at_most_feature_dim(feature_map, d_head):
    """Unmasked linear attention D^-1 phi(Q) phi(K)^T has rank <= f (Katharopoulos et al.
    2020); softmax attention of the same q, k is full rank."""
    torch.manual_seed(0)
    n = 48
    q, k = torch.randn(2, 3, n, d_head, dtype=torch.float64), torch.randn(2, 3, n, d_head,
                                                                          dtype=torch.float64)
    opts = {"n_features": 8} if feature_map == "performer" else {}
    impl = attention.get("linear", feature_map=feature_map, d_head=d_head, **opts)
    f = impl.phi.dim(d_head)
    a = impl.pattern(q, k, k, causal=False)  # [2, 3, n, n]
    sums = a.sum(-1)  # 1, or 0 where every kernel value of the row is 0 (relu)
    assert torch.all(((sums - 1).abs() < 1e-3) | (sums == 0))  # eps in the denominator
    ranks = torch.linalg.matrix_rank(a)
    assert (ranks <= f).all(), (ranks, f)
    assert (energy_rank(a, 1.0) <= f).all()
    soft = attention.get("softmax", d_head=d_head).pattern(q, k, k, causal=False)
    assert (torch.linalg.matrix_rank(soft) == n).all()


def _tiny_model(mixers, n_heads=2, n_layers=2):
    return RetrievalModel(RetrievalModelConfig(vocab_size=30, d_model=16, n_heads=n_heads,
                                               n_layers=n_layers, max_len=20, mixers=mixers))


def test_bottleneck_table_and_hooks_removed():
    m = _tiny_model([MixerSpec("softmax"), MixerSpec("linear", {"feature_map": "elu"})])
    x = torch.randint(0, 30, (10, 20))
    df = attention_bottleneck(m, x, batch_size=4)
    assert len(df) == 2 * 2 * 2  # layers x mixers x heads
    assert list(df.columns[:4]) == ["layer", "mixer", "impl", "head"]
    assert df[["eff_rank", "energy_rank", "row_entropy"]].notna().all().all()
    assert ((df.eff_rank >= 1) & (df.eff_rank <= 20)).all()
    assert ((df.row_entropy >= 0) & (df.row_entropy <= math.log(20))).all()
    assert set(df.n_samples) == {10}
    # per-row means over batches equal one pass over everything
    df1 = attention_bottleneck(m, x, batch_size=10)
    assert df1.eff_rank.tolist() == pytest.approx(df.eff_rank.tolist())
    for _, _, mixer in m.mixers():
        assert not mixer._forward_pre_hooks


def test_hooks_removed_when_forward_raises():
    m = _tiny_model([MixerSpec("softmax")])
    with pytest.raises(ValueError):
        attention_bottleneck(m, torch.randint(0, 30, (2, 25)))  # longer than max_len
    for _, _, mixer in m.mixers():
        assert not mixer._forward_pre_hooks


def test_relate_retrieval_error():
    import pandas as pd

    t = pd.DataFrame({"accuracy": [1.0, 0.8, 0.5, 0.2], "eff_rank": [9.0, 7.0, 5.0, 2.0],
                      "row_entropy": [0.1, 0.5, 1.0, 2.0], "state_size": [4, 4, 4, 4],
                      "num_kv_pairs": [4, 4, 4, 4]})
    r = relate_retrieval_error(t).set_index("metric")
    assert r.loc["eff_rank", "spearman"] == pytest.approx(-1.0)
    assert r.loc["row_entropy", "spearman"] == pytest.approx(1.0)
    assert math.isnan(r.loc["state_size", "pearson"])  # constant column
    assert "min_row_entropy" not in r.index  # missing columns are skipped
    by = relate_retrieval_error(t, by=["num_kv_pairs"])
    assert set(by.num_kv_pairs) == {4}
