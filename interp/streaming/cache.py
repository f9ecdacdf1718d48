"""A StreamingLLM key/value cache: attention-sink slots + a ring buffer of recent tokens.

Architecture
------------
Pure tensor bookkeeping (no model code). For ``n_layers`` layers and ``batch`` independent
streams it holds un-rotated keys and values::

    k, v: [n_layers, batch, kv_heads, capacity, d_head]

Slots ``[0, n_sink)`` keep the first ``n_sink`` tokens of the stream for ever (the attention
sinks); slots ``[n_sink, capacity)`` are a ring buffer of the ``window = capacity - n_sink``
most recent tokens. ``n_sink`` may differ per stream (e.g. 0 for a window-only baseline and 4
for StreamingLLM, sharing one capacity so both can be decoded in one batch).

Positions are assigned inside the cache (Xiao et al. 2023, sec. 3.2): a key's RoPE position
is its rank in the cache, not its position in the stream. Sinks sit at ``0..n_sink-1``; the
ring entries at ``n_sink..`` in age order, the newest token (the current query) last, at
``min(t, capacity - 1)``. Because positions change as tokens are evicted, keys are stored
*before* RoPE and rotated at read time by their current cache position
(:meth:`positions`). While the stream is shorter than the capacity nothing is evicted and
every cache position equals the stream position, so the cache is exactly dense attention.

Ring arithmetic (stream index ``t`` of the newest token, ``S = n_sink``, ``W = capacity - S``):
token ``t >= capacity`` is written to slot ``S + (t - S) mod W`` (overwriting token
``t - W``, the oldest non-sink); ring slot ``j`` then holds a token of age
``a = (t - j) mod W`` at cache position ``capacity - 1 - a``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from interp.errors import InputError


class StreamingKVCache:
    """Sink + ring-buffer KV cache for ``batch`` streams (see the module docstring).

    Args:
        n_layers, n_kv_heads, head_dim: model geometry.
        capacity: most tokens kept per stream (sinks + window). A capacity at least as long
            as the stream gives dense attention.
        n_sink: initial tokens kept for ever, one int for all streams or one per stream;
            ``0 <= n_sink < capacity``.
        batch: number of independent streams (default ``len(n_sink)`` or 1).
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, capacity: int,
                 n_sink: int | Sequence[int] = 0, batch: int | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        sinks = [n_sink] if isinstance(n_sink, int) else list(n_sink)
        if batch is None:
            batch = len(sinks)
        if len(sinks) == 1:
            sinks = sinks * batch
        if len(sinks) != batch:
            raise InputError(f"n_sink has {len(sinks)} entries for a batch of {batch}")
        if not (isinstance(capacity, int) and capacity >= 1):
            raise InputError(f"capacity must be a positive int, got {capacity!r}")
        for s in sinks:
            if not (isinstance(s, int) and 0 <= s < capacity):
                raise InputError(f"n_sink must be ints in [0, capacity={capacity}), got {sinks}")
        self.capacity = capacity
        self.batch = batch
        self.n_layers = n_layers
        self.device = torch.device(device)
        self.n_sink = torch.tensor(sinks, dtype=torch.long, device=self.device)    # [batch]
        self.window = capacity - self.n_sink                                        # [batch]
        shape = (n_layers, batch, n_kv_heads, capacity, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=self.device)   # un-rotated keys
        self.v = torch.zeros(shape, dtype=dtype, device=self.device)
        self.n_seen = 0                    # tokens appended so far (every stream alike)
        self._slots = torch.arange(capacity, device=self.device)
        self._rows = torch.arange(batch, device=self.device)

    # ------------------------------------------------------------------ bookkeeping

    @property
    def length(self) -> int:
        """Tokens currently held per stream."""
        return min(self.n_seen, self.capacity)

    def evicting(self, n_new: int) -> bool:
        """Whether appending ``n_new`` tokens would evict any token."""
        return self.n_seen + n_new > self.capacity

    def write_slots(self, n_new: int) -> Tensor:
        """Slots ``[batch, n_new]`` the next ``n_new`` tokens go to. Several tokens at once are
        allowed only while nothing is evicted (then every stream uses slots ``t0..t0+n-1``)."""
        t0 = self.n_seen
        if n_new < 1:
            raise InputError("append at least one token")
        if n_new > 1 and self.evicting(n_new):
            raise InputError(f"cannot append {n_new} tokens at once to a cache holding "
                             f"{self.length} of {self.capacity}: that would evict inside the "
                             f"chunk; fill up to the capacity, then append one token at a time")
        if t0 < self.capacity:
            return torch.arange(t0, t0 + n_new, device=self.device).expand(self.batch, n_new)
        slot = self.n_sink + (t0 - self.n_sink) % self.window                       # [batch]
        return slot[:, None]

    def positions(self, n_total: int | None = None) -> Tensor:
        """Cache position of every held slot, ``[batch, min(n_total, capacity)]``, once
        ``n_total`` tokens (default: those appended so far) have been appended: sinks
        ``0..S-1``, ring entries by age, the newest at ``capacity - 1`` once full."""
        n_total = self.n_seen if n_total is None else n_total
        if n_total <= self.capacity:
            return self._slots[:n_total].expand(self.batch, -1)
        t = n_total - 1                                          # stream index of the newest
        j = self._slots[None, :]                                                # [1, cap]
        s = self.n_sink[:, None]
        age = (t - j) % self.window[:, None]                                    # [batch, cap]
        return torch.where(j < s, j, self.capacity - 1 - age)

    def query_positions(self, n_new: int) -> Tensor:
        """Cache positions ``[batch, n_new]`` of the tokens about to be appended."""
        t0 = self.n_seen
        if t0 + n_new <= self.capacity:
            return torch.arange(t0, t0 + n_new, device=self.device).expand(self.batch, n_new)
        return torch.full((self.batch, 1), self.capacity - 1, device=self.device)

    # ------------------------------------------------------------------ storage

    def write(self, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> None:
        """Store un-rotated ``k``/``v`` ``[batch, kv_heads, n_new, d_head]`` of ``layer`` at
        ``slots`` (from :meth:`write_slots`)."""
        n = k.shape[2]
        if n > 1 or bool((slots[:, 0] == slots[0, 0]).all()):
            s0 = int(slots[0, 0])
            self.k[layer, :, :, s0:s0 + n] = k
            self.v[layer, :, :, s0:s0 + n] = v
        else:                                            # one token, a different slot per row
            self.k[layer, self._rows, :, slots[:, 0]] = k[:, :, 0]
            self.v[layer, self._rows, :, slots[:, 0]] = v[:, :, 0]

    def advance(self, n_new: int) -> None:
        """Record that ``n_new`` tokens were appended (after every layer wrote them)."""
        self.n_seen += n_new

    def keys(self, layer: int, length: int) -> Tensor:
        """Un-rotated keys ``[batch, kv_heads, length, d_head]`` of the first ``length`` slots."""
        return self.k[layer, :, :, :length]

    def values(self, layer: int, length: int) -> Tensor:
        return self.v[layer, :, :, :length]

    def reset(self) -> None:
        self.n_seen = 0

    def truncate(self, n: int) -> None:
        """Forget every token after the first ``n`` (only before anything was evicted:
        afterwards the overwritten slots are gone)."""
        if self.n_seen > self.capacity:
            raise InputError("cannot truncate a cache that has evicted tokens")
        if not 0 <= n <= self.n_seen:
            raise InputError(f"truncate to {n}: the cache holds {self.n_seen} tokens")
        self.n_seen = n

    def state_size(self) -> int:
        """Numbers held per stream (keys and values of every layer): the cache's memory."""
        return 2 * self.n_layers * self.k.shape[2] * self.capacity * self.k.shape[4]
