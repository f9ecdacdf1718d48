"""Point-to-point ring communication on torch.distributed (gloo on CPU, NCCL on CUDA).

Architecture
------------
:class:`RingComm` knows a rank's neighbours in a process group: it sends to ``rank + 1`` and
receives from ``rank - 1`` (mod ``world_size``). :meth:`RingComm.exchange` posts the sends and
receives of a list of tensors at once with ``dist.batch_isend_irecv`` and returns a
:class:`PendingExchange` immediately, so the caller can compute on the current block while the
next block is in flight; :meth:`PendingExchange.wait` then returns the received tensors (fresh
buffers shaped like the sent ones). The code is device-agnostic: the backend of the process
group decides how tensors travel; :func:`default_backend` picks one from a device.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def default_backend(device: torch.device | str) -> str:
    """``"nccl"`` for CUDA devices when available, else ``"gloo"``."""
    device = torch.device(device)
    if device.type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


class PendingExchange:
    """Sends/receives in flight; :meth:`wait` returns the received tensors."""

    def __init__(self, requests: list, sent: list[torch.Tensor], received: list[torch.Tensor]):
        self._requests = requests
        self._sent = sent  # keep the send buffers alive until the sends complete
        self._received = received

    def wait(self) -> list[torch.Tensor]:
        for req in self._requests:
            req.wait()
        self._requests, self._sent = [], []
        return self._received


class RingComm:
    """Neighbours of this rank in ``group`` (default: the world group)."""

    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group if group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)
        self.next_rank = dist.get_global_rank(self.group, (self.rank + 1) % self.world_size)
        self.prev_rank = dist.get_global_rank(self.group, (self.rank - 1) % self.world_size)

    def exchange(self, tensors: list[torch.Tensor]) -> PendingExchange:
        """Send ``tensors`` to the next rank and receive same-shaped ones from the previous rank."""
        tensors = [t.contiguous() for t in tensors]
        received = [torch.empty_like(t) for t in tensors]
        ops = [dist.P2POp(dist.isend, t, self.next_rank, self.group) for t in tensors]
        ops += [dist.P2POp(dist.irecv, r, self.prev_rank, self.group) for r in received]
        return PendingExchange(dist.batch_isend_irecv(ops), tensors, received)
