"""Ring attention inside a real model, and a sink probe over a sequence no process holds whole.

Architecture
------------
:class:`RingAttention` is an :class:`~interp.attention.AttentionImpl` whose forward is
:func:`~interp.distributed.ring.ring_attention` over a process group, so
``interp.swap_attention(model, RingAttention(group))`` makes every layer of a model attend
across ranks. Each rank runs the model on its contiguous shard of the tokens with
``position_ids`` set to the shard's *global* positions (RoPE is applied per rank before the
keys travel), so the result equals the single-process forward.

The sink probe needs attention weights, which ring attention never materialises. It gets
them exactly with a second ring pass per layer whose values are one-hot indicators of the
probed key positions: ``out_i = sum_j A[i, j] e_{p(j)}`` is the attention query ``i`` pays to
each probed key. Summed over local queries and all-reduced, that is the per-head
``alpha(k) = (1 / (T - k)) sum_{i >= k} A[i, k]`` of :mod:`interp.probes.sink`.

Only models whose attention honours ``position_ids`` can be sharded this way (HF Llama-family
models such as smollm2-135m); toy models' positional embeddings ignore them.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch
import torch.distributed as dist

from interp.attention.base import AttentionImpl, masked_softmax_attention
from interp.distributed.layout import group_rank_and_size, local_len_for, shard_sequence
from interp.distributed.ring import ring_attention
from interp.errors import InputError


class RingAttention(AttentionImpl):
    """Softmax attention across the ranks of ``group`` (contiguous shards of equal length).

    Options:
        group: process group (None = the default group; no group = plain local attention).
        total_len: true sequence length when the last shard is zero-padded.
        mass_positions: global key positions whose received attention to record on every
            call (``self.records``: one ``[heads, len(mass_positions)]`` tensor per call: the
            sum over this rank's real queries ``i >= k`` of ``A[i, k]``).
    """

    quadratic = True

    def __init__(self, *, group=None, total_len: int | None = None,
                 mass_positions: Sequence[int] = (), scale: float | None = None,
                 d_head: int = 64) -> None:
        super().__init__(scale=scale, d_head=d_head)
        self.name = "ring"
        self.group = group
        self.total_len = total_len
        self.mass_positions = tuple(int(p) for p in mass_positions)
        self.records: list[torch.Tensor] = []

    def _forward(self, q, k, v, causal):
        scale = self.get_scale(q.shape[-1])
        out = ring_attention(q, k, v, causal=causal, group=self.group, scale=scale,
                             total_len=self.total_len)
        if self.mass_positions:
            self.records.append(self._key_mass(q, k, causal, scale))
        return out

    @torch.no_grad()
    def _key_mass(self, q, k, causal, scale) -> torch.Tensor:
        b, _, n_local, _ = q.shape
        rank, world = group_rank_and_size(self.group)
        pos = torch.arange(n_local, device=q.device) + rank * n_local        # global positions
        total = self.total_len or world * n_local
        onehot = torch.zeros(b, k.shape[1], n_local, len(self.mass_positions), device=q.device,
                             dtype=torch.float32)
        for c, p in enumerate(self.mass_positions):
            onehot[:, :, :, c] = (pos == p).float()
        # the fused CPU kernel needs d_v == d_head; the explicit block kernel takes any d_v
        mass = ring_attention(q.float(), k.float(), onehot, causal=causal, group=self.group,
                              scale=scale, total_len=self.total_len,
                              block_impl="explicit")                           # [b, h, n, P]
        real = pos < total
        out = []
        for c, p in enumerate(self.mass_positions):
            keep = (real & (pos >= p)).float()                                 # queries i >= k
            out.append((mass[..., c] * keep).sum(dim=(0, 2)))                  # [h]
        return torch.stack(out, dim=-1)                                       # [h, P]

    def naive(self, q, k, v, causal=True):
        n = q.shape[2]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device)
        if causal:
            mask = mask.tril()
        return masked_softmax_attention(q, k, v, mask, self.get_scale(q.shape[-1]))[0].to(q.dtype)

    def state_size(self, seq_len: int, *, d_head: int | None = None) -> int:
        n, d = self._state_args(seq_len, d_head)
        _, world = group_rank_and_size(self.group)
        return 2 * d * -(-n // world)                      # this rank's share of the KV cache


@torch.no_grad()
def sharded_forward(model, tokens: torch.Tensor, group=None,
                    mass_positions: Sequence[int] = ()) -> tuple[torch.Tensor, RingAttention]:
    """Run ``model`` on this rank's contiguous shard of ``tokens`` ``[batch, T]`` with ring
    attention in every layer. Returns ``(local logits [batch, local_T, vocab], impl)``; pass
    ``mass_positions`` to record attention to those keys in ``impl.records``."""
    from interp.swap import swap_attention

    rank, world = group_rank_and_size(group)
    total = tokens.shape[1]
    local = shard_sequence(tokens, 1, rank, world, "contiguous")
    n_local = local_len_for(total, world, "contiguous")
    positions = (torch.arange(n_local) + rank * n_local)[None].expand(tokens.shape[0], -1)
    impl = RingAttention(group=group, total_len=total, mass_positions=mass_positions,
                         d_head=model.cfg.d_head)
    with swap_attention(model, impl):
        logits = model(local.to(next(model.parameters()).device),
                       position_ids=positions.to(next(model.parameters()).device))
    return logits, impl


def sharded_sink_mass(model, tokens: torch.Tensor, positions: Sequence[int] = (0,),
                      group=None) -> pd.DataFrame:
    """``alpha(k)`` per (layer, head, position) for ``tokens`` ``[batch, T]`` sharded over the
    ranks of ``group`` (every rank passes the same ``tokens`` and gets the same table).

    Same definition as :func:`interp.probes.sink.sink_scores` ``alpha``: the mean over the
    batch and over queries ``i >= k`` of ``A[i, k]``.
    """
    positions = [int(p) for p in positions]
    total = tokens.shape[1]
    if not all(0 <= p < total for p in positions):
        raise InputError(f"positions must lie in [0, {total})")
    _, impl = sharded_forward(model, tokens, group, mass_positions=positions)
    sums = torch.stack(impl.records)                                   # [layers, heads, P]
    if dist.is_available() and dist.is_initialized() and group_rank_and_size(group)[1] > 1:
        dist.all_reduce(sums, group=group)
    sums = sums.cpu()                                 # all-reduced on the device (NCCL: CUDA)
    counts = torch.tensor([(total - p) * tokens.shape[0] for p in positions], dtype=sums.dtype)
    alpha = sums / counts
    rows = [{"layer": layer, "head": h, "position": p, "alpha": alpha[layer, h, c].item()}
            for layer in range(alpha.shape[0]) for h in range(alpha.shape[1])
            for c, p in enumerate(positions)]
    return pd.DataFrame(rows)
