"""BigBird-style block-sparse softmax attention.

Layout
------
The sequence is cut into blocks of ``block_size`` tokens (``nb`` blocks, the last may be
short). Query block ``t`` attends key blocks

- local: ``t - local_blocks .. t + local_blocks`` (causal: ``t - local_blocks .. t``);
- global: the first ``global_blocks`` blocks; their own queries also attend every block;
- random: ``random_blocks`` further blocks drawn without replacement from the blocks not yet
  chosen (causal: only earlier ones), from a generator seeded by ``seed`` -- the layout is a
  deterministic function of ``(seed, nb, causal)``.

With ``causal=True`` the token-level rule ``j <= i`` applies on top (inside the diagonal block).

Computation and memory
----------------------
Block by block, never a dense ``[n, n]`` matrix: an index ``[nb, K]`` of the key blocks each
query block needs (``K = (2 local + 1) + global + random``, padded slots masked) gathers keys
into ``[nb, K * block_size, d]``; scores are ``[nb, block_size, K * block_size]``, i.e.
O(n K block_size) memory -- and without autograd only a segment of query blocks is held at a
time (the loop keeps each step's scores at about ``_SEGMENT_FLOATS``). Global query blocks are computed densely against all keys
(``[global_blocks * block_size, n]``). Float32 accumulation, result in ``q.dtype``.

On CUDA (float16/bfloat16/float32, head sizes >= 16) the same layout runs through
``flex_attention`` with a block mask built from ``flex_mask_mod`` (:mod:`interp.attention.gpu`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.attention import gpu
from interp.attention.base import (
    SparseAttention,
    check_qkv,
    compute_dtype,
    masked_softmax_attention,
)
from interp.attention.registry import IMPLEMENTATIONS
from interp.errors import InputError

#: scores computed per step of the query-block loop
_SEGMENT_FLOATS = 1 << 20


@IMPLEMENTATIONS.register("block_sparse")
class BlockSparseAttention(SparseAttention):
    """BigBird block-sparse attention (local + global + random blocks)."""

    def __init__(
        self,
        *,
        block_size: int = 64,
        local_blocks: int = 1,
        global_blocks: int = 1,
        random_blocks: int = 1,
        seed: int = 0,
        scale: float | None = None,
        d_head: int = 64,
    ) -> None:
        super().__init__(scale=scale, d_head=d_head)
        if not (isinstance(block_size, int) and block_size >= 1):
            raise InputError(f"block_size must be a positive int, got {block_size!r}")
        for opt, val in (("local_blocks", local_blocks), ("global_blocks", global_blocks),
                         ("random_blocks", random_blocks)):
            if not (isinstance(val, int) and val >= 0):
                raise InputError(f"{opt} must be a non-negative int, got {val!r}")
        self.block_size = block_size
        self.local_blocks = local_blocks
        self.global_blocks = global_blocks
        self.random_blocks = random_blocks
        self.seed = int(seed)
        self._layouts: dict[tuple[int, bool], list[list[int]]] = {}

    # -- layout --------------------------------------------------------------------------
    def layout(self, nb: int, causal: bool) -> list[list[int]]:
        """Key blocks (sorted) of each non-global query block; global query blocks get ``[]``
        (they attend everything). Deterministic in ``(seed, nb, causal)``."""
        key = (nb, causal)
        if key in self._layouts:
            return self._layouts[key]
        gen = torch.Generator().manual_seed(self.seed)
        n_glob = min(self.global_blocks, nb)
        rows: list[list[int]] = []
        for t in range(nb):
            if t < n_glob:
                rows.append([])
                continue
            hi = t if causal else min(nb - 1, t + self.local_blocks)
            chosen = set(range(max(0, t - self.local_blocks), hi + 1)) | set(range(n_glob))
            cands = [c for c in range(t if causal else nb) if c not in chosen]
            if cands and self.random_blocks:
                perm = torch.randperm(len(cands), generator=gen)[: self.random_blocks]
                chosen |= {cands[int(p)] for p in perm}
            rows.append(sorted(chosen))
        self._layouts[key] = rows
        return rows

    def block_mask(self, nb: int, causal: bool) -> Tensor:
        """``[nb, nb]`` bool: query block attends key block (before the token-level causal rule)."""
        m = torch.zeros(nb, nb, dtype=torch.bool)
        for t, row in enumerate(self.layout(nb, causal)):
            if t < min(self.global_blocks, nb):
                m[t] = True
            else:
                m[t, row] = True
        return m

    # -- forward -------------------------------------------------------------------------
    def _forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
        if gpu.use_flex(q, v):  # CUDA: flex_attention block mask (interp.attention.gpu)
            return gpu.flex_forward(self, q, k, v, causal)
        b, h, hk, n, d = check_qkv(q, k, v)
        g, dv, bs = h // hk, v.shape[-1], self.block_size
        ct, dev = compute_dtype(q.dtype), q.device
        scale = self.get_scale(d)
        nb = -(-n // bs)
        pad = nb * bs - n
        rows = self.layout(nb, causal)
        kmax = max(1, max(len(r) for r in rows))
        idx = torch.zeros(nb, kmax, dtype=torch.long)
        slot_ok = torch.zeros(nb, kmax, dtype=torch.bool)
        for t, row in enumerate(rows):
            idx[t, : len(row)] = torch.tensor(row, dtype=torch.long)
            slot_ok[t, : len(row)] = True
        idx, slot_ok = idx.to(dev), slot_ok.to(dev)

        qf, kf, vf = q.to(ct), k.to(ct), v.to(ct)
        qg = qf.reshape(b, hk, g, n, d)
        qg = F.pad(qg, (0, 0, 0, pad)) if pad else qg
        qb = qg.reshape(b, hk, g, nb, bs, d).transpose(2, 3).reshape(b, hk, nb, g * bs, d)
        kb = (F.pad(kf, (0, 0, 0, pad)) if pad else kf).view(b, hk, nb, bs, d)
        vb = (F.pad(vf, (0, 0, 0, pad)) if pad else vf).view(b, hk, nb, bs, dv)

        kpos = (idx[:, :, None] * bs + torch.arange(bs, device=dev)).reshape(nb, kmax * bs)
        qpos = torch.arange(nb * bs, device=dev).view(nb, bs)
        ok = slot_ok[:, :, None].expand(nb, kmax, bs).reshape(nb, kmax * bs) & (kpos < n)
        ok = ok[:, None, :].expand(nb, bs, kmax * bs)
        if causal:
            ok = ok & (kpos[:, None, :] <= qpos[:, :, None])  # [nb, bs, K*bs]
        blocked = ~ok[:, None]  # [nb, 1, bs, K*bs]
        neg = torch.finfo(ct).min  # finite: a real row always sees its own block's diagonal

        # query blocks in segments; each gathers only the key blocks it needs
        per = max(1, _SEGMENT_FLOATS // (b * h * bs * kmax * bs))
        outs = []
        for t0 in range(0, nb, per):
            t1 = min(nb, t0 + per)
            m = t1 - t0
            kg = kb[:, :, idx[t0:t1]].reshape(b, hk, m, kmax * bs, d)  # gathered key blocks
            vg = vb[:, :, idx[t0:t1]].reshape(b, hk, m, kmax * bs, dv)
            sc = torch.matmul(qb[:, :, t0:t1] * scale, kg.transpose(-1, -2))  # [b, hk, m, g*bs, K*bs]
            sc = sc.view(b, hk, m, g, bs, kmax * bs).masked_fill_(blocked[t0:t1], neg)
            p = torch.softmax(sc, dim=-1).view(b, hk, m, g * bs, kmax * bs)
            outs.append(torch.matmul(p, vg))  # [b, hk, m, g*bs, dv]
        out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        out = out.view(b, hk, nb, g, bs, dv).transpose(2, 3).reshape(b, h, nb * bs, dv)[:, :, :n]

        n_gq = min(self.global_blocks * bs, n)
        if n_gq:  # global query blocks attend every key: [b, h, n_gq, n]
            gq = torch.arange(n_gq, device=dev)
            j = torch.arange(n, device=dev)[None, :]
            mask = (j <= gq[:, None]) if causal else torch.ones(n_gq, n, dtype=torch.bool, device=dev)
            rows_out, _ = masked_softmax_attention(qf[:, :, :n_gq], kf, vf, mask, scale)
            out = out.index_copy(2, gq, rows_out)
        return out.to(q.dtype)

    # -- references ----------------------------------------------------------------------
    def allowed_mask(self, n: int, causal: bool = True, device=None) -> Tensor:
        nb = -(-n // self.block_size)
        blk = torch.arange(n) // self.block_size
        allowed = self.block_mask(nb, causal)[blk][:, blk].to(device)  # [n, n]
        if causal:
            allowed &= torch.ones(n, n, dtype=torch.bool, device=device).tril()
        return allowed

    def flex_mask_mod(self, n: int, causal: bool = True, device=None):
        bs = self.block_size
        layout = self.block_mask(-(-n // bs), causal).to(device)  # [nb, nb], same seed

        def mask_mod(b, h, q_idx, kv_idx):
            allowed = layout[q_idx // bs, kv_idx // bs]
            return allowed & (kv_idx <= q_idx) if causal else allowed

        return mask_mod

    def state_size(self, seq_len: int, *, d_head: int | None = None) -> int:
        """Keys/values a causal decoder reads per token: ``(local + 1 + global + random)``
        blocks, capped at ``seq_len``."""
        n, d = self._state_args(seq_len, d_head)
        blocks = self.local_blocks + 1 + self.global_blocks + self.random_blocks
        return 2 * d * min(n, blocks * self.block_size)
