"""Worker functions for tests/distributed/test_model.py (module-level for pickling)."""
from __future__ import annotations

import torch

import interp
from interp.distributed.layout import gather_sequence
from interp.distributed.model import sharded_forward, sharded_sink_mass


def sink_and_logits(rank: int, world_size: int, tokens: torch.Tensor, positions):
    model = interp.load_model("smollm2-135m")
    table = sharded_sink_mass(model, tokens, positions)
    logits, _ = sharded_forward(model, tokens)
    full = gather_sequence(logits, 1, layout="contiguous", total_len=tokens.shape[1])
    return table, full if rank == 0 else None
