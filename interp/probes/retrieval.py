"""The retrieval bottleneck, measured: how much of the context an attention map can tell apart.

For a trained :class:`interp.retrieval.RetrievalModel` and MQAR inputs, every mixer's attention
map ``A = impl.pattern(q, k, v) [batch, heads, n, n]`` (rows normalised) is reduced as it
streams by, per layer / mixer / head, to

- ``eff_rank``: effective rank (Roy & Vetterli 2007), ``exp(H(p))`` with
  ``p_i = sigma_i / sum_j sigma_j`` the normalised singular values of ``A``;
- ``energy_rank``: the number of leading singular values holding ``energy`` (default 99%) of
  ``sum sigma_i^2``;
- ``row_entropy``: mean over query rows of ``-sum_j A_ij log A_ij`` (nats); 0 = each query reads
  one key, ``log(i + 1)`` = uniform over the causal prefix.

All three are averaged over the batch. A linear-attention map ``D^-1 (phi(Q) phi(K)^T)`` has rank
at most the feature dimension ``f`` when it is not masked (Katharopoulos et al. 2020; the
"low-rank bottleneck" of linear attention); the causal mask can raise the rank of the masked map,
so the bound is stated for bidirectional maps. Softmax maps are full rank and can be sharp
(low row entropy), which is what exact recall of many keys needs.

Architecture: :func:`attention_bottleneck` registers one forward pre-hook per mixer (the
mixer's input is enough to recompute ``q, k, v`` with its own projections), reduces the pattern
to per-head numbers inside the hook, and removes every hook in a ``finally`` block. Nothing but
those numbers is kept. :func:`relate_retrieval_error` correlates the per-model summaries with
retrieval error across a sweep's table.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import Tensor

from interp.errors import InputError

METRICS = ("eff_rank", "energy_rank", "row_entropy")


def singular_values(m: Tensor) -> Tensor:
    """``[..., r, c] -> [..., min(r, c)]`` singular values (descending), computed in float64."""
    # on the CPU: not every device has float64
    return torch.linalg.svdvals(m.detach().cpu().to(torch.float64))


def effective_rank(m: Tensor) -> Tensor:
    """Effective rank ``exp(H(sigma / sum sigma))`` of ``m [..., r, c]`` -> ``[...]``.

    Identity ``I_n`` gives ``n``, any rank-1 matrix gives 1, the zero matrix gives 0.
    """
    s = singular_values(m)
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp_min(torch.finfo(s.dtype).tiny)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    return torch.where(total.squeeze(-1) > 0, torch.exp(h), torch.zeros_like(h))


def energy_rank(m: Tensor, energy: float = 0.99) -> Tensor:
    """``[..., r, c] -> [...]`` (long): fewest leading singular values whose squares hold at least
    ``energy`` of ``sum sigma^2``. Identity ``I_n`` gives ``n`` for ``energy > (n-1)/n``."""
    if not 0 < energy <= 1:
        raise InputError(f"energy must be in (0, 1], got {energy!r}")
    s2 = singular_values(m) ** 2
    cum = s2.cumsum(-1)
    total = cum[..., -1:]
    need = energy * total * (1 - 1e-12)  # tolerate rounding in the cumulative sum
    count = (cum < need).sum(-1) + 1
    return torch.where(total.squeeze(-1) > 0, count, torch.zeros_like(count))


def row_entropy(a: Tensor) -> Tensor:
    """Mean row entropy (nats) of attention weights ``a [..., n_q, n_k]`` -> ``[...]``; zero
    entries contribute 0."""
    a = a.detach().cpu().to(torch.float64)
    h = -(a * torch.log(a.clamp_min(1e-300))).sum(-1)  # [..., n_q]
    return h.mean(-1)


@torch.no_grad()
def attention_bottleneck(
    model,
    inputs: Tensor,
    *,
    energy: float = 0.99,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Per layer / mixer / head bottleneck numbers of ``model`` on ``inputs [batch, seq]``.

    Args:
        model: a :class:`interp.retrieval.RetrievalModel` (anything with ``mixers()`` returning
            ``(layer, index, mixer)`` where ``mixer.qkv(x)`` gives ``q, k, v`` and
            ``mixer.impl.pattern`` the weights).
        inputs: ``LongTensor [batch, seq]`` (e.g. MQAR test inputs).
        energy: share of squared singular-value mass for ``energy_rank``.
        batch_size: rows per forward pass.

    Returns:
        DataFrame with one row per (layer, mixer, head): ``layer``, ``mixer`` (index within the
        layer), ``impl`` (the mixer's label), ``head``, ``eff_rank``, ``energy_rank``,
        ``row_entropy``, ``seq_len``, ``n_samples``. Mixers whose implementation has no
        ``pattern`` get NaN metrics.
    """
    if inputs.ndim != 2:
        raise InputError(f"inputs must be [batch, seq], got shape {tuple(inputs.shape)}")
    mixers = list(model.mixers())
    sums: dict[tuple[int, int], Tensor] = {}  # (layer, mixer) -> [3, heads] summed over batch
    missing: set[tuple[int, int]] = set()

    def make_hook(key, mixer):
        def hook(module, args):
            if key in missing:
                return
            q, k, v = mixer.qkv(args[0])  # [b, h, n, d_head]
            try:
                a = mixer.impl.pattern(q, k, v, causal=True)  # [b, h, n, n]
            except NotImplementedError:
                missing.add(key)
                return
            stats = torch.stack([effective_rank(a), energy_rank(a, energy).to(torch.float64),
                                 row_entropy(a)])  # [3, b, h]
            sums[key] = sums.get(key, 0) + stats.sum(1)
        return hook

    handles = []
    was_training = model.training
    try:
        for layer, idx, mixer in mixers:
            handles.append(mixer.register_forward_pre_hook(make_hook((layer, idx), mixer)))
        model.eval()
        for s in range(0, inputs.shape[0], batch_size):
            model(inputs[s:s + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    n = inputs.shape[0]
    rows = []
    for layer, idx, mixer in mixers:
        key = (layer, idx)
        for head in range(mixer.n_heads):
            row = {"layer": layer, "mixer": idx, "impl": mixer.spec.label(), "head": head}
            for j, name in enumerate(METRICS):
                row[name] = float(sums[key][j, head]) / n if key in sums else math.nan
            row.update(seq_len=inputs.shape[1], n_samples=n)
            rows.append(row)
    return pd.DataFrame(rows)


def summarize_bottleneck(df: pd.DataFrame) -> dict[str, float]:
    """One model's per-head table -> ``{eff_rank, energy_rank, row_entropy}`` means over all
    layers, mixers and heads (NaN rows skipped), plus ``min_row_entropy`` (the sharpest head,
    which is the one a recall circuit needs)."""
    out = {name: float(df[name].mean()) for name in METRICS}
    out["min_row_entropy"] = float(df["row_entropy"].min())
    return out


def relate_retrieval_error(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("eff_rank", "energy_rank", "row_entropy", "min_row_entropy",
                              "state_size"),
    *,
    accuracy: str = "accuracy",
    by: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Correlate retrieval error ``1 - accuracy`` with bottleneck metrics across models.

    Args:
        table: one row per trained model (e.g. the sweep table) with an ``accuracy`` column and
            the metric columns.
        metrics: columns to relate (missing ones are skipped).
        by: optional grouping columns (e.g. ``["num_kv_pairs"]``) to correlate within groups.

    Returns:
        DataFrame with one row per (group, metric): the group columns, ``metric``, ``n``
        (models with both values), ``pearson`` and ``spearman`` correlations with the error
        (NaN with fewer than 3 models or a constant column).
    """
    by = list(by or [])
    err = 1.0 - table[accuracy]
    groups = table.groupby(by) if by else [((), table)]
    rows = []
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            if metric not in sub.columns:
                continue
            pair = pd.DataFrame({"err": err.loc[sub.index], "x": sub[metric]}).dropna()
            ok = len(pair) >= 3 and pair["x"].nunique() > 1 and pair["err"].nunique() > 1
            rows.append({**dict(zip(by, key)), "metric": metric, "n": len(pair),
                         "pearson": pair["err"].corr(pair["x"]) if ok else math.nan,
                         # Spearman = Pearson of the ranks (no scipy needed)
                         "spearman": pair["err"].rank().corr(pair["x"].rank())
                         if ok else math.nan})
    return pd.DataFrame(rows)
